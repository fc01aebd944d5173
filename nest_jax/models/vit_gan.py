"""A plain ViT generator: one flat grid of tokens, global attention, no hierarchy (the transformer
baseline for the NesT generator).

z → Dense to a D-vector added to every token's learned position embedding (the position
embeddings are the image's queries, the latent a shared offset, as in ViTGAN's input) → transformer
layers with attention over all tokens → LayerNorm → per-token Dense to p·p·C → depth-to-space ×p →
tanh. Cost grows with the square of the token count, which the NesT generator avoids by attending
inside blocks only.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from nest_jax.models import layers as L
from nest_jax.models.intermediates import Capture, Model, finish, maybe_recorder
from nest_jax.models.nest_gan import depth_to_space
from nest_jax.models.registry import register_variant

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ViTGeneratorConfig:
    img_size: int = 32
    latent_dim: int = 128
    out_chans: int = 3
    patch_size: int = 2
    dim: int = 256
    depth: int = 6
    num_heads: int = 4
    mlp_ratio: float = 4.0
    gelu: str = "tanh"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not divisible by patch_size {self.patch_size}")

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size


class ViTGenerator(Model):
    """z: (B, latent_dim) -> image (B, H, W, out_chans) in [-1, 1].

    `capture`: the per-layer kinds, and `features` = the token grid after the final norm (B, g, g, D).
    """

    def __init__(self, config: ViTGeneratorConfig, *, rngs: nnx.Rngs):
        self.config = c = config
        kw = dict(dtype=c.dtype, param_dtype=c.param_dtype, rngs=rngs)
        self.stem = L.dense(c.latent_dim, c.dim, (None, "embed"), kernel_init=nnx.initializers.lecun_normal(), **kw)
        self.pos_embed = L.param(rngs, L.trunc_normal_02, (1, c.grid**2, c.dim), c.param_dtype, None, None, "embed")
        self.layers = L.transformer_stack(
            [0.0] * c.depth, c.dim, c.num_heads, int(c.dim * c.mlp_ratio), act=c.gelu, **kw
        )
        self.norm = L.layer_norm(c.dim, **kw)
        self.head = L.dense(c.dim, c.patch_size**2 * c.out_chans, ("embed", None), **kw)

    def __call__(self, z: Array, *, train: bool | None = None, capture: Capture = None):
        c = self.config
        train, rec = self.training(train), maybe_recorder(capture)
        x = self.pos_embed[...] + self.stem(z)[:, None, :]
        for layer in self.layers:
            x = layer(x, train=train, rec=rec)
        x = self.norm(x).reshape(z.shape[0], c.grid, c.grid, -1)
        if rec is not None:
            rec.append("features", x)
        x = self.head(x)
        return finish(jnp.tanh(depth_to_space(x, c.patch_size).astype(jnp.float32)), rec)


VIT_GAN_VARIANTS = {
    "vit_generator_32": dict(img_size=32, patch_size=2, dim=256, depth=6, num_heads=4),
    "vit_generator_64": dict(img_size=64, patch_size=4, dim=384, depth=6, num_heads=6),
}


for _name, _spec in VIT_GAN_VARIANTS.items():
    register_variant(_name, ViTGenerator, ViTGeneratorConfig, _spec, f"{_name}: plain ViT generator, {_spec}.")
