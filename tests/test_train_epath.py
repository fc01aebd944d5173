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


@pytest.fixture
def memory_s3(monkeypatch):
    """s3:// paths served by fsspec's in-memory filesystem through epath's fsspec backend (no
    network). Orbax's array writes (tensorstore) and tensorboardX do not go through fsspec, so
    whole training runs on object stores are not covered here; the lock and the workdir checks are."""
    import fsspec
    from etils.epath import gpath
    from fsspec.implementations.memory import MemoryFileSystem

    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
    fsspec.register_implementation("s3", MemoryFileSystem, clobber=True)
    MemoryFileSystem.store.clear()
    MemoryFileSystem.pseudo_dirs.clear()
    MemoryFileSystem.pseudo_dirs.append("")
    yield
    fsspec.registry.target.pop("s3", None) if hasattr(fsspec.registry, "target") else None


def test_lock_and_eval_checks_on_an_object_store_path(memory_s3):
    from etils import epath

    from nest_jax.errors import UserError
    from nest_jax.train.lock import LOCK_NAME, WorkdirLock

    work = as_path("s3://bucket/run a")
    assert str(work) == "s3://bucket/run a"
    with WorkdirLock(work):
        assert (work / LOCK_NAME).exists()
        with pytest.raises(UserError, match="s3://bucket/run a is in use by another run"):
            WorkdirLock(work).acquire()
    assert not (work / LOCK_NAME).exists()
    cfg = tiny_config()
    cfg.mode = "eval"
    with pytest.raises(UserError, match="needs a checkpoint but s3://bucket/other has none"):
        train_and_evaluate(cfg, "s3://bucket/other", data=SyntheticData())
    assert not epath.Path("s3://bucket/other").exists()


def test_gcs_path_without_gcsfs_is_one_line_naming_the_extra(monkeypatch, capfd):
    import importlib.util

    from nest_jax import main as cli
    from nest_jax.errors import UserError
    from nest_jax.paths import as_path

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gcsfs" else real(name, *a))
    with pytest.raises(UserError, match=r'pip install "nest_jax\[gcs\]"'):
        as_path("gs://bucket/run")
    assert str(as_path("local/run")).endswith("local/run")  # local paths need no gcsfs
    rc = cli.main(["--config=configs/digits_nest_tiny.py", "--workdir=gs://bucket/run"])
    err = capfd.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and 'pip install "nest_jax[gcs]"' in err[0], err
