"""NesT: Nested Hierarchical Transformer (Zhang et al., AAAI 2022; docs/models.md).

patch embed → blockify (B, T, N, C) → for each level: + the level's position embedding (1, T, N, C),
transformer layers with attention inside each block → block aggregation between levels (2×2 blocks
→ 1) → after the top level (T = 1): LayerNorm → mean over tokens → Dense head.

Level 0 is the bottom of the hierarchy (most blocks, narrowest); the last level is the top (one
block). The hierarchy is a 4-ary tree: block t of level l+1 aggregates blocks of level l that lie
in its 2×2 neighbourhood (up to the pool's 3×3 overlap).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from nest_jax.models import layers as L
from nest_jax.models.blocks import POOL_PADDINGS, BlockAggregation, blockify, check_levels, deblockify
from nest_jax.models.intermediates import Capture, Model, finish, maybe_recorder
from nest_jax.models.registry import register_model

Array = jax.Array
ATTENTIONS = ("multi_head", "multi_query")


def trunc_normal_official(stddev: float = 0.02):
    """The official NesT init: a standard normal cut at ±2, THEN scaled by `stddev`.

    Its actual std is ≈ 0.88·stddev (0.0176 for 0.02). flax's `nnx.initializers.truncated_normal`
    rescales so the std is exactly `stddev`, which is not what the official checkpoints started from.
    """

    def init(key, shape, dtype=jnp.float32):
        return jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype) * jnp.asarray(stddev, dtype)

    return init


def _square(size: int | Sequence[int]) -> int:
    h, w = L.to_hw(size)
    if h != w:
        raise ValueError(f"NesT needs a square image (its top level is one square block), got {h}×{w}")
    return h


@dataclasses.dataclass(frozen=True)
class NestConfig:
    """Every choice of a NesT. `levels` and the block grids are derived from img/patch/block sizes.

    `dims`, `depths`, `heads` have one entry per level, bottom level first.
    """

    img_size: int | tuple[int, int] = 224
    patch_size: int = 4
    in_chans: int = 3
    num_classes: int = 1000
    block_size: int = 14  # edge of a block in tokens (the official code calls it "patch_size")
    dims: tuple[int, ...] = (96, 192, 384)
    depths: tuple[int, ...] = (2, 2, 8)
    heads: tuple[int, ...] = (3, 6, 12)
    mlp_ratio: float = 4.0
    attention: str = "multi_head"  # or "multi_query": per-head queries, one shared K/V head
    gelu: str = "tanh"  # official; "exact" for weights trained in PyTorch (timm)
    pool_padding: str = "tf_same"  # official / timm `_jx`; "symmetric": timm's plain `nest_*`
    drop_path_rate: float = 0.0
    drop_rate: float = 0.0  # dropout after the attention projection and in the MLP (official proj_drop)
    attn_drop_rate: float = 0.0
    skip_removed: tuple[int, ...] = ()  # global layer indices trained without residuals (ablation)
    dtype: Any = None
    param_dtype: Any = jnp.float32
    attn_impl: str = "auto"  # attention kernel: "auto" | "cudnn" | "xla" | "explicit" (checked by layers.Attention)

    def __post_init__(self):
        check_levels(self)
        object.__setattr__(self, "skip_removed", tuple(int(i) for i in self.skip_removed))
        if any(not 0 <= i < sum(self.depths) for i in self.skip_removed):
            raise ValueError(f"skip_removed {self.skip_removed} must be layer indices in [0, {sum(self.depths)})")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if self.pool_padding not in POOL_PADDINGS:
            raise ValueError(f"pool_padding must be one of {POOL_PADDINGS}, got {self.pool_padding!r}")
        size, p, b, n = _square(self.img_size), self.patch_size, self.block_size, len(self.depths)
        side = size // p if size % p == 0 else 0
        ratio = side // b if side and side % b == 0 else 0
        if not ratio or ratio != 2 ** (n - 1):
            unit = p * 2 ** (n - 1)
            near = [unit * k for k in range(max(1, size // unit - 3), size // unit + 4)]
            raise ValueError(
                f"img_size {size} does not fit {n} levels with patch_size {p} and block_size {b}: the patch grid "
                f"must be block_size·2^(levels-1) tokens wide. Sizes that work: {p * b * 2 ** (n - 1)} with "
                f"block_size={b}; or any multiple of {unit} with block_size = img_size/{unit} "
                f"(e.g. {', '.join(map(str, near))})."
            )

    @property
    def levels(self) -> int:
        return len(self.depths)

    @property
    def tokens_per_block(self) -> int:
        return self.block_size**2

    @property
    def blocks_per_level(self) -> tuple[tuple[int, int], ...]:
        """Grid of blocks (rows, cols) of each level, bottom first: e.g. ((4, 4), (2, 2), (1, 1))."""
        return tuple((2 ** (self.levels - 1 - i),) * 2 for i in range(self.levels))

    @property
    def feature_sizes(self) -> tuple[tuple[int, int], ...]:
        """(H_l, W_l) of each level's token map, bottom first: e.g. ((56, 56), (28, 28), (14, 14))."""
        return tuple((g * self.block_size, w * self.block_size) for g, w in self.blocks_per_level)


