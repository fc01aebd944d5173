"""The main job's recipe, tuned on a validation split and checked on the test split over seeds.

    python benchmarks/main_job_seeds.py --validation --seeds 0 1 2 [--set optimizer.lr=3e-3 ...]
    python benchmarks/main_job_seeds.py --test --seeds 0 1 2 3 4

--validation: the recipe in `--config` (default configs/digits_nest_tiny.py, plus `--set` overrides)
  trains in-process through `nest_jax.train.loop.train_and_evaluate` on the 1,347 digits training
  images minus a held-out validation set (a stratified 20%: 269 images; `--val-seed K` draws
  another split), and is evaluated on those. The test split is never read. Appends one JSON line
  per run to `--log` (default benchmarks/main_job_validation.jsonl).
--test: runs the real main job, `python -m nest_jax.main --config=... --workdir=<fresh> --config.seed=S`,
  in a subprocess per seed on one CPU device, and records the test top-1 the job reports, the wall
  time from launch to exit (imports and compile included), the process's CPU seconds and its
  training steps/s. Writes benchmarks/main_job_seeds.json and .md.

The validation data module (`ValidationDigits`) is the real pipeline (`nest_jax.data.train_stream` /
`eval_stream`: per-epoch permutations, every augmentation, preprocessing) over a source whose train
split holds the kept training images and whose eval split holds the held-out ones.
"""

from __future__ import annotations

import argparse
import datetime
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

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------- config
def load_config(path: str, overrides: list[str]):
    """`get_config()` of a config file, then `a.b.c=value` overrides, read exactly as
    `python -m nest_jax.main --config.a.b.c=value` reads them (the --test runs pass them so)."""
    from nest_jax import cli_config
    from nest_jax.overrides import override

    config = cli_config.load_config(os.path.join(REPO, path))
    override(config, overrides)
    return config


# ---------------------------------------------------------------------------- data
def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices): `fraction` of each class held out, chosen at random."""
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        val.append(rng.choice(idx, round(fraction * len(idx)), replace=False))
    val = np.sort(np.concatenate(val))
    return np.setdiff1d(np.arange(len(labels)), val), val


class HeldOutDigits:
    """A digits source whose "train" split is `train` and whose "test" split is `evaluation`
    ((images (n, 8, 8, 1) in [0, 1], labels)): the held-out validation images stand in for the
    test split, everything else is the real pipeline."""

    name, num_classes = "digits", 10

    def __init__(self, train: tuple[np.ndarray, np.ndarray], evaluation: tuple[np.ndarray, np.ndarray]):
        self.splits = {"train": train, "test": evaluation}

    def num_examples(self, split: str) -> int:
        return len(self.splits[split][1])

    def lookup(self, split: str):
        from nest_jax.data.digits import ArrayRecords

        return ArrayRecords(*self.splits[split])


class ValidationDigits:
    """The `nest_jax.data` API (get_info, train_iterator, eval_iterator) of the real pipeline
    (`train_stream` / `eval_stream`: permutations, augmentation, preprocessing) over a
    `HeldOutDigits` source; records when each train batch is handed out."""

    def __init__(self, train: tuple[np.ndarray, np.ndarray], evaluation: tuple[np.ndarray, np.ndarray]):
        self.source = HeldOutDigits(train, evaluation)
        self.batch_times: list[float] = []  # host time at which each train batch was handed out

    def get_info(self, ds_cfg):
        from nest_jax.data import DataInfo

        s, c = int(ds_cfg.image_size), int(ds_cfg.num_channels)
        return DataInfo(
            "digits_validation", 10, self.source.num_examples("train"), self.source.num_examples("test"), (s, s, c)
        )

    def train_iterator(self, ds_cfg, *, global_batch_size, seed, start_step=0, process_index=None, process_count=None):
        from nest_jax.data import train_stream

        if process_count not in (None, 1):
            raise ValueError("the validation module serves one process")
        it = train_stream.train_iterator(
            self.source, ds_cfg, local_batch=global_batch_size, seed=seed, start_step=start_step,
            process_index=0, process_count=1,
        )  # fmt: skip
        return _Timed(it, self.batch_times)

    def eval_iterator(self, ds_cfg, *, global_batch_size, split=None, process_index=None, process_count=None):
        from nest_jax.data import eval_stream

        return eval_stream.eval_iterator(
            self.source, ds_cfg, split="test", global_batch_size=global_batch_size, process_index=0, process_count=1
        )


class _Timed:
    """Wraps a train iterator (keeping get_state/set_state) and notes when each batch leaves."""

    def __init__(self, it, times: list[float]):
        self.it, self.times = it, times

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.it)
        self.times.append(time.perf_counter())
        return batch

    def __getattr__(self, name):
        return getattr(self.it, name)


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
            "steps_per_s": float(rates[-1]) if (rates := re.findall(r"([0-9]*\.?[0-9]+) steps/s", out)) else None,
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
            f"{r['cpu_s']} | {r['steps_per_s'] or '—'} | {r['load_avg_before']:.1f} → {r['load_avg_after']:.1f} |"
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--validation", action="store_true")
    mode.add_argument("--test", action="store_true")
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
    else:
        run_test(args)


if __name__ == "__main__":
    main()
