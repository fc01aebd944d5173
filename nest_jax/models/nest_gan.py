"""NesT generator ("transposed NesT", Zhang et al. 2022, AAAI, §"generative modeling").

latent z → Dense to the top level (a few blocks of b×b tokens) → for each level, top first:
+ the level's position embedding (1, T, N, C) → transformer layers with attention inside each block
→ **block de-aggregation** (each block becomes 2×2 child blocks; depth-to-space ×2 by default,
Shi et al. 2016) → … → LayerNorm → per-token Dense to p·p·channels → depth-to-space ×p → tanh.

Level 0 here is the TOP of the hierarchy (generation order: fewest blocks first); a classifier NesT
numbers its levels bottom first. The block edge b stays fixed, so the block grid doubles per level
and the block tree is the classifier's 4-ary tree read downwards. No official code exists for this
part of the paper: the widths, depths and the de-aggregation's channel projection are our choices.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from nest_jax.models import layers as L
from nest_jax.models.blocks import blockify, check_levels, deblockify
from nest_jax.models.intermediates import Capture, Model, finish, maybe_recorder
from nest_jax.models.registry import register_variant

Array = jax.Array
DEAGGREGATIONS = ("pixel_shuffle", "nearest_conv", "transposed_conv")


def depth_to_space(x: Array, r: int = 2) -> Array:
    """Pixel shuffle (Shi et al. 2016). x: (B, H, W, r·r·C) -> (B, r·H, r·W, C).

    Channel index (i·r + j)·C + c goes to sub-pixel (i, j), channel c: TensorFlow's
    `depth_to_space` order ("DCR"). PyTorch's `pixel_shuffle` takes channel c·r² + i·r + j instead;
    the two differ by a fixed permutation of the (learned) input channels.
    """
    b, h, w, d = x.shape
    if d % (r * r):
        raise ValueError(f"depth_to_space ×{r} needs channels divisible by {r * r}, got {d}")
    return deblockify(x.reshape(b, h * w, r * r, d // (r * r)), (h, w))  # each pixel's channels: one r×r block


def upsample_nearest(x: Array, r: int = 2) -> Array:
    """Nearest-neighbour upsampling ×r. x: (B, H, W, C) -> (B, r·H, r·W, C)."""
    return jnp.repeat(jnp.repeat(x, r, axis=1), r, axis=2)


def space_to_depth(x: Array, r: int = 2) -> Array:
    """The exact inverse of `depth_to_space`. x: (B, r·H, r·W, C) -> (B, H, W, r·r·C)."""
    b, hh, ww, c = x.shape
    if hh % r or ww % r:
        raise ValueError(f"space_to_depth ×{r} needs a map divisible by {r}, got {hh}×{ww}")
    return blockify(x, r).reshape(b, hh // r, ww // r, r * r * c)


class BlockDeaggregation(nnx.Module):
    """Turns every block into 2×2 child blocks and changes the width: the inverse of aggregation.

    x: (B, T, N, C_in) on a g×g block grid -> (B, 4T, N, C_out) on a 2g×2g grid (same block edge).
    Works on the deblockified map (B, g·b, g·b, C) as block aggregation does:
      pixel_shuffle   : 1×1 projection C_in → 4·C_out, then depth-to-space ×2 (omitted when
                        C_in = 4·C_out and `project=False`: the parameter-free transpose of
                        space-to-depth). The paper's choice.
      nearest_conv    : nearest-neighbour upsampling ×2, then conv 3×3 C_in → C_out.
      transposed_conv : transposed conv 4×4 stride 2 C_in → C_out (DCGAN's upsampling).
    """

    def __init__(self, in_dim: int, out_dim: int, *, kind: str = "pixel_shuffle", project: bool = True, **kw):
        """kw: `rngs`, `kernel_init`, `dtype`, `param_dtype` of the projection."""
        if kind not in DEAGGREGATIONS:
            raise ValueError(f"deaggregation must be one of {DEAGGREGATIONS}, got {kind!r}")
        if not project and (kind != "pixel_shuffle" or in_dim != 4 * out_dim):
            raise ValueError(
                f"project=False needs pixel_shuffle and in_dim = 4·out_dim, got {kind}, {in_dim} → {out_dim}"
            )
        self.kind = kind
        if kind == "pixel_shuffle":
            self.proj = L.conv(in_dim, 4 * out_dim, 1, **kw) if project else None
        elif kind == "nearest_conv":
            self.proj = L.conv(in_dim, out_dim, 3, padding="SAME", **kw)
        else:
            self.proj = L.conv(in_dim, out_dim, 4, strides=(2, 2), padding="SAME", up=True, **kw)

    def upsample(self, x: Array) -> Array:
        """On the map: x (B, H, W, C_in) -> (B, 2H, 2W, C_out)."""
        if self.kind == "pixel_shuffle":
            return depth_to_space(x if self.proj is None else self.proj(x), 2)
        if self.kind == "nearest_conv":
            return self.proj(upsample_nearest(x))
        return self.proj(x)

    def __call__(self, x: Array, grid: int) -> Array:
        b = int(round(x.shape[2] ** 0.5))
        return blockify(self.upsample(deblockify(x, grid)), b)


@dataclasses.dataclass(frozen=True)
class NestGeneratorConfig:
    """Every choice of a NesT generator. `dims`, `depths`, `heads`: one entry per level, TOP first.

    Output side = patch_size · block_size · top_grid · 2^(levels-1).
    """

    img_size: int = 32
    latent_dim: int = 128
    out_chans: int = 3
    patch_size: int = 1  # pixels per side of one output token (the RGB head's depth-to-space)
    block_size: int = 4  # edge of a block in tokens
    top_grid: int = 1  # blocks per side at the top level (1: one block)
    dims: tuple[int, ...] = (256, 128, 64, 32)
    depths: tuple[int, ...] = (2, 2, 2, 1)
    heads: tuple[int, ...] = (4, 2, 2, 1)
    mlp_ratio: float = 4.0
    deaggregation: str = "pixel_shuffle"
    gelu: str = "tanh"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        check_levels(self)
        if self.deaggregation not in DEAGGREGATIONS:
            raise ValueError(f"deaggregation must be one of {DEAGGREGATIONS}, got {self.deaggregation!r}")
        side = self.patch_size * self.block_size * self.top_grid * 2 ** (self.levels - 1)
        if side != self.img_size:
            raise ValueError(
                f"img_size {self.img_size} does not fit: patch {self.patch_size} × block "
                f"{self.block_size} × top grid {self.top_grid} × 2^({self.levels}-1 levels) = {side}"
            )

    @property
    def levels(self) -> int:
        return len(self.depths)

    def grid(self, level: int) -> int:
        """Blocks per side at `level` (0 = top)."""
        return self.top_grid * 2**level


class NestGenerator(Model):
    """z: (B, latent_dim) -> image (B, H, W, out_chans) in [-1, 1].

    `__call__(z, *, train=None, capture=None)`; `capture="features"` records each level's token map
    (B, H_l, W_l, C_l) after its transformer layers, top first (`nest_jax.models.intermediates`).
    """

    def __init__(self, config: NestGeneratorConfig, *, rngs: nnx.Rngs):
        self.config = c = config
        kw = dict(dtype=c.dtype, param_dtype=c.param_dtype, rngs=rngs)
        init = L.trunc_normal_02
        n = c.block_size**2
        t0 = c.top_grid**2
        self.stem = L.dense(
            c.latent_dim, t0 * n * c.dims[0], (None, "mlp"), kernel_init=nnx.initializers.lecun_normal(), **kw
        )
        self.pos_embed = nnx.List(
            [
                L.param(rngs, init, (1, c.grid(i) ** 2, n, c.dims[i]), c.param_dtype, None, None, None, "embed")
                for i in range(c.levels)
            ]
        )
        opts = dict(act=c.gelu, kernel_init=init, **kw)
        self.levels = nnx.List(
            [
                L.transformer_stack([0.0] * c.depths[i], c.dims[i], c.heads[i], int(c.dims[i] * c.mlp_ratio), **opts)
                for i in range(c.levels)
            ]
        )
        self.deaggregate = nnx.List(
            [
                BlockDeaggregation(c.dims[i], c.dims[i + 1], kind=c.deaggregation, kernel_init=init, **kw)
                for i in range(c.levels - 1)
            ]
        )
        self.norm = L.layer_norm(c.dims[-1], **kw)
        self.head = L.dense(c.dims[-1], c.patch_size**2 * c.out_chans, ("embed", None), kernel_init=init, **kw)

    def __call__(self, z: Array, *, train: bool | None = None, capture: Capture = None):
        c = self.config
        train, rec = self.training(train), maybe_recorder(capture)
        x = self.stem(z).reshape(z.shape[0], c.top_grid**2, c.block_size**2, c.dims[0])
        for i in range(c.levels):
            if i > 0:
                x = self.deaggregate[i - 1](x, c.grid(i - 1))
            x = x + self.pos_embed[i][...].astype(x.dtype)
            for layer in self.levels[i]:
                x = layer(x, train=train, rec=rec)
            if rec is not None:
                rec.append("features", deblockify(x, c.grid(i)))
        x = deblockify(self.norm(x), c.grid(c.levels - 1))
        return finish(jnp.tanh(depth_to_space(self.head(x), c.patch_size).astype(jnp.float32)), rec)


# ---------------------------------------------------------------------------------------------
# Variants: 32 / 64 / 128 px, a one-block top level (4×4 tokens) and widths halving per level.
NEST_GAN_VARIANTS = {
    "nest_gan_32": dict(img_size=32, patch_size=1, dims=(256, 128, 64, 32), depths=(2, 2, 2, 1), heads=(4, 2, 2, 1)),
    "nest_gan_64": dict(
        img_size=64, patch_size=1, dims=(512, 256, 128, 64, 32), depths=(2, 2, 2, 2, 1), heads=(8, 4, 2, 2, 1)
    ),
    "nest_gan_128": dict(
        img_size=128, patch_size=2, dims=(512, 256, 128, 64, 32), depths=(2, 2, 2, 2, 1), heads=(8, 4, 2, 2, 1)
    ),
}


for _name, _spec in NEST_GAN_VARIANTS.items():
    _doc = (
        f"{_name}: NesT generator, {_spec['img_size']} px, dims {_spec['dims']}, depths {_spec['depths']} (top first)."
    )
    register_variant(_name, NestGenerator, NestGeneratorConfig, _spec, _doc)
