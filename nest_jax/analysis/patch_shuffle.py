"""Patch shuffling and feature-level token dropping (Naseer et al. 2021, Sections 3.1 and 3.4).

Patch shuffle: the image (B, H, W, C) in [0, 1] is cut into a gh × gw grid of cells and the cells
are permuted, one random permutation for the whole batch (the paper), before normalization; the
estimate is averaged over `repeats` permutations per batch with its standard error. The
paper's grids at 224 px are 2×2, 2×4, 4×4, 4×8, 8×8, 14×14 and 16×16; grid 1×1 is the identity.

Token drop (the feature-level variant): a ViT runs its first `layer` layers on the full token
sequence, then a random fraction of the PATCH tokens is removed (prefix tokens are kept; one
choice per batch) and the remaining layers, final norm and heads run on the shorter sequence.
Attention takes any number of tokens, so this needs no retraining; it applies to ViT/DeiT only
(NesT's blocks need all their tokens, ResNets have none).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nest_jax.analysis.forward import as_list, fold, normalize, top1
from nest_jax.analysis.occlusion import check_repeats, mean_and_sem, num_dropped
from nest_jax.analysis.per_block_tokens import is_vit, vit_run_layers, vit_token_logits
from nest_jax.errors import UserError

Array = jax.Array
PAPER_GRIDS = ((1, 1), (2, 2), (2, 4), (4, 4), (4, 8), (8, 8), (14, 14), (16, 16))


def shuffle_cells(images: Array, grid: tuple[int, int], perm: Array) -> Array:
    """Permutes the cells of every image: output cell i is input cell perm[i] (raster order).

    images: (B, H, W, C) with H, W divisible by the grid; perm: (gh·gw,) int.
    """
    b, h, w, c = images.shape
    gh, gw = grid
    if h % gh or w % gw:
        raise ValueError(f"grid {gh}×{gw} does not divide the image {h}×{w}")
    ch, cw = h // gh, w // gw
    cells = images.reshape(b, gh, ch, gw, cw, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, gh * gw, ch, cw, c)
    cells = cells[:, perm]
    return cells.reshape(b, gh, gw, ch, cw, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


@nnx.jit(static_argnames=("grid", "mean", "std"))
def shuffled_logits(model, images: Array, key: Array, *, grid: tuple, mean: tuple, std: tuple) -> Array:
    perm = jax.random.permutation(key, grid[0] * grid[1])
    return model(normalize(shuffle_cells(images, grid, perm), mean, std), train=False)


def fitting_grids(image_shape: Sequence[int], grids: Sequence[tuple[int, int]] = PAPER_GRIDS) -> list:
    """The grids that divide the image (at 32 px: up to 16×16; 14×14 needs a multiple of 14)."""
    h, w = image_shape[1:3]
    return [g for g in grids if h % g[0] == 0 and w % g[1] == 0]


def check_grids(grids: Sequence[tuple[int, int]], image_hw: tuple[int, int]) -> None:
    """UserError unless every grid is (rows, columns) of positive cells that divide the image."""
    bad = [g for g in grids if len(g) != 2 or min(g) < 1 or image_hw[0] % g[0] or image_hw[1] % g[1]]
    if bad or not grids:
        raise UserError(
            f"patch_shuffle: grids={tuple(map(tuple, grids))} must be (rows, columns) that divide the "
            f"{image_hw[0]}×{image_hw[1]} images, e.g. grids=((2,2),(4,4))"
        )


def run_patch_shuffle(
    model,
    batches: Iterable[dict],
    *,
    mean: tuple,
    std: tuple,
    grids: Sequence[tuple[int, int]] | None = None,
    repeats: int = 5,
    seed: int = 0,
) -> dict:
    """Top-1 for each shuffle grid, averaged over `repeats` permutations.
    -> {"grids": [[gh, gw], …], "top1": […], "top1_sem": […]}."""
    batches = as_list(batches)
    grids = [tuple(g) for g in (grids or fitting_grids(np.shape(batches[0]["image"])))]
    check_grids(grids, tuple(np.shape(batches[0]["image"])[1:3]))
    check_repeats(repeats, "patch_shuffle")
    mean, std = tuple(mean), tuple(std)

    def shuffled(rep: int, gi: int, g: tuple):  # one permutation per batch
        key = lambda bi: fold(jax.random.key(seed), gi, bi, rep)
        return lambda bi, b: shuffled_logits(model, jnp.asarray(b["image"]), key(bi), grid=g, mean=mean, std=std)

    per_repeat = [[top1(batches, shuffled(rep, gi, g)) for gi, g in enumerate(grids)] for rep in range(repeats)]
    acc, sem = mean_and_sem(per_repeat)
    return {"grids": [list(g) for g in grids], "top1": acc, "top1_sem": sem}


@nnx.jit(static_argnames=("layer", "num_keep"))
def token_drop_logits(model, images: Array, key: Array, *, layer: int, num_keep: int) -> Array:
    """Inference logits with all but `num_keep` random patch tokens removed before layer `layer`.

    images: (B, H, W, C) normalized. layer 0 drops right after the patch and position embedding.
    """
    p = model.config.num_prefix
    z = vit_run_layers(model, model.embed(images), 0, layer)
    n = z.shape[1] - p
    keep = jnp.sort(jax.random.permutation(key, n)[:num_keep])
    z = jnp.concatenate([z[:, :p], z[:, p + keep]], axis=1)
    logits = vit_token_logits(model, vit_run_layers(model, z, layer, None))
    return sum(logits.values()) / len(logits)


def run_token_drop(
    model,
    batches: Iterable[dict],
    *,
    mean: tuple,
    std: tuple,
    ratios: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 0.9),
    layers: Sequence[int] | None = None,
    seed: int = 0,
) -> dict:
    """Top-1 when a fraction of patch tokens is dropped before layer b.  -> {"top1": {b: [per ratio]}}."""
    if not is_vit(model):
        raise UserError("token dropping needs a ViT/DeiT (NesT blocks need all their tokens)")
    batches = as_list(batches)
    depth = len(model.layers)
    layers = list(layers if layers is not None else sorted({0, depth // 2, depth - 1}))
    n = model.config.grid[0] * model.config.grid[1]

    def dropped(layer: int, ri: int, r: float):
        keep, key = max(n - num_dropped(r, n), 1), lambda bi: fold(jax.random.key(seed), ri, bi)
        x = lambda b: normalize(jnp.asarray(b["image"]), mean, std)
        return lambda bi, b: token_drop_logits(model, x(b), key(bi), layer=layer, num_keep=keep)

    top1s = {str(layer): [top1(batches, dropped(layer, ri, r)) for ri, r in enumerate(ratios)] for layer in layers}
    return {"ratios": list(ratios), "layers": layers, "top1": top1s}
