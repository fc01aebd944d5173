"""Convolutional GAN baselines: a ResNet generator and a ResNet discriminator in the style of SAGAN
(Zhang et al. 2019) / BigGAN (Brock et al. 2019), without self-attention or class conditioning.

Generator: z → Dense to a 4×4×C_0 map → residual up-blocks (BN → ReLU → nearest ×2 → conv 3×3 →
BN → ReLU → conv 3×3, shortcut nearest ×2 → conv 1×1) → BN → ReLU → conv 3×3 → tanh.
Discriminator: residual down-blocks (ReLU → conv 3×3 → ReLU → conv 3×3 → avg-pool 2, shortcut conv
1×1 → avg-pool 2; the first block without the leading ReLU) → ReLU → sum over space → Dense → 1
logit. Every conv/dense of the discriminator is optionally spectrally normalized (Miyato et al. 2018).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from nest_jax.models import layers as L
from nest_jax.models.intermediates import Capture, Model, finish, maybe_recorder
from nest_jax.models.nest_gan import upsample_nearest
from nest_jax.models.registry import register_variant
from nest_jax.models.spectral_norm import SNConv, SNLinear

Array = jax.Array


def _avg_pool2(x: Array) -> Array:
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _bn(dim: int, rngs: nnx.Rngs, **kw) -> nnx.BatchNorm:
    # momentum 0.9: PyTorch's default 0.1 update rate, which SAGAN/BigGAN trained with.
    return nnx.BatchNorm(
        dim,
        momentum=0.9,
        epsilon=1e-5,
        rngs=rngs,
        scale_init=L.axes(nnx.initializers.ones, "conv_out"),
        bias_init=L.axes(nnx.initializers.zeros, "conv_out"),
        **kw,
    )


class GBlock(nnx.Module):
    """Residual up-block. x: (B, H, W, C_in) -> (B, 2H, 2W, C_out)."""

    def __init__(self, in_dim: int, out_dim: int, *, rngs: nnx.Rngs, **kw):
        self.bn1, self.bn2 = _bn(in_dim, rngs, **kw), _bn(out_dim, rngs, **kw)
        self.conv1 = SNConv(in_dim, out_dim, 3, spectral=False, rngs=rngs, **kw)
        self.conv2 = SNConv(out_dim, out_dim, 3, spectral=False, rngs=rngs, **kw)
        self.skip = SNConv(in_dim, out_dim, 1, spectral=False, rngs=rngs, **kw)

    def __call__(self, x: Array, *, train: bool = False) -> Array:
        h = self.conv1(upsample_nearest(jax.nn.relu(self.bn1(x, use_running_average=not train))))
        h = self.conv2(jax.nn.relu(self.bn2(h, use_running_average=not train)))
        return h + self.skip(upsample_nearest(x))


@dataclasses.dataclass(frozen=True)
class ConvGeneratorConfig:
    """`widths`: channels of the 4×4 start map and after each up-block (len = log2(img/4) + 1)."""

    img_size: int = 32
    latent_dim: int = 128
    out_chans: int = 3
    widths: tuple[int, ...] = (256, 256, 256, 256)
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        ups = int(round(math.log2(self.img_size / 4)))
        if 4 * 2**ups != self.img_size or len(self.widths) != ups + 1:
            raise ValueError(
                f"img_size {self.img_size} needs a power of two ≥ 4 and {ups + 1} widths "
                f"(4×4 start + one per up-block), got {len(self.widths)}"
            )


class ConvGenerator(Model):
    """z: (B, latent_dim) -> image (B, H, W, out_chans) in [-1, 1]; `capture="features"`: each block's map."""

    def __init__(self, config: ConvGeneratorConfig, *, rngs: nnx.Rngs):
        self.config = c = config
        kw = dict(dtype=c.dtype, param_dtype=c.param_dtype)
        xavier = nnx.initializers.xavier_uniform()
        self.stem = L.dense(c.latent_dim, 16 * c.widths[0], (None, "mlp"), kernel_init=xavier, rngs=rngs, **kw)
        self.blocks = nnx.List([GBlock(a, b, rngs=rngs, **kw) for a, b in zip(c.widths[:-1], c.widths[1:])])
        self.bn = _bn(c.widths[-1], rngs, **kw)
        self.to_rgb = SNConv(c.widths[-1], c.out_chans, 3, spectral=False, rngs=rngs, **kw)

    def __call__(self, z: Array, *, train: bool | None = None, capture: Capture = None):
        train, rec = self.training(train), maybe_recorder(capture)
        x = self.stem(z).reshape(z.shape[0], 4, 4, self.config.widths[0])
        x = _run_blocks(self.blocks, x, train, rec)
        x = jax.nn.relu(self.bn(x, use_running_average=not train))
        return finish(jnp.tanh(self.to_rgb(x).astype(jnp.float32)), rec)


