"""The forward pass every robustness analysis shares: [0, 1] pixels → normalization → logits.

The robustness analyses perturb images in [0, 1] pixel space (a dropped patch is black, a
corruption is defined on pixel values) and normalize afterwards, as the model saw its training
data (Naseer et al. 2021 occlude before normalization). Batches are dicts
{"image": (B, H, W, C) float in [0, 1], "label": (B,) int, optional "mask": (B,) 1 real / 0 padding}.
`to_pixels` turns a normalized evaluation batch of `nest_jax.data` back into that form.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Array = jax.Array
Batch = dict


def normalize(x: Array, mean: Sequence[float], std: Sequence[float]) -> Array:
    """(x − mean) / std per channel.  x: (B, H, W, C) in [0, 1]."""
    c = x.shape[-1]
    return (x - jnp.asarray(mean[:c], x.dtype)) / jnp.asarray(std[:c], x.dtype)


def to_pixels(batch: Batch, mean: Sequence[float], std: Sequence[float]) -> Batch:
    """Inverts the normalization of a `nest_jax.data` batch: image·std + mean, back in [0, 1]."""
    x = np.asarray(batch["image"], np.float32)
    c = x.shape[-1]
    return {**batch, "image": np.clip(x * np.asarray(std[:c], np.float32) + np.asarray(mean[:c], np.float32), 0.0, 1.0)}


@nnx.jit(static_argnames=("mean", "std"))
def logits_from_pixels(model, images: Array, *, mean: tuple, std: tuple) -> Array:
    """The model's inference logits (B, K) (the mean of the heads for distilled DeiTs)."""
    return model(normalize(images, mean, std), train=False)


def batch_mask(batch: Batch) -> np.ndarray:
    m = batch.get("mask")
    return np.ones(len(batch["label"]), np.float32) if m is None else np.asarray(m, np.float32)


def top1(batches: Iterable[Batch], logits_fn: Callable[[int, Batch], Array]) -> float:
    """Top-1 over batches, padding masked; `logits_fn(i, batch)` -> logits (B, K) of batch i."""
    hits, count = 0.0, 0.0
    for i, b in enumerate(batches):
        m = batch_mask(b)
        ok = np.asarray(jnp.argmax(logits_fn(i, b), -1) == jnp.asarray(b["label"]), np.float64)
        hits += float((ok * m).sum())
        count += float(np.sum(m))
    return hits / max(count, 1.0)


def fold(key: Array, *data: int) -> Array:
    """`jax.random.fold_in` of each of `data` in turn: one key per sweep setting and batch."""
    return functools.reduce(jax.random.fold_in, data, key)


def as_list(batches: Iterable[Batch]) -> list[Batch]:
    """Analyses sweep several settings over the same images, so iterators are materialized once."""
    return batches if isinstance(batches, list) else list(batches)
