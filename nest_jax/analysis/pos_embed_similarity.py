"""Cosine similarity between position embeddings (Dosovitskiy et al. 2020, Fig. 7 centre).

ViT: the learned table's spatial rows (prefix slots dropped; the fixed 2-D sin-cos table when
`pos_embed="sincos"`) -> (gh, gw, gh, gw), [i, j] the similarity of position (i, j) to all others.
NesT: one table per level (1, T, N, C), laid out on the level's token map with `deblockify`
-> one (H_l, W_l, H_l, W_l) array per level.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from nest_jax.models.blocks import deblockify
from nest_jax.models.layers import sincos_2d


def cosine_similarity_grid(table: np.ndarray) -> np.ndarray:
    """table (h, w, D) -> (h, w, h, w) cosine similarity of every position to every other."""
    h, w, d = table.shape
    x = np.asarray(table, np.float64).reshape(h * w, d)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return (x @ x.T).reshape(h, w, h, w)


def pos_embed_similarity(model: nnx.Module) -> list[np.ndarray]:
    """List of similarity grids: one for a ViT/DeiT, one per level (bottom first) for NesT."""
    c = model.config
    if hasattr(c, "depths"):  # NesT
        tables = [deblockify(jnp.asarray(level.pos_embed[...]), level.grid)[0] for level in model.levels]
        return [cosine_similarity_grid(np.asarray(t)) for t in tables]
    if not hasattr(c, "prefix_tokens"):
        raise ValueError(f"{type(model).__name__} has no position embedding")
    gh, gw = c.grid
    if model.pos_embed is not None:
        table = np.asarray(model.pos_embed[...])[0, c.num_prefix :]
    elif c.pos_embed == "sincos":
        table = np.asarray(sincos_2d(gh, gw, c.dim))[0]
    else:
        raise ValueError("this model has no position embedding (pos_embed='none')")
    return [cosine_similarity_grid(table.reshape(gh, gw, -1))]
