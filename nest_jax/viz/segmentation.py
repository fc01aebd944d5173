"""Figure of the attention segmentation (`nest_jax.analysis.segmentation`): images, ground-truth
object masks and the masks of each prefix token's last-layer attention."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_segmentation(results: dict):
    """results: `run_segmentation`'s dict ("examples": {"image", "truth", <token>: masks (n, H, W)},
    "jaccard_<token>"). Rows: image, ground truth, one row per token; columns: examples."""
    ex = results["examples"]
    tokens = [k for k in ex if k not in ("image", "truth")]
    images = np.asarray(ex["image"])
    n = len(images)
    fig, axes = plt.subplots(2 + len(tokens), n, figsize=(1.4 * n, 1.5 * (2 + len(tokens))), squeeze=False)
    for i in range(n):
        img = images[i]
        axes[0, i].imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
        axes[1, i].imshow(np.asarray(ex["truth"][i]), cmap="gray", vmin=0, vmax=1)
        for r, t in enumerate(tokens):
            axes[2 + r, i].imshow(np.asarray(ex[t][i]), cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_ylabel("image", fontsize=8)
    axes[1, 0].set_ylabel("object mask", fontsize=8)
    for r, t in enumerate(tokens):
        axes[2 + r, 0].set_ylabel(f"{t} token\nJ={float(results[f'jaccard_{t}']):.2f}", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"Last-layer attention masks keeping {float(results['fraction']):.0%} of the mass", fontsize=9)
    fig.tight_layout()
    return fig