class NestLevel(nnx.Module):
    """One level: [block aggregation] → blockify → + pos_embed → transformer layers → deblockify.

    x: (B, H_{l-1}, W_{l-1}, C_{l-1}) (or the patch map for level 0) -> (B, H_l, W_l, C_l)
    """

    def __init__(self, c: NestConfig, index: int, *, rngs: nnx.Rngs):
        kw = dict(dtype=c.dtype, param_dtype=c.param_dtype, rngs=rngs)
        init = trunc_normal_official(0.02)
        dim = c.dims[index]
        self.grid = c.blocks_per_level[index]
        self.block_size = c.block_size
        t = self.grid[0] * self.grid[1]
        self.pos_embed = L.param(rngs, init, (1, t, c.tokens_per_block, dim), c.param_dtype, None, None, None, "embed")
        self.pool = (
            BlockAggregation(c.dims[index - 1], dim, padding=c.pool_padding, kernel_init=init, **kw)
            if index > 0
            else None
        )
        opts = dict(drop=c.drop_rate, attn_drop=c.attn_drop_rate, act=c.gelu, kernel_init=init, attn_impl=c.attn_impl)
        first = sum(c.depths[:index])  # layers and stochastic depth rates are numbered across levels
        rates = L.drop_path_rates(c.drop_path_rate, sum(c.depths))[first : first + c.depths[index]]
        skips = dict(skip_removed=c.skip_removed, first=first)
        kv_heads = 1 if c.attention == "multi_query" else None
        self.layers = L.transformer_stack(
            rates, dim, c.heads[index], int(dim * c.mlp_ratio), num_kv_heads=kv_heads, **skips, **opts, **kw
        )

    def __call__(self, x: Array, *, train: bool = False, rec=None) -> Array:
        if self.pool is not None:
            x = self.pool(x)
        x = blockify(x, self.block_size)
        x = x + self.pos_embed[...].astype(x.dtype)
        for layer in self.layers:
            x = layer(x, train=train, rec=rec)
        return deblockify(x, self.grid)


