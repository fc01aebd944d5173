"""Failure modes of the training loop: each test starts from a way a real run goes wrong."""

import errno
import json
import logging
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from nest_jax.errors import Preempted, UserError
from nest_jax.train.checkpoint import Checkpointer
from nest_jax.train.lock import LOCK_NAME, WorkdirLock
from nest_jax.train.loop import train_and_evaluate
from nest_jax.train.sharding import make_mesh, path_str
from nest_jax.train.trainer import make_trainer
from tests._tmpfs import tmpfs
from tests._train_helpers import SyntheticData, tiny_config


def _flat(state):
    return {path_str(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(state)[0]}


def _restore_all(workdir, config):
    """{step: flat state} of every checkpoint, restored on one device."""
    mesh = make_mesh({"data": 1}, devices=jax.devices()[:1])
    tr = make_trainer(config, mesh, num_classes=4, num_train_steps=config.train.num_train_steps, warmup_steps=2)
    ckpt = Checkpointer(workdir)
    out = {s: _flat(ckpt.restore(tr.abstract_state, tr.state_shardings, s)) for s in ckpt.all_steps()}
    ckpt.close()
    return out


def _finite(flat):
    return all(np.isfinite(v).all() for v in flat.values() if v.dtype.kind == "f")


def test_checkpoint_is_saved_before_a_failing_evaluation(tmp_path):
    cfg = tiny_config(num_train_steps=4, checkpoint_every_steps=2, eval_every_steps=2)
    with pytest.raises(RuntimeError, match="eval broke"):
        train_and_evaluate(cfg, tmp_path, data=SyntheticData(eval_error=RuntimeError("eval broke")))
    assert Checkpointer(tmp_path).all_steps() == [2]  # step 2 was written before its evaluation failed
    assert not (tmp_path / LOCK_NAME).exists()  # the lock is released on an exception too


@pytest.mark.parametrize("field,value", [("eval_batch_size", 6), ("global_batch_size", 0), ("global_batch_size", 12)])
def test_batch_sizes_the_mesh_cannot_split_are_rejected_before_training(tmp_path, field, value):
    cfg = tiny_config(**{field: value})  # 8 devices on the data axis
    with pytest.raises(UserError, match=rf"train\.{field}={value} must be a positive multiple of 8"):
        train_and_evaluate(cfg, tmp_path / "run", data=SyntheticData())
    assert not (tmp_path / "run").exists()


def test_non_finite_parameters_are_never_saved_and_the_run_resumes_with_a_lower_lr(tmp_path):
    good = tiny_config(num_train_steps=6, checkpoint_every_steps=1, stop_after_steps=2, log_every_steps=100)
    train_and_evaluate(good, tmp_path, data=SyntheticData())
    diverging = tiny_config(num_train_steps=6, checkpoint_every_steps=1, log_every_steps=100)
    # The loss of step 2 is finite; the parameters after it are not. 1e39 is a finite number (as
    # validate_config requires of a learning rate) but overflows float32 on the device.
    diverging.optimizer.lr = 1e39
    with pytest.raises(FloatingPointError, match=r"last good checkpoint is step 2 .*lower learning rate"):
        train_and_evaluate(diverging, tmp_path, data=SyntheticData())
    states = _restore_all(tmp_path, good)
    assert sorted(states) == [1, 2] and all(_finite(s) for s in states.values())
    out = train_and_evaluate(tiny_config(num_train_steps=6, checkpoint_every_steps=1), tmp_path, data=SyntheticData())
    assert out["step"] == 6 and _finite(_restore_all(tmp_path, good)[6])
    # Diverging from the first step: nothing is saved and the message says so (not "step None").
    with pytest.raises(FloatingPointError, match="No checkpoint was saved"):
        train_and_evaluate(diverging, tmp_path / "fresh", data=SyntheticData())
    assert Checkpointer(tmp_path / "fresh").all_steps() == []


def test_sigterm_right_after_a_regular_save_raises_preempted(tmp_path):
    # SIGTERM while batch 1 is read: step 2 is saved regularly, then the notice is seen at step 2.
    cfg = tiny_config(num_train_steps=6, checkpoint_every_steps=2, log_every_steps=100)
    with pytest.raises(Preempted) as info:
        train_and_evaluate(cfg, tmp_path, data=SyntheticData(sigterm_at_step=1))
    assert info.value.step == 2 and "checkpoints" in info.value.directory
    assert Checkpointer(tmp_path).all_steps() == [2]
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_second_run_on_a_workdir_in_use_is_refused(tmp_path):
    with WorkdirLock(tmp_path):  # this process holds it, as a running job would
        with pytest.raises(UserError, match=rf"{tmp_path} is in use by another run \(pid {os.getpid()} on "):
            train_and_evaluate(tiny_config(), tmp_path, data=SyntheticData())
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: its pid no longer exists
    (tmp_path / LOCK_NAME).write_text(
        json.dumps(
            {"host": WorkdirLock(tmp_path).info["host"], "pid": dead.pid, "started": "2020-01-01T00:00:00+00:00"}
        )
    )
    with caplog.at_level(logging.WARNING), WorkdirLock(tmp_path) as lock:
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
        assert lock.info["pid"] == os.getpid()
    assert f"stale lock {tmp_path / LOCK_NAME}" in caplog.text and f"pid {dead.pid}" in caplog.text
    assert not (tmp_path / LOCK_NAME).exists()


def test_eval_without_a_checkpoint_is_an_error_and_creates_nothing(tmp_path):
    cfg = tiny_config()
    cfg.mode = "eval"
    missing = tmp_path / "typo"
    with pytest.raises(UserError, match=f"needs a checkpoint but {missing} has none"):
        train_and_evaluate(cfg, missing, data=SyntheticData())
    assert not missing.exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="needs a checkpoint"):
        train_and_evaluate(cfg, tmp_path / "empty", data=SyntheticData())
    assert list((tmp_path / "empty").iterdir()) == []


