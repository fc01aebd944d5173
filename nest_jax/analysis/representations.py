"""Per-layer representations of any registered model, as the analyses consume them.

Every model records its intermediates through one mechanism (`nest_jax.models.intermediates`):
ViT/DeiT `layers[i]` is (B, P+N, D) with P prefix tokens first, NesT's (B, T, N, C) (T blocks of N
tokens), ResNet's (B, h, w, C) (one entry per residual block). `layer_representations` turns
them into one (B, F) matrix per layer:

  pool="cls"   the first prefix token (ViT/DeiT only);
  pool="mean"  the mean over spatial tokens (prefix tokens excluded; NesT: over all blocks);
  pool="all"   every token flattened (ViT: prefix and spatial tokens, as in Raghu et al. 2021).

`forward_fn(model, capture)` is the jitted pure forward pass the analyses share: it splits the
model once and returns f(images) -> (logits, intermediates); inputs may be sharded over the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array
POOLS = ("cls", "mean", "all")


def num_prefix(model: nnx.Module) -> int:
    """Number of prefix (class/distillation/shape) tokens of a model; 0 for NesT and ResNets."""
    return int(getattr(model.config, "num_prefix", 0))


def model_family(model: nnx.Module) -> str:
    """`vit` (ViT/DeiT, a token sequence), `nest` (blocks of tokens) or `resnet` (feature maps)."""
    cfg = type(model.config).__name__
    return {"ViTConfig": "vit", "NestConfig": "nest", "ResNetConfig": "resnet"}.get(cfg, "vit")


def pool_layer(h: Array, pool: str, family: str, prefix: int) -> Array:
    """One layer's intermediate -> (B, F). h: (B, P+N, D) | (B, T, N, C) | (B, h, w, C)."""
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    b = h.shape[0]
    if pool == "all":
        return h.reshape(b, -1)
    if pool == "cls":
        if family != "vit" or prefix == 0:
            raise ValueError("pool='cls' needs a model with a class token; use pool='mean' or 'all'")
        return h[:, 0]
    if family == "vit":
        return h[:, prefix:].mean(axis=1)
    return h.reshape(b, -1, h.shape[-1]).mean(axis=1)


def layer_representations(inter: dict, pool: str, family: str, prefix: int) -> list[Array]:
    """intermediates (with `layers`) -> one (B, F) array per layer."""
    return [pool_layer(h, pool, family, prefix) for h in inter["layers"]]


def forward_fn(model: nnx.Module, capture) -> Callable[[Array], tuple[Array, dict]]:
    """Jitted eval-mode forward recording `capture`: images (B, H, W, C) -> (logits, intermediates)."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, images):
        return nnx.merge(graphdef, state)(images, train=False, capture=capture)

    return lambda images: run(state, jnp.asarray(images))
