"""The main job's recipe, tuned on a validation split and checked on the test split over seeds.

    python benchmarks/main_job_seeds.py --validation --seeds 0 1 2 [--set optimizer.lr=3e-3 ...]
    python benchmarks/main_job_seeds.py --test --seeds 0 1 2 3 4
    python benchmarks/main_job_seeds.py --check-preprocessing

--validation: the recipe in `--config` (default configs/digits_nest_tiny.py, plus `--set` overrides)
  trains in-process through `nest_jax.train.loop.train_and_evaluate` on the 1,347 digits training
  images minus a held-out validation set (a stratified 20%: 269 images; `--val-seed K` draws
  another split), and is evaluated on those. The test split is never read. Appends one JSON line
  per run to `--log` (default benchmarks/main_job_validation.jsonl).
--test: runs the real main job, `python -m nest_jax.main --config=... --workdir=<fresh> --config.seed=S`,
  in a subprocess per seed on one CPU device, and records the test top-1 the job reports, the wall
  time from launch to exit (imports and compile included), the process's CPU seconds and its
  training steps/s. Writes benchmarks/main_job_seeds.json and .md.
--check-preprocessing: compares this script's eval images for the TEST split with the real
  pipeline's (`nest_jax.data.eval_iterator`) to show the in-memory module preprocesses as the
  main job does (prints the largest absolute difference; labels must match exactly).

The in-memory data module (`ValidationDigits`) reproduces the real digits pipeline for the knobs
the recipe uses: v/16 ∈ [0, 1] images (8, 8, 1) → resized to `image_size` with `resize_method`
(jax.image.resize; bilinear/bicubic with half-pixel centres as tf.image.resize; antialiasing only
acts when downscaling, and 8 px digits are only upscaled) → clipped to [0, 1] → optional CIFAR
pad-and-crop (zero-pad `crop_padding` pixels per side at the resized scale, uniform random crop
back) → normalized with the digits mean/std (0.3053, 0.3760). Every epoch is a full permutation
seeded by (seed, epoch); batches run across epoch boundaries, as in the real train stream. The
random draws differ from the real pipeline's (NumPy instead of stateless TF/grain keys), which is
why validation figures are averaged over seeds.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import importlib.util
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
DIGITS_MEAN, DIGITS_STD = 0.3053, 0.3760


# ---------------------------------------------------------------------------- config
def load_config(path: str, overrides: list[str]):
    """`get_config()` of a config file, then `a.b.c=value` overrides (values: Python literals)."""
    spec = importlib.util.spec_from_file_location("main_job_config", os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for item in overrides:
        key, _, text = item.partition("=")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text  # a bare string such as bicubic
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        if isinstance(node, dict):
            node[leaf] = value
        else:
            with node.ignore_type():
                node[leaf] = value
    return config


# ---------------------------------------------------------------------------- data
class Info(NamedTuple):
    name: str
    num_classes: int
    num_train: int
    num_eval: int
    image_shape: tuple


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices): `fraction` of each class held out, chosen at random."""
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        val.append(rng.choice(idx, round(fraction * len(idx)), replace=False))
    val = np.sort(np.concatenate(val))
    return np.setdiff1d(np.arange(len(labels)), val), val


def resize_01(images: np.ndarray, size: int, method: str) -> np.ndarray:
    """(n, 8, 8, c) in [0, 1] → (n, size, size, c) in [0, 1], as the real pipeline resizes."""
    import jax

    if images.shape[1] == size:
        return images.astype(np.float32)
    out = jax.image.resize(images, (images.shape[0], size, size, images.shape[3]), method=method)
    return np.clip(np.asarray(out, np.float32), 0.0, 1.0)


