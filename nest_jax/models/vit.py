"""Vision Transformer (Dosovitskiy et al. 2020), with any number of named prefix tokens.

The prefix tokens make this one class serve ViT (`cls`), distilled DeiT (`cls`, `dist`), the shape
token model (`cls`, `shape`) and cls + dist + shape at once: each token has its own learned
embedding, its own position slot and (with `pool="token"`) its own head.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from nest_jax.models import layers as L
from nest_jax.models.intermediates import Capture, Model, finish, maybe_recorder
from nest_jax.models.registry import register_variant

Array = jax.Array
HEAD_NAMES = {"cls": "head", "dist": "head_dist", "shape": "head_shape"}


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """Every choice of a ViT/DeiT. `init="official"` follows Google's ViT code, `"timm"` DeiT/timm."""

    img_size: int | tuple[int, int] = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    prefix_tokens: tuple[str, ...] = ("cls",)
    pool: str = "token"  # "token" (a head per prefix token) or "gap" (mean of patch tokens)
    representation_size: int | None = None  # pre-logits Dense + tanh
    pos_embed: str = "learned"  # "learned" (1-D, with prefix slots), "sincos" (fixed 2-D), "none"
    gelu: str = "exact"
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    init: str = "timm"
    stem: str | None = None  # "bit_r50": hybrid on a BiT ResNet-50 stem (stages 3, 4, 9)
    skip_removed: tuple[int, ...] = ()  # layers trained without residual connections (ablation)
    dtype: Any = None  # compute dtype, e.g. jnp.bfloat16
    param_dtype: Any = jnp.float32
    attn_impl: str = "auto"  # attention kernel: "auto" | "cudnn" | "xla" | "explicit" (checked by layers.Attention)

    def __post_init__(self):
        if self.pool not in ("token", "gap"):
            raise ValueError(f"pool must be 'token' or 'gap', got {self.pool!r}")
        if self.pool == "token" and not self.prefix_tokens:
            raise ValueError("pool='token' needs at least one prefix token")
        if self.pos_embed not in ("learned", "sincos", "none"):
            raise ValueError(f"pos_embed must be 'learned', 'sincos' or 'none', got {self.pos_embed!r}")
        if self.init not in ("timm", "official"):
            raise ValueError(f"init must be 'timm' or 'official', got {self.init!r}")
        object.__setattr__(self, "skip_removed", tuple(int(i) for i in self.skip_removed))
        if any(not 0 <= i < self.depth for i in self.skip_removed):
            raise ValueError(f"skip_removed {self.skip_removed} must be layer indices in [0, {self.depth})")
        unknown = set(self.prefix_tokens) - set(HEAD_NAMES)
        if unknown:
            raise ValueError(f"unknown prefix tokens {sorted(unknown)}; known: {list(HEAD_NAMES)}")
        h, w = L.to_hw(self.img_size)
        s = self.stride
        if h % s or w % s:
            ok = ", ".join(str(s * k) for k in range(max(1, h // s - 2), h // s + 3))
            raise ValueError(
                f"img_size {self.img_size} is not divisible by the total stride {s}; sizes that work include {ok}."
            )

    @property
    def stride(self) -> int:
        return self.patch_size * (16 if self.stem else 1)

    @property
    def grid(self) -> tuple[int, int]:
        h, w = L.to_hw(self.img_size)
        return h // self.stride, w // self.stride

    @property
    def num_prefix(self) -> int:
        return len(self.prefix_tokens)

    def token_index(self, name: str) -> int:
        """Position of a prefix token (`cls`, `dist`, `shape`) in the token sequence."""
        return self.prefix_tokens.index(name)


class ViT(Model):
    """x: (B, H, W, C) image -> logits (B, classes).

    With several prefix tokens and `pool="token"` the logits are the mean of the heads' raw logits
    (DeiT inference), in train mode too; `capture="heads"` adds each token's own head logits (each
    head's own loss in training). Call contract and modes: `nest_jax.models.intermediates`.
    """

    def __init__(self, config: ViTConfig, *, rngs: nnx.Rngs):
        self.config = c = config
        kw = dict(dtype=c.dtype, param_dtype=c.param_dtype, rngs=rngs)
        official = c.init == "official"
        dense_init = nnx.initializers.xavier_uniform() if official else L.trunc_normal_02
        # Official: q, k, v are separate (D, h, d) DenseGenerals, each xavier with fan_out = D.
        qkv_init = (
            nnx.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=0, out_axis=(2, 3), batch_axis=(1,))
            if official
            else L.trunc_normal_02
        )
        mlp_bias = nnx.initializers.normal(1e-6) if official else nnx.initializers.zeros
        if c.stem == "bit_r50":
            from nest_jax.models.resnet import BiTStem

            self.stem = BiTStem(c.in_chans, layers=(3, 4, 9), **kw)
            in_chans = self.stem.out_chans
        elif c.stem is None:
            self.stem = None
            in_chans = c.in_chans
        else:
            raise ValueError(f"unknown stem {c.stem!r}; use None or 'bit_r50'")
        self.patch_embed = L.PatchEmbed(in_chans, c.dim, c.patch_size, **kw)
        tok_init = nnx.initializers.zeros if official else L.trunc_normal_02
        for name in c.prefix_tokens:
            setattr(self, f"{name}_token", L.param(rngs, tok_init, (1, 1, c.dim), c.param_dtype, None, None, "embed"))
        n = c.num_prefix + c.grid[0] * c.grid[1]
        pos_init = nnx.initializers.normal(0.02) if official else L.trunc_normal_02
        self.pos_embed = (
            L.param(rngs, pos_init, (1, n, c.dim), c.param_dtype, None, None, "embed")
            if c.pos_embed == "learned"
            else None
        )
        self.pos_drop = nnx.Dropout(c.drop_rate, rngs=rngs)
        opts = dict(
            qkv_bias=c.qkv_bias, drop=c.drop_rate, attn_drop=c.attn_drop_rate, act=c.gelu, attn_impl=c.attn_impl
        )
        inits = dict(kernel_init=dense_init, qkv_init=qkv_init, mlp_bias_init=mlp_bias)
        rates = L.drop_path_rates(c.drop_path_rate, c.depth)
        self.layers = L.transformer_stack(
            rates, c.dim, c.num_heads, c.mlp_dim, skip_removed=c.skip_removed, **opts, **inits, **kw
        )
        self.norm = L.layer_norm(c.dim, **kw)
        width = c.representation_size or c.dim
        self.pre_logits = (
            L.dense(c.dim, width, ("embed", "mlp"), kernel_init=dense_init, **kw) if c.representation_size else None
        )
        head_init = nnx.initializers.zeros if official else L.trunc_normal_02
        for name in c.prefix_tokens if c.pool == "token" else ("cls",):
            setattr(self, HEAD_NAMES[name], L.classifier(width, c.num_classes, head_init, **kw))

    def embed(self, x: Array, *, train: bool | None = None) -> Array:
        """Image (B, H, W, C) -> token sequence (B, P+N, D) with position embeddings added."""
        c = self.config
        train = self.training(train)
        if tuple(x.shape[1:3]) != L.to_hw(c.img_size):
            raise ValueError(
                f"input is {tuple(x.shape[1:3])} px but the model was built for {L.to_hw(c.img_size)}; "
                "create it with img_size=… or resize the position embedding "
                "(nest_jax.convert.resize_pos_embed)."
            )
        if self.stem is not None:
            x = self.stem(x, train=train)
        x = self.patch_embed(x)
        b, gh, gw, d = x.shape
        x = x.reshape(b, gh * gw, d)
        if c.pos_embed == "sincos":
            x = x + L.sincos_2d(gh, gw, d).astype(x.dtype)
        prefix = [
            jnp.broadcast_to(getattr(self, f"{n}_token")[...].astype(x.dtype), (b, 1, d)) for n in c.prefix_tokens
        ]
        x = jnp.concatenate(prefix + [x], axis=1)
        if self.pos_embed is not None:
            x = x + self.pos_embed[...].astype(x.dtype)
        return self.pos_drop(x, deterministic=not train)

    def __call__(self, x: Array, *, train: bool | None = None, capture: Capture = None):
        c = self.config
        train = self.training(train)
        rec = maybe_recorder(capture)
        x = self.embed(x, train=train)
        for layer in self.layers:
            x = layer(x, train=train, rec=rec)
        x = self.norm(x)
        feats, logits = self.readout(x)
        if rec is not None:
            rec.append("features", x[:, c.num_prefix :].reshape(x.shape[0], *c.grid, c.dim))
            for i, name in enumerate(c.prefix_tokens):
                rec.set("tokens", x[:, i], name)
            rec.set("pre_logits", _mean(feats))
            for n, v in logits.items():
                rec.set("heads", v, n)
        return finish(_mean(logits or feats), rec)

    def readout(self, x: Array) -> tuple[dict[str, Array], dict[str, Array]]:
        """Normed tokens x (B, P+N, D) -> ({head token: the vector its head reads}, {head token:
        logits (B, K)}; {} without classes). The final norm of any layer's output reads out alike."""
        c = self.config
        p = c.num_prefix
        feats = (
            {n: x[:, i] for i, n in enumerate(c.prefix_tokens)} if c.pool == "token" else {"cls": x[:, p:].mean(axis=1)}
        )
        if self.pre_logits is not None:
            feats = {n: jnp.tanh(self.pre_logits(f)) for n, f in feats.items()}
        return feats, {n: getattr(self, HEAD_NAMES[n])(f) for n, f in feats.items()} if c.num_classes else {}


def _mean(per_token: dict[str, Array]) -> Array:
    values = list(per_token.values())
    return values[0] if len(values) == 1 else sum(values) / len(values)


# name: (patch, dim, depth, heads, mlp)
VIT_VARIANTS = {
    "vit_tiny_patch16_224": (16, 192, 12, 3, 768),
    "vit_small_patch16_224": (16, 384, 12, 6, 1536),
    "vit_small_patch32_224": (32, 384, 12, 6, 1536),
    "vit_base_patch8_224": (8, 768, 12, 12, 3072),
    "vit_base_patch16_224": (16, 768, 12, 12, 3072),
    "vit_base_patch32_224": (32, 768, 12, 12, 3072),
    "vit_large_patch16_224": (16, 1024, 24, 16, 4096),
    "vit_large_patch32_224": (32, 1024, 24, 16, 4096),
    "vit_huge_patch14_224": (14, 1280, 32, 16, 5120),
}


def _register(name: str, patch: int, dim: int, depth: int, heads: int, mlp: int, **extra):
    spec = dict(patch_size=patch, dim=dim, depth=depth, num_heads=heads, mlp_dim=mlp, **extra)
    register_variant(
        name, ViT, ViTConfig, spec, f"{name}: patch {patch}, D={dim}, {depth} layers, {heads} heads, MLP {mlp}."
    )


for _name, _spec in VIT_VARIANTS.items():
    _register(_name, *_spec)
# Hybrid: BiT ResNet-50 stem (stride 16) then 1x1 "patches".
_register("vit_base_r50_s16_224", 1, 768, 12, 12, 3072, stem="bit_r50")
