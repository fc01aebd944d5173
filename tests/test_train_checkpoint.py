"""Checkpoints of the training loop: exact resume, atomicity, non-finite stop, SIGTERM, multi-process."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from nest_jax.errors import PREEMPTED_EXIT_CODE
from nest_jax.train.checkpoint import Checkpointer
from nest_jax.train.loop import train_and_evaluate
from nest_jax.train.sharding import make_mesh, path_str
from nest_jax.train.trainer import make_trainer
from tests._train_helpers import SyntheticData, tiny_config

REPO = Path(__file__).resolve().parents[1]


def _restore(workdir, config, step=None):
    mesh = make_mesh({"data": 1}, devices=jax.devices()[:1])
    tr = make_trainer(config, mesh, num_classes=4, num_train_steps=config.train.num_train_steps, warmup_steps=2)
    ckpt = Checkpointer(workdir)
    state = ckpt.restore(tr.abstract_state, tr.state_shardings, step=step)
    ckpt.close()
    return {path_str(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(state)[0]}


def test_resume_is_bit_exact(tmp_path):
    cfg = tiny_config(num_train_steps=6, checkpoint_every_steps=3)
    train_and_evaluate(cfg, tmp_path / "full", data=SyntheticData())
    interrupted = tiny_config(num_train_steps=6, checkpoint_every_steps=3, stop_after_steps=3)
    out = train_and_evaluate(interrupted, tmp_path / "resumed", data=SyntheticData())
    assert out["step"] == 3 and Checkpointer(tmp_path / "resumed").latest_step() == 3
    train_and_evaluate(cfg, tmp_path / "resumed", data=SyntheticData())  # resumes at step 3
    full, resumed = _restore(tmp_path / "full", cfg), _restore(tmp_path / "resumed", cfg)
    assert full.keys() == resumed.keys() and int(full["step"]) == 6
    for k in full:  # params, Adam moments, EMA, step, rng: identical bits
        assert np.array_equal(full[k], resumed[k]), k
    # Orbax finalizes by renaming a tmp dir: a half-written checkpoint is never listed or restored.
    work = tmp_path / "full" / "checkpoints"
    partial = work / "9.orbax-checkpoint-tmp-1234"
    shutil.copytree(work / "6", partial)
    for f in list(partial.rglob("*"))[::2]:
        if f.is_file():
            f.write_bytes(b"garbage")
    assert Checkpointer(tmp_path / "full").latest_step() == 6
    assert np.array_equal(_restore(tmp_path / "full", cfg)["params/head/kernel"], full["params/head/kernel"])


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny_config(num_train_steps=10, checkpoint_every_steps=2, log_every_steps=100)
    with pytest.raises(
        FloatingPointError, match=r"non-finite training loss nan at step 5.*last good checkpoint is step 4"
    ):
        train_and_evaluate(cfg, tmp_path, data=SyntheticData(nan_at_step=5))
    ckpt = Checkpointer(tmp_path)
    assert ckpt.latest_step() == 4
    state = _restore(tmp_path, cfg)
    assert all(np.isfinite(v).all() for k, v in state.items() if v.dtype.kind == "f")


def _env(devices: int) -> dict:
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    )
    return env


def test_sigterm_saves_a_restorable_checkpoint(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests._train_helpers", "sigterm", str(tmp_path)],
        cwd=REPO,
        env=_env(1),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    deadline = time.time() + 600
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("batch 4"):  # steps 0..3 are done or in flight: training is under way
            proc.send_signal(signal.SIGTERM)
            break
        assert time.time() < deadline, "".join(lines[-20:])
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == PREEMPTED_EXIT_CODE, "".join(lines[-20:]) + out[-3000:]
    assert "preempted: saved checkpoint" in out
    step = Checkpointer(tmp_path).latest_step()
    assert step is not None and step >= 3
    cfg = tiny_config(num_train_steps=100_000)
    state = _restore(tmp_path, cfg)
    assert int(state["step"]) == step


def test_two_process_training_writes_one_checkpoint(tmp_path):
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests._train_helpers", "multiprocess", str(tmp_path), str(port), str(i)],
            cwd=REPO,
            env=_env(2),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
    results = [line for out in outs for line in out.splitlines() if line.startswith("RESULT")]
    assert len(results) == 2
    # Both processes evaluated the same global model on the same (sharded) eval set.
    assert results[0].split(" ", 2)[2] == results[1].split(" ", 2)[2]
    assert Checkpointer(tmp_path).all_steps() == [3]