class ValidationDigits:
    """The `nest_jax.data` API (get_info, train_iterator, eval_iterator) over in-memory arrays:
    train on `train`, evaluate on `evaluation` ((images (n, 8, 8, 1) in [0, 1], labels))."""

    def __init__(self, train: tuple[np.ndarray, np.ndarray], evaluation: tuple[np.ndarray, np.ndarray]):
        self.train, self.evaluation = train, evaluation
        self.batch_times: list[float] = []  # host time at which each train batch was handed out

    def _prepared(self, ds_cfg, images: np.ndarray) -> np.ndarray:
        x = resize_01(images, int(ds_cfg.image_size), ds_cfg.get("resize_method", "bilinear"))
        if int(ds_cfg.num_channels) != x.shape[-1]:
            x = np.repeat(x, int(ds_cfg.num_channels), axis=-1)
        return x

    @staticmethod
    def _normalize(x: np.ndarray) -> np.ndarray:
        return ((x - DIGITS_MEAN) / DIGITS_STD).astype(np.float32)

    def get_info(self, ds_cfg) -> Info:
        s, c = int(ds_cfg.image_size), int(ds_cfg.num_channels)
        return Info("digits_validation", 10, len(self.train[1]), len(self.evaluation[1]), (s, s, c))

    def train_iterator(self, ds_cfg, *, global_batch_size, seed, start_step=0, process_index=None, process_count=None):
        if process_count not in (None, 1):
            raise ValueError("the validation module serves one process")
        aug = ds_cfg.augment
        if (
            aug.get("inception_crop")
            or aug.get("flip")
            or aug.get("color_jitter", 0)
            or aug.get("random_erasing", 0)
            or aug["randaugment"]["layers"]
        ):
            raise ValueError("ValidationDigits implements only cifar_crop (pad-and-crop) augmentation")
        images = self._prepared(ds_cfg, self.train[0])
        labels = self.train[1]
        n, size = len(labels), images.shape[1]
        pad = int(aug.get("crop_padding", 2)) if aug.get("cifar_crop", False) else 0
        if pad:
            images = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        order = np.empty(0, np.int64)
        epoch = 0
        step = 0
        while True:
            while len(order) < global_batch_size:  # batches run across epoch boundaries
                order = np.concatenate([order, np.random.default_rng([seed, epoch]).permutation(n)])
                epoch += 1
            idx, order = order[:global_batch_size], order[global_batch_size:]
            batch = images[idx]
            if pad:
                rng = np.random.default_rng([seed, 1_000_003, step])
                top, left = rng.integers(0, 2 * pad + 1, (2, len(idx)))
                batch = np.stack([b[t : t + size, l : l + size] for b, t, l in zip(batch, top, left)])
            if step >= start_step:
                self.batch_times.append(time.perf_counter())
                yield {"image": self._normalize(batch), "label": labels[idx]}
            step += 1

    def eval_iterator(self, ds_cfg, *, global_batch_size, process_index=None, process_count=None):
        images = self._normalize(self._prepared(ds_cfg, self.evaluation[0]))
        labels = self.evaluation[1]
        n = len(labels)
        steps = -(-n // global_batch_size)
        pad = steps * global_batch_size - n
        images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], np.float32)])
        labels = np.concatenate([labels, np.zeros(pad, np.int32)])
        mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
        for s in range(steps):
            sl = slice(s * global_batch_size, (s + 1) * global_batch_size)
            yield {"image": images[sl], "label": labels[sl], "mask": mask[sl]}


def digits_arrays():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()  # the same fixed split as nest_jax.data.digits
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    labels = digits.target.astype(np.int32)
    x_tr, x_te, y_tr, y_te = train_test_split(images, labels, test_size=0.25, stratify=labels, random_state=0)
    return (x_tr, y_tr), (x_te, y_te)


# ---------------------------------------------------------------------------- validation
def run_validation(args) -> None:
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    import jax

    from nest_jax.train.loop import train_and_evaluate

    (x_tr, y_tr), _ = digits_arrays()
    keep, val = stratified_split(y_tr, args.val_fraction, args.val_seed)
    for seed in args.seeds:
        config = load_config(args.config, args.set)
        config.seed = seed
        config.train.log_every_steps = 10_000  # the result only; no per-interval host syncs
        data = ValidationDigits((x_tr[keep], y_tr[keep]), (x_tr[val], y_tr[val]))
        workdir = tempfile.mkdtemp(prefix="main_job_val_")
        t0 = time.perf_counter()
        try:
            result = train_and_evaluate(config, workdir, data=data)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        wall = time.perf_counter() - t0
        t = data.batch_times
        # steps/s over the second half of training (compile and warm-up excluded)
        half = len(t) // 2
        sps = (len(t) - 1 - half) / (t[-1] - t[half]) if len(t) > 4 else None
        record = {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "tag": args.tag,
            "config": args.config,
            "set": args.set,
            "seed": seed,
            "val_images": len(val),
            "train_images": len(keep),
            "steps": int(result["step"]),
            "val_top1": result["eval_top1"],
            "val_loss": result["eval_loss"],
            "val_errors": round((1 - result["eval_top1"]) * len(val)),
            "val_ema_top1": result.get("eval_ema_top1"),
            "val_ema_loss": result.get("eval_ema_loss"),
            "wall_s": round(wall, 1),
            "steps_per_s": round(sps, 2) if sps else None,
            "load_avg": os.getloadavg()[0],
            "devices": jax.device_count(),
        }
        print("VALIDATION", json.dumps(record), flush=True)
        with open(args.log, "a") as f:
            f.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------------------- test
def last_float(pattern: str, text: str) -> float | None:
    found = re.findall(pattern + r"\W{1,3}([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)", text)
    return float(found[-1]) if found else None


