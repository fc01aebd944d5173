"""Workdirs are etils.epath paths: spaces, relative paths; no per-step collective on one process."""
import os

import pytest
from jax.experimental import multihost_utils

from nest_jax.errors import Preempted
from nest_jax.train.checkpoint import Checkpointer, as_path
from nest_jax.train.loop import train_and_evaluate
from tests._train_helpers import SyntheticData, tiny_config


def test_workdir_with_spaces_and_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rel = os.path.join("my runs", "run #1 (spaces)")
    assert str(as_path(rel)) == str(tmp_path / rel)
    cfg = tiny_config(num_train_steps=4, checkpoint_every_steps=2, stop_after_steps=2, log_every_steps=100)
    train_and_evaluate(cfg, rel, data=SyntheticData())
    out = train_and_evaluate(tiny_config(num_train_steps=4, checkpoint_every_steps=2), rel, data=SyntheticData())
    assert out["step"] == 4 and Checkpointer(tmp_path / rel).all_steps() == [2, 4]
    names = sorted(p.name for p in (tmp_path / rel).iterdir())
    assert {"checkpoints", "config.json", "metrics.jsonl", "params.txt"} <= set(names)
    assert any(n.startswith("events.out.tfevents") for n in names)


def test_single_process_preemption_uses_no_collective(tmp_path, monkeypatch):
    def no_allgather(*a, **k):
        raise AssertionError("process_allgather called during training")
    monkeypatch.setattr(multihost_utils, "process_allgather", no_allgather)
    cfg = tiny_config(num_train_steps=8, checkpoint_every_steps=0, log_every_steps=100)
    with pytest.raises(Preempted) as info:
        train_and_evaluate(cfg, tmp_path, data=SyntheticData(sigterm_at_step=2))
    assert info.value.step == 3 and Checkpointer(tmp_path).all_steps() == [3]
