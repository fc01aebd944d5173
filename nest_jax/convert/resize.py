"""Fitting converted weights to a model built for another resolution or class count.

Fine-tuning at a new resolution keeps the prefix-token rows of the learned position table, reshapes
the patch rows to their grid, resizes the grid and concatenates back (ViT paper §3.2). Three
interpolations, each the exact one of a reference system (all separable, computed in float64 as
(out, in) weight matrices applied along each grid axis):

  "linear"      official ViT: `scipy.ndimage.zoom(grid, zoom, order=1)`. zoom maps output index
                i to input coordinate i·(in−1)/(out−1): the corners of the grids coincide
                (PyTorch's align_corners=True), so the border rows are copied unchanged.
  "bicubic"     DeiT: `torch.nn.functional.interpolate(mode="bicubic", align_corners=False)`.
                Keys' cubic convolution with a = −0.75; input coordinate (i + 0.5)·in/out − 0.5;
                taps outside the grid are clamped to the border row.
  "bicubic_aa"  timm's `resample_abs_pos_embed` (its default `antialias=True`): PIL-style cubic
                with a = −0.5, support widened by in/out when shrinking, weights renormalised
                over the taps inside the grid.

Tests pin each against its reference (scipy, torch) to float32 round-off.
"""

from __future__ import annotations

import fnmatch
import logging
import math

import numpy as np
from flax import nnx

from nest_jax.convert.common import param_shapes

log = logging.getLogger(__name__)
METHODS = ("linear", "bicubic", "bicubic_aa")
HEAD_NAMES = ("head", "head_dist", "head_shape")


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((x - 5) * x + 8) * x * a - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def interp_matrix(n_in: int, n_out: int, method: str) -> np.ndarray:
    """(n_out, n_in) float64 matrix W with resized = W @ rows, for one grid axis."""
    if method not in METHODS:
        raise ValueError(f"resize method must be one of {METHODS}, got {method!r}")
    w = np.zeros((n_out, n_in))
    out = np.arange(n_out)
    if n_in == n_out:
        return np.eye(n_in)
    if method == "linear":
        # scipy.ndimage.zoom, grid_mode=False: corners aligned.
        src = out * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(1)
        lo = np.clip(np.floor(src).astype(int), 0, n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        t = src - lo
        np.add.at(w, (out, lo), 1 - t)
        np.add.at(w, (out, hi), t)
        return w
    scale = n_in / n_out
    if method == "bicubic":
        src = (out + 0.5) * scale - 0.5
        base = np.floor(src).astype(int)
        t = src - base
        for k in range(-1, 3):
            np.add.at(w, (out, np.clip(base + k, 0, n_in - 1)), _cubic(t - k, -0.75))
        return w
    # bicubic_aa: PyTorch's _compute_weights_aa (the PIL resampler).
    support = 2.0 * max(scale, 1.0)
    inv = 1.0 / max(scale, 1.0)
    for i in range(n_out):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)  # int() truncates like the C++ static_cast
        hi = min(int(center + support + 0.5), n_in)
        j = np.arange(lo, hi)
        k = _cubic((j - center + 0.5) * inv, -0.5)
        w[i, lo:hi] = k / k.sum()
    return w


def resize_grid(grid: np.ndarray, new_hw: tuple[int, int], method: str = "bicubic") -> np.ndarray:
    """Resizes the two leading axes of grid (H, W, ...) to new_hw, in float64."""
    wh = interp_matrix(grid.shape[0], new_hw[0], method)
    ww = interp_matrix(grid.shape[1], new_hw[1], method)
    return np.einsum("ah,bw,hw...->ab...", wh, ww, np.asarray(grid, np.float64))


