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

from nest_jax.viz.representations import _axes


def _finish(fig: Figure, ax, xlabel: str, ylabel: str = "top-1 (%)", top: float = 100, legend: int = 7) -> Figure:
    """Labels, the y range [0, top], a grid and the legend; tight layout."""
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel), ax.set_ylim(0, top)
    ax.grid(alpha=0.3), ax.legend(fontsize=legend)
    fig.tight_layout()
    return fig


def _errorbars(ax, x, r: dict, label: str) -> None:
    """r["top1"] in %, ± one standard error r["top1_sem"] (none when absent)."""
    sem = np.asarray(r.get("top1_sem", np.zeros(len(r["top1"])))) * 100
    ax.errorbar(x, np.asarray(r["top1"]) * 100, yerr=sem, marker="o", ms=3, capsize=2, label=label)


def plot_occlusion(results: Mapping[str, dict], title: str = "Random PatchDrop") -> Figure:
    """Top-1 vs fraction of cells dropped, one line per model with ± one standard error over the
    repeated drop patterns (results of `run_occlusion`)."""
    fig, ax = _axes()
    for name, r in results.items():
        _errorbars(ax, np.asarray(r["ratios"]) * 100, r, name)
    ax.set_title(title)
    return _finish(fig, ax, "image occluded (%)")


def plot_salient_occlusion(results: Mapping[str, dict]) -> Figure:
    """Top-1 vs λ for salient (solid) and non-salient (dashed) PatchDrop (`run_salient_occlusion`)."""
    fig, ax = _axes()
    for i, (name, r) in enumerate(results.items()):
        c, lam = f"C{i}", r["lambdas"]
        ax.plot(lam, np.asarray(r["salient_drop_top1"]) * 100, c=c, marker="o", ms=3, label=f"{name} salient")
        non = np.asarray(r["non_salient_drop_top1"]) * 100
        ax.plot(lam, non, c=c, ls="--", marker="s", ms=3, label=f"{name} non-salient")
    return _finish(fig, ax, "attention mass λ", legend=6)


def plot_shuffle(results: Mapping[str, dict]) -> Figure:
    """Top-1 per shuffle grid, ± one standard error over the permutations (`run_patch_shuffle`)."""
    fig, ax = _axes()
    for name, r in results.items():
        _errorbars(ax, [f"{g[0]}×{g[1]}" for g in r["grids"]], r, name)
    return _finish(fig, ax, "shuffle grid")


def plot_corruption_errors(results: Mapping[str, dict]) -> Figure:
    """Corruption error CE per corruption (AlexNet = 100), grouped bars per model (`run_corruptions`)."""
    names = list(next(iter(results.values()))["ce"])
    fig, ax = _axes((8, 3.2))
    width, x = 0.8 / len(results), np.arange(len(names))
    for i, (model, r) in enumerate(results.items()):
        ax.bar(x + i * width, [r["ce"][n] for n in names], width, label=f"{model} (mCE {r['mce']:.1f})")
    ax.axhline(100, c="k", lw=0.8, ls=":")
    ax.set_xticks(x + 0.4 - width / 2, [n.replace("_", " ") for n in names], rotation=60, ha="right", fontsize=7)
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
    fig, ax = _axes()
    for i, (name, r) in enumerate(results.items()):
        rows = sorted(r.values(), key=lambda row: row["fraction"])
        x = [100 * row["fraction"] for row in rows]
        ax.plot(x, [row["fooling_rate"] for row in rows], marker="o", c=f"C{i}", label=f"{name} optimized")
        ax.plot(x, [row["random_fooling_rate"] for row in rows], marker="s", ls="--", c=f"C{i}", label=f"{name} random")
    return _finish(fig, ax, "patch area (% of the image)", "fooling rate", top=1)


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
    fig, ax = _axes((4.8, 3.3))
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
            label = f"{name}: {' = '.join(names)}"
            ax.plot(
                np.arange(1, len(acc) + 1), np.asarray(acc) * 100, c=f"C{i}", marker=marker, ls=ls, ms=4, label=label
            )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _finish(fig, ax, " / ".join(sorted(units)), legend=6)


def plot_shape_bias(results: Mapping[str, dict]) -> Figure:
    """Shape bias per model or token (`shape_bias` results), humans ≈ 0.96 for reference."""
    fig, ax = _axes((4.5, 3.0))
    names = list(results)
    ax.barh(names, [results[n]["shape_bias"] for n in names], color="C2")
    ax.axvline(0.5, c="k", lw=0.8, ls=":")
    ax.set_xlim(0, 1), ax.set_xlabel("shape bias (fraction of shape decisions)")
    fig.tight_layout()
    return fig
