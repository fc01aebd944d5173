"""Rows of `benchmarks/reproduce.py` that change how the ViT is trained: a block without its skip
connections (CKA structure), less training data (local heads in the first layer) and fine-tuning
at a higher resolution with interpolated position embeddings. Thresholds are fixed here, before any
run (see `reproduce_claims.py`)."""

from __future__ import annotations

import numpy as np
import reproduce_claims as C
from flax import nnx

from nest_jax.convert.common import assign_params, path_str
from nest_jax.convert.resize import adapt_params

FINETUNE_LR = 1e-4  # AdamW, cosine, as the models' training otherwise (ST.train)
FINETUNED = ("vit_natural_ft_hi", "vit_natural_ft_lo")  # the cached fine-tuned ViTs: at 1.5 × and at 1 × size


def skip_block(depth: int) -> int:
    """The block trained without its skip connections: the end of the first third of the depth."""
    return max(1, depth // 3)


def skip_removal_row(m: dict, nat: dict, accs: dict, out_dir) -> dict:
    from nest_jax.viz import plot_cka

    k = skip_block(m["vit_natural"].config.depth)
    mats = {name: C._cka_matrix(m[name], nat["image"]) for name in ("vit_natural", "vit_skip_natural")}
    across = {name: float(a[:k, k:].mean()) for name, a in mats.items()}  # before the block × from it on
    plot_cka(mats["vit_skip_natural"], title=f"ViT without the skips of block {k}: CKA").savefig(
        out_dir / "cka_vit_skip.png", dpi=100
    )
    full, cut = across["vit_natural"], across["vit_skip_natural"]
    return C.row(
        "Removing a block's skip connections changes the CKA structure (Raghu et al. 2021, §5, Fig. 9)",
        "with an early block's skip removed, the layers after it become dissimilar to those before "
        "(the uniform structure breaks); accuracy drops a few %",
        f"mean CKA of layers 0–{k - 1} against layers {k}–{len(mats['vit_natural']) - 1}: intact ViT {full:.3f}, "
        f"block {k} without skips {cut:.3f}; top-1 {accs['vit_natural']:.3f} → {accs['vit_skip_natural']:.3f}",
        "reproduced: CKA across the block ≤ intact − 0.2; partly: lower",
        cut <= full - 0.2,
        cut < full,
        f"{C.FIGURES}/cka_vit.png, {C.FIGURES}/cka_vit_skip.png",
        models=("vit_natural", "vit_skip_natural"),
    )


def data_scale_row(m: dict, nat: dict, subset: int, full: int) -> dict:
    (few, *_), uniform = C.head_distances(m["vit_natural_subset"], nat["image"])
    (many, *_), _ = C.head_distances(m["vit_natural"], nat["image"])
    gap = (few.min() - many.min()) / uniform  # how much more local the most local head is with more data
    return C.row(
        "Less training data → fewer local heads in the lower layers (Raghu et al. 2021, §4.2, Fig. 4)",
        "ViTs trained on less data (ImageNet vs JFT) lack the local heads of the lower layers",
        f"layer-0 heads with {subset} images {C._px(few)} px, with {full} images {C._px(many)} px; "
        f"uniform attention {uniform:.1f} px",
        "reproduced: the most local layer-0 head is ≥ 0.1 × uniform closer with more data; partly: closer",
        gap >= 0.1,
        gap > 0,
        models=("vit_natural", "vit_natural_subset"),
    )


def top1_nll(model, x, y) -> tuple[float, float]:
    logits = C.logits(model, x).astype(np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    return float(np.mean(logits.argmax(-1) == y)), float(-np.mean(logp[np.arange(len(y)), y]))


def with_weights_of(source, model):
    """`model` given `source`'s parameters, the position table resized to its grid (bicubic)."""
    params = {path_str(k): np.asarray(v[...]) for k, v in nnx.to_flat_state(nnx.state(source, nnx.Param))}
    assign_params(model, adapt_params(params, model))
    return model


def finetune_row(m: dict, make, fit, lo: dict, hi: dict, steps: int) -> dict:
    """`make(size)`: a fresh ViT of the run's shape at `size` px; `fit(name, model, x, y)`: the model
    fine-tuned (cached); `lo` / `hi`: train and test arrays of the world at the training size and
    at 1.5 ×."""
    base = m["vit_natural"]
    size_lo, size_hi = lo["train"]["image"].shape[1], hi["train"]["image"].shape[1]
    at_hi = with_weights_of(base, make(size_hi))
    zero = top1_nll(at_hi, hi["test"]["image"], hi["test"]["label"])
    ft_hi = fit(FINETUNED[0], at_hi, hi["train"]["image"], hi["train"]["label"])
    ft_lo = fit(FINETUNED[1], with_weights_of(base, make(size_lo)), lo["train"]["image"], lo["train"]["label"])
    (a_hi, l_hi), (a_lo, l_lo) = (
        top1_nll(ft_hi, hi["test"]["image"], hi["test"]["label"]),
        top1_nll(ft_lo, lo["test"]["image"], lo["test"]["label"]),
    )
    grid_lo, grid_hi = base.config.grid, at_hi.config.grid
    return C.row(
        "Fine-tuning at a higher resolution than pre-training, position embeddings interpolated in 2-D "
        "(Dosovitskiy et al. 2021, §3.2)",
        "fine-tuning at a higher resolution than pre-training is beneficial; the learned position "
        "embeddings are 2-D interpolated to the longer patch sequence",
        f"{steps} fine-tuning steps on {len(hi['train']['label'])} images, then test top-1 / NLL: at "
        f"{size_hi} px (grid {grid_lo[0]}→{grid_hi[0]}) {a_hi:.3f} / {l_hi:.3f}; at {size_lo} px {a_lo:.3f} / "
        f"{l_lo:.3f}; at {size_hi} px before fine-tuning {zero[0]:.3f} / {zero[1]:.3f}",
        "reproduced: higher-resolution NLL ≤ 0.9 × same-resolution NLL and top-1 no more than 0.005 lower; "
        "partly: lower NLL",
        l_hi <= 0.9 * l_lo and a_hi >= a_lo - 0.005,
        l_hi < l_lo,
        models=("vit_natural",),
    )
