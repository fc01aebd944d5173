"""Mean attention distance (Dosovitskiy et al. 2020, Fig. 7; Raghu et al. 2021, §4).

For one head and one query patch q, the distance is Σ_k A[q, k] · ‖c(q) − c(k)‖, with c(·) the
centre of a patch in input pixels; it is averaged over the query patches and then over images.
Prefix tokens (class/distillation/shape) are removed from the queries and the keys. Rows are NOT
renormalized after the key removal by default (`renormalize=False`, the common implementation):
the attention a query pays to prefix tokens counts as distance 0. With `renormalize=True` each
row is divided by the attention it pays to patches, so the value is the distance of the patch
attention alone.

Sanity values (tested): uniform attention over a 14×14 grid of 16-px patches → 116.49 px;
identity attention → 0.

NesT attends within blocks of b×b tokens; level l's tokens are (patch_size · 2^l) px apart in the
input image (each block aggregation halves the resolution), so its distances are within-block
distances in input pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def patch_distances(grid_hw: tuple[int, int], patch_size: float) -> np.ndarray:
    """Euclidean distance in pixels between the centres of every pair of patches: (N, N), N = h·w.

    Patches are in raster order (row-major), as the models lay out their tokens.
    """
    h, w = grid_hw
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    c = np.stack([yy.ravel(), xx.ravel()], 1).astype(np.float64) * float(patch_size)
    return np.sqrt(((c[:, None] - c[None]) ** 2).sum(-1))


def attention_distance_per_image(
    weights: Array, dist: Array, num_prefix: int = 0, *, renormalize: bool = False
) -> Array:
    """Mean over queries (and over blocks) of one layer's attention distance, per image and head.

    weights: (B, h, P+N, P+N) (ViT) or (B, T, h, N, N) (NesT: T blocks); dist: (N, N) pixels.
    Returns (B, h).
    """
    w = weights[..., num_prefix:, num_prefix:].astype(jnp.float32)
    if renormalize:
        w = w / jnp.maximum(w.sum(-1, keepdims=True), jnp.finfo(jnp.float32).tiny)
    d = jnp.einsum("...qk,qk->...q", w, jnp.asarray(dist, jnp.float32)).mean(-1)  # (B, [T,] h)
    return d.reshape(d.shape[0], -1, d.shape[-1]).mean(1)


def mean_attention_distance(
    weights: Array | Sequence[Array],
    grid_hw: tuple[int, int],
    patch_size: float,
    num_prefix: int = 0,
    *,
    renormalize: bool = False,
) -> np.ndarray:
    """Mean attention distance in pixels, averaged over queries and images.

    weights: one layer (B, h, P+N, P+N) -> (h,), or a list of layers -> (layers, h).
    grid_hw: the patch grid (rows, cols); patch_size: pixels between neighbouring patch centres.
    """
    dist = patch_distances(grid_hw, patch_size)
    one = not isinstance(weights, (list, tuple))
    layers = [weights] if one else list(weights)
    for w in layers:
        if w.shape[-1] - num_prefix != dist.shape[0]:
            raise ValueError(
                f"attention over {w.shape[-1]} tokens minus {num_prefix} prefix tokens does not "
                f"match a {grid_hw[0]}×{grid_hw[1]} grid ({dist.shape[0]} patches)"
            )
    per = [attention_distance_per_image(jnp.asarray(w), dist, num_prefix, renormalize=renormalize) for w in layers]
    out = np.stack([np.asarray(d).mean(0) for d in per])
    return out[0] if one else out


def layer_geometry(config) -> list[tuple[tuple[int, int], float]]:
    """Per layer: (token grid the attention runs over, pixels between token centres) of a model.

    ViT: the whole patch grid, `patch_size` (× 16 for a hybrid stem). NesT: one block (b, b) at
    level l, `patch_size · 2^l`.
    """
    if hasattr(config, "depths"):  # NesT
        b = config.block_size
        return [
            ((b, b), float(config.patch_size * 2**lvl)) for lvl, depth in enumerate(config.depths) for _ in range(depth)
        ]
    return [(tuple(config.grid), float(config.stride))] * config.depth


def model_attention_distances(attention: Sequence[Array], config, *, renormalize: bool = False) -> list[Array]:
    """Every layer's per-image distances of one batch: list of (B, heads) in input pixels.

    attention: the model's `attention` intermediates; config: the model's config (ViT or NesT).
    """
    prefix = int(getattr(config, "num_prefix", 0))
    return [
        attention_distance_per_image(w, patch_distances(grid, px), prefix, renormalize=renormalize)
        for w, (grid, px) in zip(attention, layer_geometry(config))
    ]
