"""The README's main job, shortened: `python -m nest_jax.main` on digits learns, resumes, evaluates."""
import ast
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _main(*args, timeout=1500):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "nest_jax.main", "--config=configs/digits_nest_tiny.py", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    match = re.search(r"final metrics: (\{.*\})", proc.stdout)
    assert match, proc.stdout[-2000:]
    return ast.literal_eval(match.group(1)), time.time() - t0  # a dict literal written by main.py


def test_main_trains_digits_nest_end_to_end(tmp_path):
    # 60 steps (~3 epochs) of the default config: chance is 10%.
    metrics, seconds = _main("--config.train.num_train_steps=60", "--config.train.checkpoint_every_steps=30",
                             f"--workdir={tmp_path}")
    print(f"digits NesT, 60 steps: top-1 {metrics['eval_top1']:.4f} in {seconds:.0f} s (compile included)")
    assert metrics["step"] == 60 and metrics["eval_count"] == 450
    assert metrics["eval_top1"] > 0.7
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["30", "60"]
    # --mode=eval restores the latest checkpoint and reproduces the final evaluation.
    again, _ = _main("--mode=eval", "--config.train.num_train_steps=60", f"--workdir={tmp_path}")
    assert again["step"] == 60
    assert abs(again["eval_top1"] - metrics["eval_top1"]) < 1e-6