def run_test(args) -> None:
    from common import cpu_model

    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    runs = []
    for seed in args.seeds:
        workdir = tempfile.mkdtemp(prefix=f"main_job_seed{seed}_")
        cmd = [
            sys.executable,
            "-m",
            "nest_jax.main",
            f"--config={args.config}",
            f"--workdir={workdir}",
            f"--config.seed={seed}",
            *[f"--config.{s}" for s in args.set],
        ]
        load_before = os.getloadavg()[0]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        shutil.rmtree(workdir, ignore_errors=True)
        out = proc.stdout + "\n" + proc.stderr
        if proc.returncode:
            sys.exit(f"seed {seed} failed (exit {proc.returncode}):\n{out[-4000:]}")
        top1 = last_float(r"eval_top1'?", out)
        run = {
            "seed": seed,
            "test_top1": top1,
            "test_errors": round((1 - top1) * 450) if top1 is not None else None,
            "test_ema_top1": last_float(r"eval_ema_top1'?", out),
            "wall_s": round(wall, 1),
            "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
            "steps_per_s": last_float(r"steps_per_sec", out),
            "steps": last_float(r"'step'", out),
            "load_avg_before": load_before,
            "load_avg_after": os.getloadavg()[0],
            "command": "python " + " ".join(cmd[1:]).replace(workdir, "DIR"),
        }
        runs.append(run)
        print("TEST", json.dumps(run), flush=True)
        write_test(args, runs, cpu_model())


def write_test(args, runs: list[dict], machine: str) -> None:
    top1 = [r["test_top1"] for r in runs]
    wall = [r["wall_s"] for r in runs]
    summary = {
        "date": datetime.date.today().isoformat(),
        "machine": machine,
        "cores": os.cpu_count(),
        "config": args.config,
        "overrides": args.set,
        "seeds": [r["seed"] for r in runs],
        "top1_mean": statistics.mean(top1),
        "top1_min": min(top1),
        "top1_max": max(top1),
        "all_at_least_99_5": all(t >= 0.995 for t in top1),
        "wall_s_mean": statistics.mean(wall),
        "wall_s_max": max(wall),
        "runs": runs,
    }
    with open(args.out + ".json", "w") as f:
        json.dump(summary, f, indent=1)
    lines = [
        f"# Main job over seeds ({summary['date']}, {machine}, {os.cpu_count()} cores)",
        "",
        (
            f"`python benchmarks/main_job_seeds.py --test --seeds {' '.join(map(str, summary['seeds']))}`"
            + (f" with `{' '.join(args.set)}`" if args.set else "")
        ),
        "",
        "| seed | test top-1 | errors / 450 | wall s | CPU s | steps/s | load before → after |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['seed']} | {100 * r['test_top1']:.2f}% | {r['test_errors']} | {r['wall_s']} | "
            f"{r['cpu_s']} | {r['steps_per_s']} | {r['load_avg_before']:.1f} → {r['load_avg_after']:.1f} |"
        )
    lines += [
        "",
        (
            f"mean {100 * summary['top1_mean']:.2f}%, min {100 * summary['top1_min']:.2f}%, "
            f"max {100 * summary['top1_max']:.2f}%; wall mean {summary['wall_s_mean']:.1f} s, "
            f"max {summary['wall_s_max']:.1f} s (launch to exit: imports, compile, training, eval)."
        ),
    ]
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------- preprocessing check
def check_preprocessing(args) -> None:
    import nest_jax.data as real

    config = load_config(args.config, args.set)
    (x_tr, y_tr), (x_te, y_te) = digits_arrays()
    mine = ValidationDigits((x_tr, y_tr), (x_te, y_te))
    bs = int(config.train.eval_batch_size)
    worst, count = 0.0, 0
    for a, b in zip(
        mine.eval_iterator(config.dataset, global_batch_size=bs),
        real.eval_iterator(config.dataset, global_batch_size=bs, process_index=0, process_count=1),
    ):
        assert np.array_equal(a["label"], b["label"]) and np.array_equal(a["mask"], b["mask"])
        worst = max(worst, float(np.max(np.abs(a["image"] - b["image"]))))
        count += int(a["mask"].sum())
    print(f"eval images compared: {count}; largest |difference| after normalization: {worst:.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--validation", action="store_true")
    mode.add_argument("--test", action="store_true")
    mode.add_argument("--check-preprocessing", action="store_true")
    ap.add_argument("--config", default="configs/digits_nest_tiny.py")
    ap.add_argument("--set", nargs="*", default=[], help="overrides a.b=value (validation and test)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--val-fraction", type=float, default=0.2)
    ap.add_argument("--val-seed", type=int, default=0)
    ap.add_argument("--tag", default="")
    ap.add_argument("--log", default=os.path.join(REPO, "benchmarks", "main_job_validation.jsonl"))
    ap.add_argument("--out", default=os.path.join(REPO, "benchmarks", "main_job_seeds"))
    args = ap.parse_args()
    if args.validation:
        run_validation(args)
    elif args.test:
        run_test(args)
    else:
        check_preprocessing(args)


if __name__ == "__main__":
    main()
