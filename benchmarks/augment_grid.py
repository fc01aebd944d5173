"""Picture grid of the training chain on the host and on the device (docs/data.md): the same
images, seeds and positions through `dataset.augment_on="host"` and `"device"`.

    python benchmarks/augment_grid.py [--out docs/augment_host_vs_device.png]

Rows: the source image (the procedural shapes world, 96 px), the host chain's output, the device
chain's output and |host − device| (white = 1 in [0, 1] units). The chain is configs/imagenet_nest.py's:
inception crop (min area 0.05), flip, RandAugment 2/9 ± 0.5 p 0.5, colour jitter 0.3, random
erasing 0.25. The erased boxes differ only in their noise, which the device draws from the step's key.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

import matplotlib

matplotlib.use("Agg")
import jax  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from etils import epath  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from nest_jax.data import preprocess  # noqa: E402
from nest_jax.data.device_augment import DeviceAugment  # noqa: E402
from nest_jax.data.shapes import ShapesTexturesSource  # noqa: E402
from nest_jax.data.train_stream import stack  # noqa: E402


def chain_config(size: int):
    """configs/imagenet_nest.py:tiny's dataset section at `size` px."""
    spec = importlib.util.spec_from_file_location("cfg", os.path.join(REPO, "configs", "imagenet_nest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ds = module.get_config("tiny").dataset
    ds.image_size = size
    return ds


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/augment_host_vs_device.png")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--columns", type=int, default=10)
    args = p.parse_args(argv)
    src = ShapesTexturesSource(
        variant="natural", num_classes=20, image_size=args.size, num_train=100, num_test=10, clutter=4
    )
    images = [src.get("train", i)["image"] for i in range(args.columns)]
    ds = chain_config(args.size)
    host_fn = preprocess.train_fn(ds)
    host = np.stack([host_fn(x, (0, 0, i)) for i, x in enumerate(images)])
    ds.augment_on = "device"
    device_fn = preprocess.train_fn(ds)
    batch = stack([device_fn(x, (0, 0, i)) for i, x in enumerate(images)])
    device = np.asarray(jax.jit(DeviceAugment.from_config(ds))(jax.random.key(0), batch["image"], batch["augment"]))
    mean, std = preprocess.mean_std(ds)

    def show(x):
        return np.clip(x * np.asarray(std) + np.asarray(mean), 0, 1)

    rows = [
        ("source", [np.asarray(x) for x in images]),
        ("host", [show(x) for x in host]),
        ("device", [show(x) for x in device]),
        ("|host − device|", [np.abs(show(a) - show(b)).max(-1) for a, b in zip(host, device)]),
    ]
    n = args.columns
    fig, axes = plt.subplots(len(rows), n, figsize=(1.3 * n, 1.4 * len(rows)))
    for r, (name, pictures) in enumerate(rows):
        for i, picture in enumerate(pictures):
            axes[r, i].imshow(picture, cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_ylabel(name, fontsize=8)
    for i in range(n):
        ops = [
            ("RA " + preprocess.randaugment.OPS[op]) if on else ""
            for op, on in zip(batch["augment"]["randaugment"]["op"][i], batch["augment"]["randaugment"]["apply"][i])
        ]
        axes[0, i].set_title("\n".join(o for o in ops if o) or "no RA op", fontsize=5)
    for ax in axes.ravel():
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    out = epath.Path(args.out)
    with out.open("wb") as f:
        fig.savefig(f, dpi=110)
    outside = np.ones(host.shape[:3], bool)
    for i, (t, b, left, r) in enumerate(batch["augment"]["erasing"]):
        outside[i, t:b, left:r] = False
    print(f"wrote {out}; max |host − device| outside the erased boxes: {np.abs(host - device)[outside].max():.2e}")


if __name__ == "__main__":
    main()
