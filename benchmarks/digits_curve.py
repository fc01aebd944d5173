"""The default main job end to end: test accuracy vs wall time of `configs/digits_nest_tiny.py`.

    python benchmarks/digits_curve.py --eval-every 21 --out benchmarks/digits_curve

Runs the real CLI (`python -m nest_jax.main --config=configs/digits_nest_tiny.py`) in a subprocess
on one CPU device, with one extra override: an evaluation every `--eval-every` steps (21 steps =
one epoch of 1,347 images at batch 64), so the curve has points. Those evaluations cost time the
default job does not spend (it evaluates once, at the end); the script reports both the total wall
time of this run and the time at which the final accuracy was written.

The curve is read back from the TensorBoard event files the trainer writes into the workdir (clu's
summary writer): each scalar carries its step and its wall-clock time. Times are measured from the
moment the subprocess was started, so they include Python/JAX import, data loading and XLA compile.
On a shared machine the wall time mostly measures the other users; the CPU time the training
process consumed (`cpu_s`, all threads) divided by the core count is a lower bound on its wall time
on the same machine when idle (`quiet_wall_lower_bound_s`). Writes `<out>.json` and `<out>.png`.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cpu_model  # noqa: E402


def read_scalars(workdir: str) -> dict[str, list[tuple[int, float, float]]]:
    """tag -> [(step, wall_time, value)] from every TensorBoard event file under `workdir`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list] = {}
    for path in sorted(glob.glob(os.path.join(workdir, "**", "events.out.tfevents.*"), recursive=True)):
        acc = EventAccumulator(path, size_guidance={"tensors": 0, "scalars": 0})
        acc.Reload()
        tags = acc.Tags()
        # clu writes scalars as tf.summary tensors (TF2); older writers use the scalars plugin.
        for tag in tags.get("tensors", []):
            import tensorflow as tf

            out.setdefault(tag, []).extend(
                (e.step, e.wall_time, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)
            )
        for tag in tags.get("scalars", []):
            out.setdefault(tag, []).extend((e.step, e.wall_time, e.value) for e in acc.Scalars(tag))
    return {k: sorted(v) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/digits_nest_tiny.py")
    ap.add_argument("--eval-every", type=int, default=21, help="steps between evaluations (21 = 1 epoch)")
    ap.add_argument("--workdir", default=None, help="default: a fresh temporary directory")
    ap.add_argument("--out", default=os.path.join(REPO, "benchmarks", "digits_curve"))
    ap.add_argument("--extra", nargs="*", default=[], help="more --config.x=y overrides")
    args = ap.parse_args()

    workdir = args.workdir or tempfile.mkdtemp(prefix="digits_curve_")
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    cmd = [
        sys.executable,
        "-m",
        "nest_jax.main",
        f"--config={args.config}",
        f"--workdir={workdir}",
        f"--config.train.eval_every_steps={args.eval_every}",
        *args.extra,
    ]
    print("running:", " ".join(cmd), flush=True)
    t_start = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    total = time.time() - t_start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = usage.ru_utime + usage.ru_stime  # the training process's CPU time, all threads
    if proc.returncode:
        sys.exit(f"training failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    final = re.search(r"final metrics: (\{.*\})", proc.stdout)

    scalars = read_scalars(workdir)
    top1 = scalars["eval_top1"]
    curve = [{"step": s, "seconds": round(w - t_start, 2), "eval_top1": v} for s, w, v in top1]
    loss = [{"step": s, "seconds": round(w - t_start, 2), "train_loss": v} for s, w, v in scalars.get("train_loss", [])]
    first_99 = next((p for p in curve if p["eval_top1"] >= 0.99), None)
    record = {
        "date": datetime.date.today().isoformat(),
        "machine": cpu_model(),
        "cores": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "command": " ".join(cmd[1:]),
        "config": args.config,
        "final_top1": curve[-1]["eval_top1"],
        "final_step": curve[-1]["step"],
        "final_written_at_s": curve[-1]["seconds"],
        "total_wall_s": round(total, 2),
        "cpu_s": round(cpu_s, 1),
        "quiet_wall_lower_bound_s": round(cpu_s / (os.cpu_count() or 1), 1),
        "first_step_at_99": first_99,
        "final_metrics_line": final.group(1) if final else None,
        "curve": curve,
        "train_loss": loss,
    }
    with open(args.out + ".json", "w") as f:
        json.dump(record, f, indent=1)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(
        [p["seconds"] for p in curve],
        [100 * p["eval_top1"] for p in curve],
        "o-",
        ms=3,
        label="test top-1 (450 digits)",
    )
    ax.axhline(99, color="gray", ls="--", lw=0.8, label="99%")
    ax.axvline(300, color="red", ls=":", lw=0.8, label="5 min")
    ax.set_xlabel("wall time since launch (s, imports + compile included)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(max(0, min(100 * p["eval_top1"] for p in curve) - 5), 100.5)
    ax.set_title(
        f"{os.path.basename(args.config)}: {100 * record['final_top1']:.2f}% at {record['final_written_at_s']:.0f} s"
    )
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(args.out + ".png", dpi=120)
    print(json.dumps({k: v for k, v in record.items() if k not in ("curve", "train_loss")}, indent=1))


if __name__ == "__main__":
    main()
