"""Rows of `benchmarks/reproduce.py` about what the ViT's tokens carry: per-layer class tokens through
the final head, the class token's norm-ratio switch, and the GAP ViT beside the class-token ViT.
Thresholds are fixed here, before any run (see `reproduce_claims.py`)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import reproduce_claims as C

from nest_jax.analysis.forward import normalize
from nest_jax.analysis.localization import LocalizationCKA, localization_score
from nest_jax.analysis.norm_ratio import NormSums, norm_sums
from nest_jax.analysis.per_block_tokens import run_per_block_tokens
from nest_jax.analysis.representations import num_prefix

BATCH = 128


def _batches(nat: dict) -> list[dict]:
    """Test images and labels only: `nat["mask"]` is the object mask, not a padding mask."""
    x, y = nat["image"], nat["label"]
    return [{"image": x[i : i + BATCH], "label": y[i : i + BATCH]} for i in range(0, len(x), BATCH)]


def _forwards(model, x, capture: tuple):
    """Intermediates of batches of at least 4 images (the unbiased CKA needs n > 3)."""
    for i in range(0, len(x) - 3, BATCH):
        yield model(normalize(jnp.asarray(x[i : i + BATCH]), C.MEAN, C.STD), train=False, capture=capture)[1]


def per_block_row(m: dict, nat: dict, out_dir) -> dict:
    from nest_jax.viz.robustness import plot_per_layer

    shown = ("vit_natural", "deit_shape_stylized")
    res = {k: run_per_block_tokens(m[k], _batches(nat), mean=C.MEAN, std=C.STD) for k in shown}
    acc = np.asarray(res["vit_natural"]["top1"]["cls"])
    half = acc[len(acc) // 2 :]
    rising = bool(np.all(np.diff(half) >= -0.01))  # non-decreasing over the last half, 0.01 of slack
    ds = res["deit_shape_stylized"]["top1"]
    plot_per_layer(res).savefig(out_dir / "per_block_tokens.png", dpi=100)
    pct = lambda v: "[" + ", ".join(f"{a:.2f}" for a in v) + "]"  # noqa: E731
    return C.row(
        "Deeper per-block class tokens more discriminative (Naseer et al. 2021, IPViT §3.6)",
        "top-1 of each block's class token through the final head rises with depth; early blocks near chance",
        f"natural ViT cls top-1 per layer {pct(acc)}; stylized DeiT (natural test): cls {pct(ds['cls'])}, shape {pct(ds['shape'])}",
        "reproduced: last layer ≥ first + 0.2 and non-decreasing (−0.01 slack) over the last half of layers; "
        "partly: last > first",
        acc[-1] >= acc[0] + 0.2 and rising,
        acc[-1] > acc[0],
        f"{C.FIGURES}/per_block_tokens.png",
        models=("vit_natural",),
    )


def _sublayers(r: dict, group: str) -> np.ndarray:
    """Ratios of the sub-layers in order: attention 0, MLP 0, attention 1, …"""
    return np.stack([r[f"attn/{group}"], r[f"mlp/{group}"]], 1).ravel()


def norm_ratio_row(m: dict, nat: dict, out_dir) -> dict:
    from nest_jax.viz import plot_norm_ratios

    model = m["vit_natural"]
    acc = NormSums()
    for inter in _forwards(model, nat["image"], ("residuals",)):
        acc.update(norm_sums(inter, "vit", num_prefix(model), tuple(model.config.prefix_tokens)))
    r = acc.ratios()
    plot_norm_ratios(r, title="ViT (natural world): ‖z‖ / ‖f(z)‖").savefig(out_dir / "norm_ratio.png", dpi=100)

    def early_late(group):
        s = _sublayers(r, group)
        k = max(1, len(s) // 3)  # the first and the last third of the sub-layers
        return float(np.mean(s[:k])), float(np.mean(s[-k:]))

    (ce, cl), (se, sl) = early_late("cls"), early_late("spatial")
    with np.errstate(divide="ignore", invalid="ignore"):
        q_cls, q_sp = ce / cl, se / sl
    return C.row(
        "CLS-token norm-ratio switch between early and late layers (Raghu et al. 2021, §5, Fig. 8)",
        "‖z‖/‖f(z)‖ of the class token high in early layers, low in later ones; spatial tokens the opposite",
        f"mean ratio over the first / last third of sub-layers (attention and MLP): cls {ce:.2f} / {cl:.2f} "
        f"(×{q_cls:.2f}), spatial {se:.2f} / {sl:.2f} (×{q_sp:.2f})",
        "reproduced: cls early ≥ 1.5 × cls late and spatial early ≤ spatial late; partly: cls early > cls late",
        q_cls >= 1.5 and q_sp <= 1.0,
        q_cls > 1.0,
        f"{C.FIGURES}/norm_ratio.png",
        models=("vit_natural",),
    )


def _localization(model, x) -> np.ndarray:
    acc = LocalizationCKA(model.config.grid, num_prefix(model))
    for inter in _forwards(model, x, ("layers", "residuals")):
        acc.update(inter)
    return acc.result()


def gap_rows(m: dict, nat: dict, accs: dict, out_dir) -> list[dict]:
    from nest_jax.viz import plot_position_maps

    cls, gap = accs["vit_natural"], accs["vit_gap_natural"]
    maps = {k: _localization(m[k], nat["image"]) for k in ("vit_natural", "vit_gap_natural")}
    score = {k: localization_score(v) for k, v in maps.items()}
    for k, v in maps.items():
        plot_position_maps(v, title=f"{k}: CKA(final token, input patches)").savefig(
            out_dir / f"localization_{k}.png", dpi=100
        )
    both = ("vit_natural", "vit_gap_natural")
    return [
        C.row(
            "Class token and global average pooling classify about equally well (Dosovitskiy et al. 2021, App. D.3)",
            "a ViT with GAP of the patch tokens matches the class-token ViT (each with its own learning rate)",
            f"top-1: class token {cls:.3f}, GAP {gap:.3f} (same recipe)",
            "reproduced: |cls − GAP| ≤ 0.03; partly: ≤ 0.08",
            abs(cls - gap) <= 0.03,
            abs(cls - gap) <= 0.08,
            models=both,
        ),
        C.row(
            "Class-token ViT keeps final tokens localized, the GAP ViT less (Raghu et al. 2021, §6, Fig. 11)",
            "final-layer tokens most similar to their own input patch in the class-token ViT; weaker with GAP",
            f"positions whose final token is most CKA-similar to its own input patch: class token "
            f"{score['vit_natural']:.2f}, GAP {score['vit_gap_natural']:.2f}",
            "reproduced: cls ≥ GAP + 0.2; partly: cls > GAP",
            score["vit_natural"] >= score["vit_gap_natural"] + 0.2,
            score["vit_natural"] > score["vit_gap_natural"],
            ", ".join(f"{C.FIGURES}/localization_{k}.png" for k in both),
            models=both,
        ),
    ]