def _run_blocks(blocks: nnx.List, x: Array, train: bool, rec) -> Array:
    for block in blocks:
        x = block(x, train=train)
        if rec is not None:
            rec.append("features", x)
    return x


class DBlock(nnx.Module):
    """Residual down-block. x: (B, H, W, C_in) -> (B, H/2, W/2, C_out) (or same size, `down=False`)."""

    def __init__(self, in_dim: int, out_dim: int, *, rngs: nnx.Rngs, down: bool, first: bool, spectral: bool, **kw):
        self.down, self.first = down, first
        self.conv1 = SNConv(in_dim, out_dim, 3, spectral=spectral, rngs=rngs, **kw)
        self.conv2 = SNConv(out_dim, out_dim, 3, spectral=spectral, rngs=rngs, **kw)
        self.skip = (
            SNConv(in_dim, out_dim, 1, spectral=spectral, rngs=rngs, **kw) if in_dim != out_dim or down else None
        )

    def __call__(self, x: Array, *, train: bool = False) -> Array:
        pool = _avg_pool2 if self.down else (lambda a: a)
        skip = (lambda a: a) if self.skip is None else (lambda a: self.skip(a, train=train))
        h = x if self.first else jax.nn.relu(x)
        h = self.conv2(jax.nn.relu(self.conv1(h, train=train)), train=train)
        # BigGAN's optimized first block pools before the 1×1 conv.
        return pool(h) + (skip(pool(x)) if self.first else pool(skip(x)))


@dataclasses.dataclass(frozen=True)
class ConvDiscriminatorConfig:
    """`widths[i]` and `down[i]` per residual block; the number of downsamplings is free."""

    img_size: int = 32
    in_chans: int = 3
    num_classes: int = 1  # 1: one real/fake logit
    widths: tuple[int, ...] = (128, 128, 128, 128)
    down: tuple[bool, ...] = (True, True, False, False)
    spectral_norm: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "down", tuple(bool(d) for d in self.down))
        if len(self.widths) != len(self.down):
            raise ValueError(f"widths {self.widths} and down {self.down} need one entry per block each")
        if self.img_size % 2 ** sum(self.down):
            raise ValueError(f"img_size {self.img_size} is not divisible by 2^{sum(self.down)} downsamplings")


class ConvDiscriminator(Model):
    """x: (B, H, W, C) image -> logits (B, num_classes); `capture="features"`: each block's map."""

    def __init__(self, config: ConvDiscriminatorConfig, *, rngs: nnx.Rngs):
        self.config = c = config
        kw = dict(dtype=c.dtype, param_dtype=c.param_dtype)
        ins = (c.in_chans,) + c.widths[:-1]
        self.blocks = nnx.List(
            [
                DBlock(a, b, down=d, first=(i == 0), spectral=c.spectral_norm, rngs=rngs, **kw)
                for i, (a, b, d) in enumerate(zip(ins, c.widths, c.down))
            ]
        )
        self.head = SNLinear(c.widths[-1], c.num_classes, spectral=c.spectral_norm, rngs=rngs, **kw)

    def __call__(self, x: Array, *, train: bool | None = None, capture: Capture = None):
        train, rec = self.training(train), maybe_recorder(capture)
        x = _run_blocks(self.blocks, x, train, rec)
        return finish(self.head(jax.nn.relu(x).sum(axis=(1, 2)), train=train), rec)


# ---------------------------------------------------------------------------------------------
_G, _D = (ConvGenerator, ConvGeneratorConfig), (ConvDiscriminator, ConvDiscriminatorConfig)
CONV_GAN_VARIANTS = {
    "sagan_generator_32": (*_G, dict(img_size=32, widths=(256,) * 4)),
    "sagan_generator_64": (*_G, dict(img_size=64, widths=(512, 256, 128, 64, 32))),
    "sagan_discriminator_32": (*_D, dict(img_size=32, widths=(128,) * 4, down=(True, True, False, False))),
    "sagan_discriminator_64": (*_D, dict(img_size=64, widths=(64, 128, 256, 512, 512), down=(True,) * 4 + (False,))),
}
for _name, (_cls, _config, _spec) in CONV_GAN_VARIANTS.items():
    register_variant(_name, _cls, _config, _spec, f"{_name}: {_cls.__name__}, {_spec}.")