class Nest(Model):
    """x: (B, H, W, C) image -> logits (B, classes) (or pre-logits (B, C_top) when num_classes=0).

    `__call__(x, *, train=None, capture=None, taps=None)` (contract and modes:
    `nest_jax.models.intermediates`):
      capture: see `nest_jax.models.intermediates`; `features[l]` is level l's output map
        (B, H_l, W_l, C_l) after its transformer layers (and after its tap), bottom level first.
      taps: optional list, one array per level shaped like `features[l]`, added to each level's
        output map before the next aggregation / the final norm. Zeros change nothing; the gradient
        of a logit w.r.t. the taps is ∂logit/∂feature-map (GradCAT, Grad-CAM).
    """

    def __init__(self, config: NestConfig, *, rngs: nnx.Rngs):
        self.config = c = config
        kw = dict(dtype=c.dtype, param_dtype=c.param_dtype, rngs=rngs)
        init = trunc_normal_official(0.02)
        self.patch_embed = L.PatchEmbed(c.in_chans, c.dims[0], c.patch_size, kernel_init=init, **kw)
        self.levels = nnx.List([NestLevel(c, i, rngs=rngs) for i in range(c.levels)])
        self.norm = L.layer_norm(c.dims[-1], **kw)
        self.head = L.classifier(c.dims[-1], c.num_classes, init, **kw)

    def __call__(
        self, x: Array, *, train: bool | None = None, capture: Capture = None, taps: Sequence[Array] | None = None
    ):
        c = self.config
        train = self.training(train)
        size = _square(c.img_size)
        if tuple(x.shape[1:3]) != (size, size):
            raise ValueError(
                f"input is {tuple(x.shape[1:3])} px but the model was built for {size}; create it "
                "with img_size=… or resize the position embeddings (nest_jax.convert.nest)."
            )
        if taps is not None and len(taps) != c.levels:
            raise ValueError(f"taps needs one array per level ({c.levels}), got {len(taps)}")
        rec = maybe_recorder(capture)
        x = self.patch_embed(x)
        for i, level in enumerate(self.levels):
            x = level(x, train=train, rec=rec)
            if taps is not None:
                x = x + taps[i].astype(x.dtype)
            if rec is not None:
                rec.append("features", x)
        x = self.norm(x).mean(axis=(1, 2))
        if rec is not None:
            rec.set("pre_logits", x)
        return finish(x if self.head is None else self.head(x), rec)


# ---------------------------------------------------------------------------------------------
# Variants (Zhang et al. 2022, Table A1, hierarchy bottom-up; docs/models.md). name: (img, patch, block, dims, depths, heads, extra defaults)
_IMAGENET = dict(img=224, patch=4, block=14)
_CIFAR = dict(img=32, patch=1, block=4, attention="multi_query")
NEST_VARIANTS = {
    "nest_tiny": dict(_IMAGENET, dims=(96, 192, 384), depths=(2, 2, 8), heads=(3, 6, 12), drop_path_rate=0.2),
    "nest_small": dict(_IMAGENET, dims=(96, 192, 384), depths=(2, 2, 20), heads=(3, 6, 12), drop_path_rate=0.3),
    "nest_base": dict(_IMAGENET, dims=(128, 256, 512), depths=(2, 2, 20), heads=(4, 8, 16), drop_path_rate=0.5),
    "nest_tiny_cifar": dict(_CIFAR, dims=(192,) * 4, depths=(3,) * 4, heads=(3,) * 4, drop_path_rate=0.1),
    "nest_small_cifar": dict(_CIFAR, dims=(384,) * 4, depths=(3,) * 4, heads=(6,) * 4, drop_path_rate=0.1),
    "nest_base_cifar": dict(_CIFAR, dims=(768,) * 4, depths=(3,) * 4, heads=(12,) * 4, drop_path_rate=0.1),
}


def _register(name: str) -> None:
    def builder(*, num_classes: int = 1000, img_size=None, rngs: nnx.Rngs, **overrides) -> Nest:
        # At another image size the block count stays and the blocks grow (official). `img_size=None`
        # (what `create_model` passes when the caller gives none) is the variant's own size: 224 for
        # the ImageNet variants, 32 for the CIFAR ones.
        spec = dict(NEST_VARIANTS[name])
        default_img, patch, block = spec.pop("img"), spec.pop("patch"), spec.pop("block")
        img_size = default_img if img_size is None else img_size
        fields = {**spec, "patch_size": patch, "block_size": block, **overrides}
        unit = fields["patch_size"] * 2 ** (len(fields["depths"]) - 1)
        side = _square(img_size)
        if "block_size" not in overrides and side != default_img and side % unit == 0:
            fields["block_size"] = side // unit
        return Nest(NestConfig(img_size=img_size, num_classes=num_classes, **fields), rngs=rngs)

    s = NEST_VARIANTS[name]
    grid = f"block {s['block']}×{s['block']}, dims {s['dims']}, depths {s['depths']}, heads {s['heads']}"
    register_model(builder, name=name, doc=f"{name}: {s['img']} px, patch {s['patch']}, {grid}.")


for _name in NEST_VARIANTS:
    _register(_name)
