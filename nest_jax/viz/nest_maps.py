"""Plots of NesT explanations: GradCAT boxes, CAM heatmaps, per-level block-importance maps.

Plotting only: every function takes NumPy-convertible results of `nest_jax.analysis` for ONE image
and returns a matplotlib Figure (no pyplot state is needed, so it works under the Agg backend).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from nest_jax.viz.representations import _axes

_LEVEL_COLORS = ("#ffffff", "#ffd700", "#ff7f0e", "#d62728", "#9467bd", "#17becf")


def _image_figure(image: np.ndarray):
    """A 4 × 4.3 in figure showing image (H, W, 3), any value range scaled to [0, 1]. -> (fig, ax)."""
    fig, ax = _axes((4, 4.3))
    img = np.asarray(image, np.float64)
    lo, hi = img.min(), img.max()
    ax.imshow((img - lo) / (hi - lo) if hi > lo else np.zeros_like(img))
    ax.set_xticks([]), ax.set_yticks([])
    return fig, ax


def _box(ax, box, color: str, lw: float = 2.0, label: str | None = None) -> None:
    y0, x0, y1, x1 = (float(v) for v in box)
    # pixel (i, j) covers [j-0.5, j+0.5] in imshow coordinates, so a half-open box starts at -0.5
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=color, lw=lw))
    if label:
        ax.text(x0 + 1, y0 + 1, label, color=color, fontsize=7, va="top", bbox=dict(fc="black", alpha=0.5, lw=0, pad=1))


def plot_gradcat(image: np.ndarray, result, index: int = 0, class_names=None) -> Figure:
    """Image (H, W, 3) with the nested boxes GradCAT chose, each labelled with its level and score.

    result: a `GradCATResult` (batched); `index` picks the image in the batch.
    """
    boxes = np.asarray(result.boxes[index])  # (L, 4) top → bottom
    nodes = np.asarray(result.nodes[index])
    levels = len(result.scores)
    fig, ax = _image_figure(image)
    for k in range(1, levels):  # skip the root: its box is the whole image
        lvl = levels - 1 - k
        score = float(np.asarray(result.scores[lvl][index])[tuple(nodes[k])])
        _box(ax, boxes[k], _LEVEL_COLORS[k % len(_LEVEL_COLORS)], lw=2.5 - 0.4 * k, label=f"L{lvl} {score:.2g}")
    c = int(np.asarray(result.target)[index])
    name = class_names[c] if class_names is not None else str(c)
    ax.set_title(f"GradCAT, class {name}, path {np.asarray(result.path[index]).tolist()}", fontsize=9)
    return fig


def plot_cam(
    image: np.ndarray, cam: np.ndarray, box=None, true_box=None, title: str = "CAM", alpha: float = 0.5
) -> Figure:
    """Image (H, W, 3) with a CAM (H, W) overlaid; optional predicted box (red) and true box (green)."""
    fig, ax = _image_figure(image)
    im = ax.imshow(np.asarray(cam, np.float64), cmap="jet", alpha=alpha)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if box is not None:
        _box(ax, box, "red", label="CAM box")
    if true_box is not None:
        _box(ax, true_box, "lime", label="true")
    ax.set_title(title, fontsize=9)
    return fig


def plot_level_scores(result, index: int = 0) -> Figure:
    """One heatmap of node scores s_l per level (bottom level first), chosen node outlined.

    Colours are symmetric around 0 (red = evidence for the class, blue = against), per level.
    """
    levels = len(result.scores)
    nodes = np.asarray(result.nodes[index])  # top → bottom
    fig = Figure(figsize=(3.2 * levels, 3.2))
    axes = fig.subplots(1, levels, squeeze=False)[0]
    for lvl, ax in enumerate(axes):
        s = np.asarray(result.scores[lvl][index], np.float64)
        v = max(float(np.abs(s).max()), 1e-30)
        im = ax.imshow(s, cmap="RdBu_r", vmin=-v, vmax=v)
        r, c = nodes[levels - 1 - lvl]
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, ec="black", lw=2))
        ax.set_title(f"level {lvl}: {s.shape[0]}×{s.shape[1]} blocks", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle("GradCAT node scores Σ A·∂Y/∂A per block", fontsize=10)
    return fig
