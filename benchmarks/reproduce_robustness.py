"""Rows of `benchmarks/reproduce.py` on robustness, ViT against the ResNet (both on the natural
world): common corruptions and a universal adversarial patch. Thresholds and the recipe are fixed
here, before any run (see `reproduce_claims.py`)."""

from __future__ import annotations

import numpy as np
import reproduce_claims as C

from nest_jax.analysis.adversarial_patch import run_adversarial_patch
from nest_jax.analysis.corruption_eval import run_corruptions

PAIR = ("vit_natural", "resnet_natural")
# One corruption per ImageNet-C family (noise, blur, weather, digital ×2), all five severities.
CORRUPTIONS = ("gaussian_noise", "defocus_blur", "fog", "contrast", "jpeg_compression")
SEVERITIES = (1, 2, 3, 4, 5)
EVAL_IMAGES = 200  # the first test images (the cost stays ~ a CPU-minute in the full tier)
PATCH_TRAIN_IMAGES = 128  # natural-world training images the patch is optimized on
PATCH_BATCH = 32  # per step (× the default 2 placements): ~25 s per model in the full tier
PATCH = dict(fraction=0.1)  # 10 % of the image area; otherwise train_patch's defaults


def _batches(x, y, size: int = 100) -> list[dict]:
    return [{"image": x[i : i + size], "label": y[i : i + size]} for i in range(0, len(x), size)]


def corruption_row(m: dict, nat: dict, out_dir) -> dict:
    from nest_jax.viz.robustness import plot_corruption_errors

    ev = _batches(nat["image"][:EVAL_IMAGES], nat["label"][:EVAL_IMAGES])
    res = {
        k: run_corruptions(m[k], ev, mean=C.MEAN, std=C.STD, corruptions=CORRUPTIONS, severities=SEVERITIES)
        for k in PAIR
    }

    def drop(r):  # mean relative top-1 drop over corruptions and severities
        accs = np.asarray([r["top1"][c] for c in CORRUPTIONS], np.float64)
        return float(np.mean((r["clean_top1"] - accs) / max(r["clean_top1"], 1e-9)))

    d = {k: drop(r) for k, r in res.items()}
    plot_corruption_errors(res).savefig(out_dir / "corruptions.png", dpi=100)
    v, r = d["vit_natural"], d["resnet_natural"]
    return C.row(
        "ViT more robust to common corruptions than a CNN (Naseer et al. 2021, IPViT §3.3)",
        "DeiT's mean corruption error on ImageNet-C below ResNet-50's",
        f"mean relative top-1 drop over {len(CORRUPTIONS)} corruptions × severities 1–5 "
        f"({sum(len(b['label']) for b in ev)} test images): "
        f"ViT {v:.3f}, ResNet {r:.3f}; mCE (AlexNet-on-ImageNet-C scale) ViT {res['vit_natural']['mce']:.1f}, "
        f"ResNet {res['resnet_natural']['mce']:.1f}",
        "reproduced: ViT's drop ≤ ResNet's − 0.02; partly: smaller",
        v <= r - 0.02,
        v < r,
        f"{C.FIGURES}/corruptions.png",
        models=PAIR,
    )


def _fooling(model, train: list, ev: list) -> dict:
    try:
        return run_adversarial_patch(model, train, ev, mean=C.MEAN, std=C.STD, **PATCH)
    except ValueError:  # the model gets none of the training images right: nothing to attack
        return dict(fooling_rate=float("nan"), random_fooling_rate=float("nan"), evaluated=0)


def patch_row(m: dict, nat: dict, train: dict) -> dict:
    tr = _batches(train["image"][:PATCH_TRAIN_IMAGES], train["label"][:PATCH_TRAIN_IMAGES], PATCH_BATCH)
    ev = _batches(nat["image"][:EVAL_IMAGES], nat["label"][:EVAL_IMAGES])
    f = {k: _fooling(m[k], tr, ev) for k in PAIR}
    v, r = f["vit_natural"]["fooling_rate"], f["resnet_natural"]["fooling_rate"]
    shown = ", ".join(
        f"{k.split('_')[0]} {x['fooling_rate']:.3f} (random patch {x['random_fooling_rate']:.3f}, "
        f"{x['evaluated']} images)"
        for k, x in f.items()
    )
    return C.row(
        "ViT less fooled by a universal adversarial patch than a CNN (Naseer et al. 2021, IPViT §3.3)",
        "DeiT's fooling rate under an adversarial patch below ResNet-50's at the same patch size",
        f"fooling rate of a 10 %-area square patch on correctly classified test images: {shown}",
        "reproduced: ViT ≤ ResNet − 0.05; partly: lower",
        v <= r - 0.05,
        v < r,
        models=PAIR,
    )
