"""Corruption throughput: nest_jax (batched, jitted JAX) vs the `imagecorruptions` package (NumPy /
OpenCV / Pillow, one image at a time) on the same images, images/s per corruption at severity 3.

    python benchmarks/corruptions.py --batch 64 --size 224 [--package-images 8] [--json PATH]

nest_jax: one warm-up call (compilation, not timed), then the median of `--iters` calls on the
whole batch. Package: one warm-up image, then the images/s over `--package-images` images (the
package is per image, so a subset gives its rate; its slow corruptions — glass blur takes seconds
per 224-px image — would otherwise dominate the run). Writes JSON and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.common import cpu_model, median  # noqa: E402
from nest_jax.analysis import corruptions as C  # noqa: E402


def test_images(n: int, size: int) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    a = gaussian_filter(np.random.default_rng(0).random((n, size, size, 3)), (0, 3, 3, 0))
    lo, hi = a.min(axis=(1, 2, 3), keepdims=True), a.max(axis=(1, 2, 3), keepdims=True)
    return np.round((0.05 + 0.9 * (a - lo) / (hi - lo)) * 255).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--severity", type=int, default=3)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--package-images", type=int, default=8)
    ap.add_argument("--only", default="", help="comma-separated corruption names")
    ap.add_argument("--json", default=os.path.join(REPO, "benchmarks", "corruptions.json"))
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from _imagecorruptions import load

    ic = load()
    imgs = test_images(args.batch, args.size)
    x = jax.device_put(imgs.astype(np.float32) / 255.0)
    names = [n for n in C.CORRUPTIONS if not args.only or n in args.only.split(",")]
    rows = []
    for name in names:
        key = jax.random.key(0)
        t0 = time.perf_counter()
        jax.block_until_ready(C.corrupt(name, key, x, args.severity))
        compile_s = time.perf_counter() - t0
        times = []
        for i in range(args.iters):
            t0 = time.perf_counter()
            jax.block_until_ready(C.corrupt(name, jax.random.key(i + 1), x, args.severity))
            times.append(time.perf_counter() - t0)
        ours = args.batch / median(times)
        theirs = None
        if ic is not None:
            k = min(args.package_images, args.batch)
            ic.corrupt(imgs[0], severity=args.severity, corruption_name=name)
            t0 = time.perf_counter()
            for im in imgs[:k]:
                ic.corrupt(im, severity=args.severity, corruption_name=name)
            theirs = k / (time.perf_counter() - t0)
        rows.append(
            dict(corruption=name, nest_jax_images_per_s=ours, package_images_per_s=theirs, first_call_s=compile_s)
        )
        print(
            f"{name:18s} nest_jax {ours:9.1f} img/s   package {theirs or float('nan'):9.1f} img/s   "
            f"(first call {compile_s:.1f} s)",
            flush=True,
        )
    meta = dict(
        command=" ".join(sys.argv),
        batch=args.batch,
        size=args.size,
        severity=args.severity,
        device=str(jax.devices()[0]),
        cpu=cpu_model(),
        jax=jax.__version__,
        date=time.strftime("%Y-%m-%d"),
    )
    with open(args.json, "w") as f:
        json.dump(dict(meta, results=rows), f, indent=1)
    print("\n| corruption | nest_jax img/s | imagecorruptions img/s | speed-up |\n|---|---:|---:|---:|")
    for r in rows:
        p = r["package_images_per_s"]
        print(
            f"| {r['corruption']} | {r['nest_jax_images_per_s']:.1f} | {p:.1f} | "
            f"{r['nest_jax_images_per_s'] / p:.1f}× |"
            if p
            else f"| {r['corruption']} | {r['nest_jax_images_per_s']:.1f} | — | — |"
        )


if __name__ == "__main__":
    main()
