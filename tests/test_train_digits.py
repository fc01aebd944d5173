"""The README's main job, shortened: `python -m nest_jax.main` on digits learns, resumes, evaluates,
and a normal run's console carries no TensorFlow / backend-probing noise."""

import ast
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What a plain run must not print: TensorFlow's C++ start-up lines, jax's TPU/GPU backend probing.
NOISE = re.compile(
    r"tensorflow|oneDNN|absl::InitializeLog|port\.cc|libtpu|backend 'tpu'|xla_bridge|"
    r"TPU may be present|NVIDIA GPU may be present|cuda",
    re.IGNORECASE,
)


# Installed through PYTHONPATH as `sitecustomize`: TensorFlow is hidden from the import system as if
# it were not installed (the default install has none), so any `import tensorflow` fails the job.
HIDE_TENSORFLOW = """
import importlib.machinery, sys


class _NoTensorFlow(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.partition(".")[0] == "tensorflow":
            return None
        return super().find_spec(name, path, target)


sys.meta_path[:] = [_NoTensorFlow if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
"""


def _main(*args, timeout=1500, hide_tf_dir=None):
    # As a user runs it: main.py itself must pick the CPU (no accelerator plugin here) and quiet the
    # libraries, so the suite's JAX_PLATFORMS / TF_CPP_MIN_LOG_LEVEL are not passed on.
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "TF_CPP_MIN_LOG_LEVEL")}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    if hide_tf_dir is not None:
        (hide_tf_dir / "sitecustomize.py").write_text(HIDE_TENSORFLOW)
        env["PYTHONPATH"] = os.pathsep.join([str(hide_tf_dir), str(REPO), env.get("PYTHONPATH", "")])
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "nest_jax.main", "--config=configs/digits_nest_tiny.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    match = re.search(r"final metrics: (\{.*\})", proc.stdout)
    assert match, proc.stdout[-2000:]
    noise = [line for line in (proc.stdout + proc.stderr).splitlines() if NOISE.search(line)]
    assert not noise, "\n".join(noise[:10])
    return ast.literal_eval(match.group(1)), time.time() - t0  # a dict literal written by main.py


def test_main_trains_digits_nest_end_to_end(tmp_path):
    # 60 steps (~3 epochs) of the default config, with TensorFlow not importable (the default install
    # has none): chance is 10%; measured 92.44% (416/450, seed 0) with the 3-level, affine-augmented recipe.
    hide = tmp_path / "no_tf"
    hide.mkdir()
    workdir = tmp_path / "work"
    metrics, seconds = _main(
        "--config.train.num_train_steps=60",
        "--config.train.checkpoint_every_steps=30",
        f"--workdir={workdir}",
        hide_tf_dir=hide,
    )
    print(f"digits NesT, 60 steps: top-1 {metrics['eval_top1']:.4f} in {seconds:.0f} s (compile included)")
    assert metrics["step"] == 60 and metrics["eval_count"] == 450
    assert metrics["eval_top1"] > 0.88  # a margin for other CPUs' float rounding
    assert sorted(p for p in os.listdir(workdir / "checkpoints") if p.isdigit()) == ["30", "60"]
    # --mode=eval restores the latest checkpoint and reproduces the final evaluation.
    again, _ = _main("--mode=eval", "--config.train.num_train_steps=60", f"--workdir={workdir}")
    assert again["step"] == 60
    assert abs(again["eval_top1"] - metrics["eval_top1"]) < 1e-6