def resize_pos_embed(
    pos: np.ndarray,
    *,
    num_prefix: int,
    old_grid: tuple[int, int] | None = None,
    new_grid: tuple[int, int],
    method: str = "bicubic",
) -> np.ndarray:
    """Learned 1-D position table (1, P+N, D) on an old grid -> (1, P+N', D) on new_grid.

    The P prefix rows (class / distillation / shape tokens) are kept as they are; the N patch rows
    (raster order, old_grid = (gh, gw), square when omitted) are resized to N' = new_grid[0]·new_grid[1].
    Returns the input unchanged (same object) when the grids are equal; otherwise the input dtype.
    """
    pos = np.asarray(pos)
    if pos.ndim != 3 or pos.shape[0] != 1:
        raise ValueError(f"position table must be (1, prefix+patches, dim), got {pos.shape}")
    n = pos.shape[1] - num_prefix
    if old_grid is None:
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"{n} patch rows are not a square grid; pass old_grid=(h, w)")
        old_grid = (side, side)
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    if old_grid[0] * old_grid[1] != n:
        raise ValueError(
            f"old_grid {old_grid} has {old_grid[0] * old_grid[1]} cells but the table has "
            f"{n} patch rows (after {num_prefix} prefix rows)"
        )
    if old_grid == new_grid:
        return pos
    prefix, patches = pos[:, :num_prefix], pos[0, num_prefix:].reshape(*old_grid, pos.shape[-1])
    resized = resize_grid(patches, new_grid, method).reshape(1, -1, pos.shape[-1])
    return np.concatenate([prefix, resized.astype(pos.dtype)], axis=1)


def adapt_params(
    arrays: dict[str, np.ndarray],
    model: nnx.Module,
    *,
    resize_method: str = "bicubic",
    num_prefix: int | None = None,
    old_grid: tuple[int, int] | None = None,
) -> dict[str, np.ndarray]:
    """Makes converted arrays ({nest_jax path: array}) fit `model`; returns a new dict.

    - `pos_embed` (ViT/DeiT, (1, P+N, D)) whose row count differs from the model's is resized to
      the model's grid. `num_prefix` defaults to the model's prefix-token count; `old_grid` to
      the square grid of the checkpoint's patch rows.
    - `levels/*/pos_embed` (NesT, (1, T, N, C)) goes to `nest_jax.convert.nest.resize_nest_pos_embed`
      (always linear): per block when the block count T is unchanged, else over the level's map.
    - Head parameters (`head`, `head_dist`, `head_shape`) whose class count differs from the
      model's, or that the model lacks (num_classes=0), are dropped: the model keeps its fresh
      initialisation there (`nest_jax.convert.load.fit_weights` lists them).
    Anything else is left for `fit_weights` to check.
    """
    want = param_shapes(model)
    out = dict(arrays)
    for key, value in arrays.items():
        shape = tuple(np.shape(value))
        top = key.split("/")[0]
        if top in HEAD_NAMES and key.split("/")[-1] in ("kernel", "bias"):
            if key not in want:
                log.info("dropping %s %s: the model has no such head", key, shape)
                del out[key]
            elif shape != want[key] and shape[:-1] == want[key][:-1]:
                log.info("re-initializing %s: checkpoint has %d classes, model %d", key, shape[-1], want[key][-1])
                del out[key]
        elif key == "pos_embed" and key in want and shape != want[key]:
            grid = tuple(getattr(getattr(model, "config", None), "grid", None) or ()) or None
            if grid is None:
                raise ValueError("cannot resize pos_embed: the model has no `config.grid`")
            p = model.config.num_prefix if num_prefix is None else num_prefix
            out[key] = resize_pos_embed(value, num_prefix=p, old_grid=old_grid, new_grid=grid, method=resize_method)
            log.info("resized pos_embed %s -> %s (%s, %d prefix rows kept)", shape, out[key].shape, resize_method, p)
        elif fnmatch.fnmatch(key, "levels/*/pos_embed") and key in want and shape != want[key]:
            from nest_jax.convert.nest import resize_nest_pos_embed

            (_, t, _n, _), (_, t_new, n_new, _) = shape, want[key]
            # Official fine-tuning keeps the block count and grows every block's own table; only a
            # change of block count needs the whole level's map resized.
            mode = "per_block" if t == t_new else "global"
            out[key] = resize_nest_pos_embed(value, math.isqrt(t_new), math.isqrt(n_new), mode=mode)
            log.info("resized %s %s -> %s (NesT %s, linear)", key, shape, want[key], mode)
    return out
