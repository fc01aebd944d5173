"""Plots of the robustness analyses (`nest_jax.analysis.occlusion`, `patch_shuffle`,
`corruption_eval`, `adversarial_patch`, `per_block_tokens`, `shape_bias`).

Each function takes the dicts the `run_*` functions return, one per model (name -> result), and
returns a matplotlib Figure (no pyplot state; works under Agg).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def plot_occlusion(results: Mapping[str, dict], title: str = "Random PatchDrop") -> Figure:
    """Top-1 vs fraction of cells dropped, one line per model with ± one standard error over the
    repeated drop patterns (results of `run_occlusion`)."""
    fig = Figure(figsize=(4.5, 3.2))
    ax = fig.add_subplot()
    for name, r in results.items():
        sem = np.asarray(r.get("top1_sem", np.zeros(len(r["top1"])))) * 100
        ax.errorbar(
            np.asarray(r["ratios"]) * 100,
            np.asarray(r["top1"]) * 100,
            yerr=sem,
            marker="o",
            ms=3,
            capsize=2,
            label=name,
        )
    ax.set_xlabel("image occluded (%)"), ax.set_ylabel("top-1 (%)"), ax.set_title(title)
    ax.set_ylim(0, 100), ax.grid(alpha=0.3), ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_salient_occlusion(results: Mapping[str, dict]) -> Figure:
    """Top-1 vs λ for salient (solid) and non-salient (dashed) PatchDrop (`run_salient_occlusion`)."""
    fig = Figure(figsize=(4.5, 3.2))
    ax = fig.add_subplot()
    for i, (name, r) in enumerate(results.items()):
        c = f"C{i}"
        ax.plot(r["lambdas"], np.asarray(r["salient_drop_top1"]) * 100, c=c, marker="o", ms=3, label=f"{name} salient")
        ax.plot(
            r["lambdas"],
            np.asarray(r["non_salient_drop_top1"]) * 100,
            c=c,
            ls="--",
            marker="s",
            ms=3,
            label=f"{name} non-salient",
        )
    ax.set_xlabel("attention mass λ"), ax.set_ylabel("top-1 (%)"), ax.set_ylim(0, 100)
    ax.grid(alpha=0.3), ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def plot_shuffle(results: Mapping[str, dict]) -> Figure:
    """Top-1 per shuffle grid, ± one standard error over the permutations (`run_patch_shuffle`)."""
    fig = Figure(figsize=(4.5, 3.2))
    ax = fig.add_subplot()
    for name, r in results.items():
        labels = [f"{g[0]}×{g[1]}" for g in r["grids"]]
        sem = np.asarray(r.get("top1_sem", np.zeros(len(r["top1"])))) * 100
        ax.errorbar(labels, np.asarray(r["top1"]) * 100, yerr=sem, marker="o", ms=3, capsize=2, label=name)
    ax.set_xlabel("shuffle grid"), ax.set_ylabel("top-1 (%)"), ax.set_ylim(0, 100)
    ax.grid(alpha=0.3), ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_corruption_errors(results: Mapping[str, dict]) -> Figure:
    """Corruption error CE per corruption (AlexNet = 100), grouped bars per model (`run_corruptions`)."""
    names = list(next(iter(results.values()))["ce"])
    fig = Figure(figsize=(8, 3.2))
    ax = fig.add_subplot()
    width = 0.8 / len(results)
    for i, (model, r) in enumerate(results.items()):
        ax.bar(
            np.arange(len(names)) + i * width, [r["ce"][n] for n in names], width, label=f"{model} (mCE {r['mce']:.1f})"
        )
    ax.axhline(100, c="k", lw=0.8, ls=":")
    ax.set_xticks(
        np.arange(len(names)) + 0.4 - width / 2,
        [n.replace("_", " ") for n in names],
        rotation=60,
        ha="right",
        fontsize=7,
    )
    ax.set_ylabel("CE (AlexNet = 100)"), ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_patched_images(images: np.ndarray, titles=None) -> Figure:
    """A row of images in [0, 1] (e.g. clean, patched, the patch itself)."""
    fig = Figure(figsize=(2.0 * len(images), 2.2))
    for i, img in enumerate(images):
        ax = fig.add_subplot(1, len(images), i + 1)
        img = np.clip(np.asarray(img, np.float64), 0, 1)
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
        ax.set_xticks([]), ax.set_yticks([])
        if titles:
            ax.set_title(titles[i], fontsize=8)
    fig.tight_layout()
    return fig


def plot_fooling_rates(results: Mapping[str, dict]) -> Figure:
    """Fooling rate against the patch's share of the image, optimized (solid) and the random patch
    it starts from (dashed), one colour per model (`adversarial_patch` results: model → fraction_f)."""
    fig = Figure(figsize=(4.5, 3.2))
    ax = fig.add_subplot()
    for i, (name, r) in enumerate(results.items()):
        rows = sorted(r.values(), key=lambda row: row["fraction"])
        x = [100 * row["fraction"] for row in rows]
        ax.plot(x, [row["fooling_rate"] for row in rows], marker="o", c=f"C{i}", label=f"{name} optimized")
        ax.plot(x, [row["random_fooling_rate"] for row in rows], marker="s", ls="--", c=f"C{i}", label=f"{name} random")
    ax.set_xlabel("patch area (% of the image)"), ax.set_ylabel("fooling rate"), ax.set_ylim(0, 1)
    ax.grid(alpha=0.3), ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


TOKEN_NAMES = {
    "inference": "model's prediction",
    "cls": "class token",
    "dist": "distillation token",
    "shape": "shape token",
}


def plot_per_layer(results: Mapping[str, dict]) -> Figure:
    """Top-1 of every layer's (ViT/DeiT) or level's (NesT) tokens through the shared head
    (`run_per_block_tokens`). A line equal to one already drawn for the same model is named on it
    ("class token = model's prediction") instead of hiding under it."""
    fig = Figure(figsize=(4.8, 3.3))
    ax = fig.add_subplot()
    styles = [("o", "-"), ("s", "--"), ("^", ":"), ("D", "-.")]
    units = set()
    for i, (name, r) in enumerate(results.items()):
        units.add("level (NesT)" if "levels" in r else "layer")
        drawn: list[tuple[list, list]] = []  # (values, names)
        for token, acc in r["top1"].items():
            same = [d for d in drawn if np.allclose(d[0], acc)]
            if same:
                same[0][1].append(TOKEN_NAMES.get(token, token))
            else:
                drawn.append((list(acc), [TOKEN_NAMES.get(token, token)]))
        for k, (acc, names) in enumerate(drawn):
            marker, ls = styles[k % len(styles)]
            x = np.arange(1, len(acc) + 1)
            ax.plot(
                x, np.asarray(acc) * 100, c=f"C{i}", marker=marker, ls=ls, ms=4, label=f"{name}: {' = '.join(names)}"
            )
    ax.set_xlabel(" / ".join(sorted(units))), ax.set_ylabel("top-1 (%)"), ax.set_ylim(0, 100), ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def plot_shape_bias(results: Mapping[str, dict]) -> Figure:
    """Shape bias per model or token (`shape_bias` results), humans ≈ 0.96 for reference."""
    fig = Figure(figsize=(4.5, 3.0))
    ax = fig.add_subplot()
    names = list(results)
    ax.barh(names, [results[n]["shape_bias"] for n in names], color="C2")
    ax.axvline(0.5, c="k", lw=0.8, ls=":")
    ax.set_xlim(0, 1), ax.set_xlabel("shape bias (fraction of shape decisions)")
    fig.tight_layout()
    return fig
