"""Plots of representation analyses: CKA heatmaps, attention distances, norm ratios, probe
accuracy, localization and position-embedding similarity maps.

Plotting only (matplotlib `Figure`, no pyplot state, Agg-safe); every function takes NumPy-
convertible results of `nest_jax.analysis`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def _axes(figsize: tuple[float, float] = (4.5, 3.2)) -> tuple[Figure, object]:
    fig = Figure(figsize=figsize)
    return fig, fig.add_subplot()


def _heatmap(fig: Figure, ax, m: np.ndarray, **imshow) -> None:
    fig.colorbar(ax.imshow(m, **imshow), ax=ax, fraction=0.046, pad=0.04)


def plot_cka(matrix: np.ndarray, *, xlabel: str = "layer", ylabel: str = "layer", title: str = "CKA") -> Figure:
    """Heatmap of a layer × layer CKA matrix (rows: y-axis model, lowest layer at the bottom)."""
    m = np.asarray(matrix, np.float64)
    fig, ax = _axes((4.2, 3.6))
    _heatmap(fig, ax, m, origin="lower", cmap="magma", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    step = max(1, max(m.shape) // 12)  # integer layer ticks, at most ~12 per axis
    ax.set_xticks(range(0, m.shape[1], step)), ax.set_yticks(range(0, m.shape[0], step))
    fig.tight_layout()
    return fig


def plot_attention_distance(distances: Sequence[np.ndarray], *, title: str = "mean attention distance") -> Figure:
    """Scatter of every head's mean attention distance (pixels) per layer; distances: layers × (heads,)."""
    fig, ax = _axes((4.5, 3.4))
    for i, d in enumerate(distances):
        d = np.asarray(d, np.float64)
        ax.scatter(np.full(d.shape, i), d, s=14, alpha=0.8, color="C0")
    ax.set(xlabel="layer", ylabel="mean attention distance (px)", title=title)
    ax.set_xticks(range(len(distances)))
    fig.tight_layout()
    return fig


def _layer_curves(curves: dict[str, np.ndarray], **axes_set) -> Figure:
    """One curve per key (sorted) over the layer index; non-finite values are left out."""
    fig, ax = _axes((4.8, 3.4))
    for k, v in sorted(curves.items()):
        v = np.asarray(v, np.float64)
        ax.plot(np.arange(len(v)), np.where(np.isfinite(v), v, np.nan), "o-", ms=3, label=k)
    ax.set(xlabel="layer", **axes_set)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_norm_ratios(ratios: dict[str, np.ndarray], *, title: str = "‖z‖ / ‖f(z)‖") -> Figure:
    """One curve per `branch/group` key (log scale): the residual stream over its branch per layer."""
    return _layer_curves(ratios, yscale="log", ylabel="ratio of norms", title=title)


def plot_probe_accuracy(curves: dict[str, np.ndarray], *, title: str = "linear probes") -> Figure:
    """Test accuracy per layer, one curve per probe (e.g. `ridge/cls`, `logistic/mean`)."""
    return _layer_curves(curves, ylabel="test accuracy", ylim=(0, 1.02), title=title)


def plot_position_maps(
    maps: np.ndarray,
    positions: Sequence[tuple[int, int]] | None = None,
    *,
    title: str = "",
    vmin: float | None = None,
    vmax: float | None = None,
) -> Figure:
    """Grid of maps (gh, gw, gh, gw) at chosen query positions (default: corners, centre, edges);
    used for localization CKA maps and position-embedding similarity."""
    m = np.asarray(maps, np.float64)
    gh, gw = m.shape[:2]
    if positions is None:
        positions = [(i, j) for i in (0, gh // 2, gh - 1) for j in (0, gw // 2, gw - 1)]
    cols = min(3, len(positions))
    rows = -(-len(positions) // cols)
    shown = np.stack([m[i, j] for i, j in positions])
    vmin = float(shown.min()) if vmin is None else vmin  # one colour scale for every map
    vmax = float(shown.max()) if vmax is None else vmax
    fig = Figure(figsize=(2.1 * cols + 0.6, 2.1 * rows + 0.3), layout="constrained")
    axes = []
    for k, (i, j) in enumerate(positions):
        ax = fig.add_subplot(rows, cols, k + 1)
        im = ax.imshow(m[i, j], cmap="viridis", vmin=vmin, vmax=vmax)
        ax.plot([j], [i], "r+", ms=8)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(f"({i}, {j})", fontsize=8)
        axes.append(ax)
    fig.colorbar(im, ax=axes, shrink=0.8)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def plot_token_probe(acc: np.ndarray, grid_hw: tuple[int, int], *, title: str = "per-token probe") -> Figure:
    """Per-position test accuracy of the per-token probe on the final-layer grid."""
    fig, ax = _axes((3.6, 3.2))
    _heatmap(fig, ax, np.asarray(acc, np.float64).reshape(grid_hw), vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(f"{title} (mean {float(np.mean(acc)):.3f})", fontsize=9)
    fig.tight_layout()
    return fig
