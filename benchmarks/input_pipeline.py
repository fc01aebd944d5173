"""Input-pipeline throughput alone: images/s out of `nest_jax.data.train_iterator`, no model.

    python benchmarks/input_pipeline.py --label after --workers 0 1 2

Cases (each on a synthetic image folder of `--images` JPEGs of 256–500 px per side, written by
this script into a temporary directory, 4 classes):
  folder_ra224     resize to 224 × 224, flip, RandAugment (2 layers, magnitude 9 ± 0.5, p 0.5) —
                   the chain the TensorFlow pipeline could run (its inception crop lost the static
                   channel count, so the ImageNet chain did not run there).
  folder_nest224   configs/imagenet_nest.py's full chain: inception crop (min area 0.05) to 224,
                   flip, RandAugment 2/9 ± 0.5 p 0.5, colour jitter 0.3, random erasing 0.25.
  folder_nest224_draft  the same chain with dataset.jpeg_draft: each JPEG decoded at 1/2, 1/4 or 1/8
                   scale when the sampled crop keeps 224 px there (same crop boxes).
  folder_nest224_device  the same chain with dataset.augment_on="device": the host decodes, crops and
                   flips, and sends uint8 crops with the random choices of RandAugment, jitter and
                   erasing, which the train step applies (its cost: benchmarks/device_augment.py).
  folder_nest224_draft_device  both.
  digits_plain     configs/digits_nest_tiny.py's dataset (8×8 → 32 px, normalize).
Each case is timed for every `--workers` count (`config.dataset.num_workers`: 0 = decode and
augment in the calling process, n > 0 = n worker processes). The first `--warmup` batches
(start-up, worker launch) are not timed. Recorded per figure: wall-clock images/s, CPU-seconds
per image summed over the process and its workers (psutil; on a shared machine the steadier
figure: one fully available core delivers 1000 / (CPU ms per image) images/s), and the load.
Results are merged into `--json` under `--label` (e.g. "before_tf", "after").
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cpu_model  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str, arg: str | None = None):
    spec = importlib.util.spec_from_file_location("cfg", os.path.join(REPO, "configs", name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def write_folder(root: str, num_images: int, seed: int = 0) -> None:
    """`root/train/c{k}/{i}.jpg`: smooth random images (JPEG-compressible like photos) of random
    size in [256, 500] per side, quality 90."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(num_images):
        h, w = rng.integers(256, 501, size=2)
        small = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((int(w), int(h)), Image.BILINEAR)
        d = os.path.join(root, "train", f"c{i % 4}")
        os.makedirs(d, exist_ok=True)
        image.save(os.path.join(d, f"{i}.jpg"), quality=90)
    for k in range(4):  # an eval split with one image per class (the source wants both)
        d = os.path.join(root, "val", f"c{k}")
        os.makedirs(d, exist_ok=True)
        shutil.copy(os.path.join(root, "train", f"c{k}", f"{k}.jpg"), d)


def folder_cfg(root: str, full_chain: bool, draft: bool = False, device: bool = False):
    ds = load_config("image_folder_example.py").dataset
    ds.data_dir = root
    ds.jpeg_draft = draft
    ds.augment_on = "device" if device else "host"
    if not full_chain:
        ds.augment.inception_crop = False
        ds.augment.random_erasing = 0.0
    else:
        ds.augment.color_jitter = 0.3  # imagenet_nest's chain (the folder example has no jitter)
    return ds


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and all its live descendants (the workers)."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


def time_iterator(ds_cfg, batch: int, batches: int, warmup: int, workers: int) -> dict:
    """Wall-clock images/s, and CPU-seconds per image over the same window (all processes):
    on a loaded machine the CPU figure is the steadier one — 1 / it is what one fully
    available core delivers."""
    from nest_jax import data

    if "num_workers" in ds_cfg or workers:
        ds_cfg.num_workers = workers
    t0 = time.perf_counter()
    it = data.train_iterator(ds_cfg, global_batch_size=batch, seed=0, process_index=0, process_count=1)
    for _ in range(warmup):
        next(it)
    t1, c1 = time.perf_counter(), cpu_seconds()
    for _ in range(batches):
        b = next(it)
    t2, c2 = time.perf_counter(), cpu_seconds()
    load = os.getloadavg()[0]
    if hasattr(it, "close"):
        it.close()
    del it
    n = batches * batch
    return dict(
        img_s=round(n / (t2 - t1), 1),
        cpu_ms_per_img=round((c2 - c1) / n * 1e3, 2),
        img_per_cpu_s=round(n / max(c2 - c1, 1e-9), 1),
        startup_s=round(t1 - t0, 2),
        shape=list(b["image"].shape),
        load_1min=round(load, 2),
        workers=workers,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label", default="after")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument(
        "--cases",
        nargs="+",
        default=[
            "folder_ra224",
            "folder_nest224",
            "folder_nest224_draft",
            "folder_nest224_device",
            "folder_nest224_draft_device",
            "digits_plain",
        ],
    )
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", default=os.path.join(REPO, "benchmarks", "input_pipeline.json"))
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="bench_folder_")
    write_folder(root, args.images)
    results = {}
    try:
        for case in args.cases:
            for w in args.workers:
                if case == "digits_plain":
                    cfg = load_config("digits_nest_tiny.py").dataset
                    cfg.augment.affine = dict(degrees=0.0, translate=0.0, scale=1.0)  # plain: resize only
                else:
                    cfg = folder_cfg(
                        root,
                        full_chain=case.startswith("folder_nest224"),
                        draft="_draft" in case,
                        device=case.endswith("_device"),
                    )
                try:
                    r = time_iterator(cfg, args.batch, args.batches, args.warmup, w)
                except Exception as e:  # e.g. the TF pipeline's failing inception-crop chain
                    r = dict(error=f"{type(e).__name__}: {str(e)[:300]}", workers=w)
                results[f"{case}/workers={w}"] = r
                print(case, r, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("| case | workers | images/s (wall) | CPU ms / image | start-up (s) | load (1 min) |")
    print("|---|---|---|---|---|---|")
    for k, r in results.items():
        if "error" in r:
            print(f"| {k.split('/')[0]} | {r['workers']} | error: {r['error'][:60]} | | | |")
        else:
            print(
                f"| {k.split('/')[0]} | {r['workers']} | {r['img_s']:.0f} | "
                f"{r['cpu_ms_per_img']:.1f} | {r['startup_s']:.1f} | {r['load_1min']:.1f} |"
            )
    meta = dict(
        date=datetime.date.today().isoformat(),
        machine=cpu_model(),
        cores=os.cpu_count(),
        images=args.images,
        batch=args.batch,
        batches=args.batches,
        command=" ".join(["python"] + sys.argv),
        results=results,
    )
    merged = {}
    if os.path.exists(args.json):
        with open(args.json) as f:
            merged = json.load(f)
        if "results" in merged and "runs" not in merged:  # the older single-run format
            merged = {"runs": {"before_tf_digits_cifar": merged}}
    merged.setdefault("runs", {})[args.label] = meta
    with open(args.json, "w") as f:
        json.dump(merged, f, indent=1)


if __name__ == "__main__":
    main()
