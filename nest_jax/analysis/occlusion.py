"""Occlusion: random, salient and non-salient PatchDrop (Naseer et al. 2021, Section 3.1).

The image (B, H, W, C) in [0, 1] is divided into a grid of gh × gw cells; dropped cells are set
to 0 (black) BEFORE normalization, as in the paper (after normalization black is not 0).

- Random PatchDrop: exactly floor(ratio · gh·gw) cells are dropped (the paper: k·196 // 10 cells of
  the 14×14 grid for k = 0..9). Each image draws its own random order of the cells (or the batch
  shares one, `per_image=False`, as in the paper) and drops the first floor(ratio · gh·gw) of it, so
  the cells dropped at a lower ratio are also dropped at every higher one (nested drop sets: a
  pattern's curve cannot rise by a new draw). The estimate is averaged over `repeats` independent
  orders and reported with its standard error across them.
- Salient / non-salient PatchDrop: the saliency of a cell is the class token's attention to that
  patch in the last layer (mean over heads, or one head: the paper used DINO ViT-S/16, head 1),
  from the model itself or from another ViT (`saliency_model`). The foreground mask for λ is the
  smallest set of cells holding the top-λ fraction of the attention mass: sort the normalized
  attention ascending, take the cumulative sum, keep cells where it exceeds 1 − λ (the DINO
  visualization rule the paper used). Salient drop removes that set; non-salient drop keeps only it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nest_jax.analysis.forward import as_list, fold, normalize, top1
from nest_jax.analysis.per_block_tokens import is_vit
from nest_jax.errors import UserError

Array = jax.Array
PAPER_RATIOS = tuple(k / 10 for k in range(10))


def num_dropped(ratio: float, cells: int) -> int:
    """floor(ratio · cells), robust to float representation (0.3 · 10 is 2.9999…)."""
    return int(np.floor(ratio * cells + 1e-9))


def check_ratios(ratios: Sequence[float]) -> None:
    """UserError unless `ratios` is a non-empty sequence of drop fractions in [0, 1]."""
    if not ratios or not all(0.0 <= float(r) <= 1.0 for r in ratios):
        raise UserError(f"occlusion: ratios={tuple(ratios)} must be fractions in [0, 1], e.g. ratios=(0.0,0.5)")


def random_drop_mask(key: Array, batch: int, grid: tuple[int, int], num_drop, per_image: bool = True) -> Array:
    """(B, gh, gw) bool, True = dropped; exactly `num_drop` cells per image. For one key the drop
    sets are nested in num_drop (the first num_drop cells of one random order)."""
    n = grid[0] * grid[1]
    scores = jax.random.uniform(key, (batch if per_image else 1, n))
    ranks = jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1)
    mask = ranks < num_drop
    return jnp.broadcast_to(mask, (batch, n)).reshape(batch, *grid)


def mean_and_sem(values) -> tuple[list[float], list[float]]:
    """(repeats, K) estimates -> (mean over repeats, standard error of that mean), each (K,)."""
    v = np.asarray(values, np.float64)
    sem = v.std(0, ddof=1) / np.sqrt(len(v)) if len(v) > 1 else np.zeros(v.shape[1])
    return v.mean(0).tolist(), sem.tolist()


def check_repeats(repeats: int, name: str) -> None:
    """UserError unless at least one repeat is asked for."""
    if int(repeats) < 1:
        raise UserError(f"{name}: repeats={repeats} must be at least 1, e.g. repeats=5")


def drop_cells(images: Array, dropped: Array) -> Array:
    """Sets the dropped cells to black.  images (B, H, W, C), dropped (B, gh, gw) -> images."""
    b, h, w, _ = images.shape
    gh, gw = dropped.shape[1:]
    if h % gh or w % gw:
        raise ValueError(f"grid {gh}×{gw} does not divide the image {h}×{w}")
    keep = jnp.repeat(jnp.repeat(~dropped, h // gh, axis=1), w // gw, axis=2)
    return images * keep[..., None].astype(images.dtype)


def cls_attention(model, images: Array, head: int | None = None) -> Array:
    """Last-layer attention of the class token to each patch, (B, gh, gw), summing to 1 per image.

    images: normalized for `model` (a ViT/DeiT with a class token). head None = mean over heads.
    """
    if not is_vit(model) or "cls" not in model.config.prefix_tokens:
        raise UserError(
            "salient PatchDrop needs a ViT/DeiT with a class token as saliency model "
            "(pass saliency_model=... for NesT or ResNet)"
        )
    c = model.config
    _, inter = model(images, train=False, capture=("attention",))
    att = inter["attention"][-1]  # (B, heads, T, T)
    row = att[:, :, c.token_index("cls"), c.num_prefix :]
    row = row.mean(axis=1) if head is None else row[:, head]
    row = row / row.sum(-1, keepdims=True)
    return row.reshape(row.shape[0], *c.grid)


def mass_mask(saliency: Array, lam: float) -> Array:
    """Smallest set of cells holding the top-λ of the mass.  saliency (B, ...) ≥ 0 -> bool, same shape.

    Ascending sort, cumulative sum of the normalized values, cells where it exceeds 1 − λ.
    """
    shape = saliency.shape
    s = saliency.reshape(shape[0], -1)
    s = s / s.sum(-1, keepdims=True)
    order = jnp.argsort(s, axis=-1)
    cum = jnp.cumsum(jnp.take_along_axis(s, order, -1), axis=-1)
    chosen_sorted = cum > 1.0 - lam
    inverse = jnp.argsort(order, axis=-1)
    return jnp.take_along_axis(chosen_sorted, inverse, -1).reshape(shape)


@nnx.jit(static_argnames=("grid", "per_image", "mean", "std"))
def random_occlusion_logits(
    model, images: Array, key: Array, *, grid: tuple, num_drop, per_image: bool, mean: tuple, std: tuple
) -> Array:
    """Logits under random PatchDrop; num_drop is traced (one compiled program for every ratio)."""
    dropped = random_drop_mask(key, images.shape[0], grid, num_drop, per_image)
    return model(normalize(drop_cells(images, dropped), mean, std), train=False)


@nnx.jit(static_argnames=("mode", "mean", "std"))
def salient_occlusion_logits(
    model, images: Array, saliency: Array, *, lam, mode: str, mean: tuple, std: tuple
) -> Array:
    """Logits under salient / non-salient PatchDrop; λ is traced (one program for every λ)."""
    fg = mass_mask(saliency, lam)
    dropped = fg if mode == "salient" else ~fg
    return model(normalize(drop_cells(images, dropped), mean, std), train=False)


def default_grid(model, image_shape: Sequence[int]) -> tuple[int, int]:
    """The ViT's patch grid; otherwise 16-px cells (14×14 at 224) when they fit, else 4×4."""
    if is_vit(model):
        return tuple(model.config.grid)
    h, w = image_shape[1:3]
    return (h // 16, w // 16) if h % 16 == 0 and w % 16 == 0 and h >= 64 else (4, 4)


def run_occlusion(
    model,
    batches: Iterable[dict],
    *,
    mean: tuple,
    std: tuple,
    ratios: Sequence[float] = PAPER_RATIOS,
    grid: tuple[int, int] | None = None,
    per_image: bool = True,
    repeats: int = 5,
    seed: int = 0,
) -> dict:
    """Top-1 under random PatchDrop for each drop ratio, averaged over `repeats` random cell orders
    (nested drop sets across ratios).  -> {"ratios", "top1", "top1_sem", "grid", "dropped"}."""
    check_ratios(ratios)
    check_repeats(repeats, "occlusion")
    batches = as_list(batches)
    grid = tuple(grid or default_grid(model, np.shape(batches[0]["image"])))
    n = grid[0] * grid[1]
    mean, std = tuple(mean), tuple(std)

    def dropped(rep: int, r: float):  # one cell order per image, the same for every ratio
        key = lambda bi: fold(jax.random.key(seed), rep, bi)
        kw = dict(grid=grid, num_drop=jnp.int32(num_dropped(r, n)), per_image=per_image, mean=mean, std=std)
        return lambda bi, b: random_occlusion_logits(model, jnp.asarray(b["image"]), key(bi), **kw)

    per_repeat = [[top1(batches, dropped(rep, r)) for r in ratios] for rep in range(repeats)]
    acc, sem = mean_and_sem(per_repeat)
    return {
        "ratios": list(ratios),
        "top1": acc,
        "top1_sem": sem,
        "grid": list(grid),
        "dropped": [num_dropped(r, n) for r in ratios],
    }


def run_salient_occlusion(
    model,
    batches: Iterable[dict],
    *,
    mean: tuple,
    std: tuple,
    lambdas: Sequence[float] = tuple(k / 10 for k in range(1, 11)),
    saliency_model=None,
    saliency_mean: tuple | None = None,
    saliency_std: tuple | None = None,
    head: int | None = None,
) -> dict:
    """Top-1 under salient and non-salient PatchDrop for each λ, on the saliency model's grid."""
    batches, mean, std = as_list(batches), tuple(mean), tuple(std)
    smodel = saliency_model if saliency_model is not None else model
    smean, sstd = tuple(saliency_mean or mean), tuple(saliency_std or std)
    att = nnx.jit(cls_attention, static_argnames=("head",))
    sal = [att(smodel, normalize(jnp.asarray(b["image"]), smean, sstd), head=head) for b in batches]
    out = {
        "lambdas": list(lambdas),
        "salient_drop_top1": [],
        "non_salient_drop_top1": [],
        "grid": list(sal[0].shape[1:]),
    }
    for lam in lambdas:
        for mode in ("salient", "non_salient"):
            logits = lambda bi, b: salient_occlusion_logits(
                model, jnp.asarray(b["image"]), sal[bi], lam=jnp.float32(lam), mode=mode, mean=mean, std=std
            )
            out[f"{mode}_drop_top1"].append(top1(batches, logits))
    return out
