"""Picture grid of the procedural shapes × textures world (docs/data.md): one row per variant
(natural, natural with clutter and rotation, stylized, cue-conflict), the last row the object
masks of the cue-conflict row.

    python benchmarks/shapes_grid.py [--out docs/shapes_grid.png] [--size 64]
"""

from __future__ import annotations

import argparse
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from etils import epath  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nest_jax.data.shapes import SHAPES, ShapesTexturesSource  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/shapes_grid.png")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--columns", type=int, default=10)
    args = p.parse_args(argv)
    world = dict(num_classes=20, image_size=args.size, num_train=100, num_test=100)
    rows = [
        ("natural", ShapesTexturesSource(variant="natural", **world)),
        (
            "cluttered,\nrotated",
            ShapesTexturesSource(variant="natural", clutter=6, rotation=True, min_scale=0.15, **world),
        ),
        ("stylized", ShapesTexturesSource(variant="stylized", clutter=6, rotation=True, min_scale=0.15, **world)),
        (
            "cue-conflict",
            ShapesTexturesSource(variant="cue_conflict", clutter=6, rotation=True, min_scale=0.15, **world),
        ),
    ]
    n = args.columns
    fig, axes = plt.subplots(len(rows) + 1, n, figsize=(1.3 * n, 1.45 * (len(rows) + 1)))
    for r, (name, src) in enumerate(rows):
        for i in range(n):
            ex = src.get("train", i * 2 + r % 2)  # alternate classes between rows: all 20 shapes appear
            axes[r, i].imshow(ex["image"])
            title = SHAPES[ex["label"]] + (
                f"\ntexture {ex['texture_label']}" if ex["texture_label"] != ex["label"] else ""
            )
            axes[r, i].set_title(title, fontsize=6)
            if r == len(rows) - 1:
                axes[r + 1, i].imshow(ex["mask"], cmap="gray")
        axes[r, 0].set_ylabel(name, fontsize=8)
    axes[-1, 0].set_ylabel("mask\n(cue-conflict)", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    out = epath.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as f:
        fig.savefig(f, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