def test_already_finished_run_says_how_to_continue(tmp_path):
    cfg = tiny_config(num_train_steps=6, stop_after_steps=2, eval_every_steps=0)
    train_and_evaluate(cfg, tmp_path, data=SyntheticData())
    data = SyntheticData()
    out = train_and_evaluate(cfg, tmp_path, data=data)
    assert out["step"] == 2 and data.eval_calls == 0
    assert "already reached step 2" in out["message"] and "stop_after_steps" in out["message"]


# ---- corrupt checkpoints and a changed model ----


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workdir with checkpoints 2 and 4 of a 6-step run."""
    work = tmp_path_factory.mktemp("trained")
    cfg = tiny_config(num_train_steps=6, checkpoint_every_steps=2, stop_after_steps=4, log_every_steps=100)
    train_and_evaluate(cfg, work, data=SyntheticData())
    return work, cfg


def _restore_latest(workdir, cfg):
    mesh = make_mesh({"data": 1}, devices=jax.devices()[:1])
    tr = make_trainer(cfg, mesh, num_classes=4, num_train_steps=cfg.train.num_train_steps, warmup_steps=2)
    ckpt = Checkpointer(workdir)
    try:
        return ckpt.restore_latest(tr.abstract_state, tr.state_shardings), tr
    finally:
        ckpt.close()


def _data_files(d):
    return [p for p in (d / "default").rglob("*") if p.is_file() and p.parent.name == "d"]


def _truncate_data_files(d):  # as a copy interrupted by a full disk or a killed rsync
    for f in _data_files(d):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])


def _delete_metadata(d):
    for p in d.rglob("_METADATA"):
        p.unlink()


def _delete_data_files(d):
    for f in _data_files(d):
        f.unlink()


@pytest.mark.parametrize("damage", [_truncate_data_files, _delete_metadata, _delete_data_files])
def test_an_unreadable_newest_checkpoint_is_set_aside(trained, tmp_path, damage, caplog):
    work = tmp_path / "w"
    shutil.copytree(trained[0], work)
    damage(work / "checkpoints" / "4")
    with caplog.at_level(logging.WARNING):
        (step, state), _ = _restore_latest(work, trained[1])
    assert step == 2 and int(state["step"]) == 2
    assert (work / "checkpoints" / "4.corrupt").is_dir() and not (work / "checkpoints" / "4").exists()
    lines = [r.getMessage() for r in caplog.records if "4.corrupt" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]


def test_a_non_finite_newest_checkpoint_is_set_aside_and_training_resumes(trained, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(trained[0], work)
    cfg = trained[1]
    (step, state), tr = _restore_latest(work, cfg)
    assert step == 4
    # Bytes that decode to NaN (as flipped exponent bits would), written past the finite check.
    bad = dict(state, params=jax.tree.map(lambda p: p * np.nan, state["params"]))
    mgr = ocp.CheckpointManager(work / "checkpoints", item_names=("default", "data"))
    shutil.rmtree(work / "checkpoints" / "4")
    mgr.reload()
    mgr.save(4, args=ocp.args.Composite(default=ocp.args.StandardSave(bad)))
    mgr.close()
    out = train_and_evaluate(
        tiny_config(num_train_steps=6, checkpoint_every_steps=2, log_every_steps=100), work, data=SyntheticData()
    )
    assert out["step"] == 6 and (work / "checkpoints" / "4.corrupt").is_dir()
    assert sorted(Checkpointer(work).all_steps()) == [2, 4, 6]  # 4 and 6 trained again from step 2


def test_resuming_with_a_changed_model_names_the_parameter_and_both_shapes(trained):
    wider = tiny_config(num_train_steps=6)
    wider.model.overrides.dim = 32
    with pytest.raises(UserError) as info:
        train_and_evaluate(wider, trained[0], data=SyntheticData())
    msg = str(info.value)
    assert "\n" not in msg and "strict" not in msg
    assert "parameter params/cls_token has shape (1, 1, 16) in the checkpoint but (1, 1, 32) in the model" in msg
    assert (trained[0] / "checkpoints" / "4").is_dir()  # nothing set aside: the checkpoint is fine


# ---- a full disk ----


def _small_state():
    return {"step": jax.numpy.zeros((), jax.numpy.int32), "params": {"w": jax.numpy.ones((4, 3))}}


def _no_space(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_saving_is_one_line_naming_the_last_good_checkpoint(tmp_path, monkeypatch):
    ckpt = Checkpointer(tmp_path)
    ckpt.save(2, _small_state())
    ckpt.wait()
    monkeypatch.setattr(ocp.CheckpointManager, "save", _no_space)
    with pytest.raises(UserError) as info:
        ckpt.save(4, _small_state())
    assert str(info.value).startswith(
        f"no space left on device while saving step 4 in {tmp_path / 'checkpoints'}; the last good checkpoint is step 2"
    )
    ckpt.close()  # already closed after the failure: a no-op, not a second error


def test_disk_full_in_an_async_save_is_reported_at_the_next_wait(tmp_path, monkeypatch):
    ckpt = Checkpointer(tmp_path)
    ckpt.save(2, _small_state())
    ckpt.wait()
    ckpt.save(4, _small_state())
    monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", _no_space)
    with pytest.raises(
        UserError, match="no space left on device while saving step 4 .* last good checkpoint is step 2"
    ):
        ckpt.save(6, _small_state())


@pytest.fixture
def full_disk(tmp_path):
    """A 3 MB tmpfs: orbax's real writer threads run out of space."""
    with tmpfs(tmp_path, "3m") as mnt:
        yield mnt


def test_a_real_full_disk_during_an_async_save_is_one_line_and_leaves_no_partial_copy(full_disk, caplog):
    """On a 3 MB tmpfs the orbax writer threads logged 4-61 errors with tracebacks (300+ lines) and
    the half-written step stayed on the full disk; now nothing but the one line."""
    ckpt = Checkpointer(full_disk)
    ckpt.save(1, _small_state())
    ckpt.wait()
    big = {
        "step": jax.numpy.ones((), jax.numpy.int32),
        "params": {"w": jax.random.normal(jax.random.key(0), (1000, 1000))},
    }
    with caplog.at_level(logging.WARNING), pytest.raises(UserError) as info:
        ckpt.save(2, big)
        ckpt.wait()
    assert str(info.value).startswith(f"no space left on device while saving step 2 in {full_disk / 'checkpoints'}")
    assert "the last good checkpoint is step 1" in str(info.value) and "\n" not in str(info.value)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text[:2000]
    assert sorted(p.name for p in (full_disk / "checkpoints").iterdir()) == ["1"]
    ckpt.close()
