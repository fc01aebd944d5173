"""The input position is checkpointed with the state; resume is bit-exact with or without it."""

import json

import jax
import numpy as np
import pytest

from nest_jax.train.checkpoint import Checkpointer
from nest_jax.train.loop import train_and_evaluate
from nest_jax.train.sharding import make_mesh, path_str
from nest_jax.train.trainer import make_trainer
from tests._train_helpers import SyntheticData, tiny_config


class GeneratorData(SyntheticData):
    """A data module of the earlier API: a plain generator, no get_state/set_state."""

    def train_iterator(self, ds_cfg, **kw):
        it = super().train_iterator(ds_cfg, **kw)
        return (batch for batch in it)


def _final(workdir, cfg):
    mesh = make_mesh({"data": 1}, devices=jax.devices()[:1])
    tr = make_trainer(cfg, mesh, num_classes=4, num_train_steps=cfg.train.num_train_steps, warmup_steps=2)
    ckpt = Checkpointer(workdir)
    state = ckpt.restore(tr.abstract_state, tr.state_shardings)
    ckpt.close()
    return {path_str(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(state)[0]}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("full")
    cfg = tiny_config(num_train_steps=6, checkpoint_every_steps=3, log_every_steps=100)
    train_and_evaluate(cfg, work, data=SyntheticData())
    return _final(work, cfg), cfg


def test_resume_restores_the_iterator_position_it_saved(full_run, tmp_path):
    full, cfg = full_run
    # An iterator that ignores start_step: only its saved state can put it back at batch 3.
    first = SyntheticData(ignore_start_step=True)
    train_and_evaluate(
        tiny_config(num_train_steps=6, checkpoint_every_steps=3, stop_after_steps=3, log_every_steps=100),
        tmp_path,
        data=first,
    )
    saved = json.loads((tmp_path / "checkpoints" / "3" / "data" / "process_0-of-1.json").read_text())
    assert saved == {"step": 3, "process": 0}
    second = SyntheticData(ignore_start_step=True)
    train_and_evaluate(cfg, tmp_path, data=second)
    assert second.iterator.set_states == [saved]
    resumed = _final(tmp_path, cfg)
    for k in full:
        assert np.array_equal(full[k], resumed[k]), k


def test_iterators_without_state_resume_from_the_step(full_run, tmp_path):
    full, cfg = full_run
    train_and_evaluate(
        tiny_config(num_train_steps=6, checkpoint_every_steps=3, stop_after_steps=3, log_every_steps=100),
        tmp_path,
        data=GeneratorData(),
    )
    assert not (tmp_path / "checkpoints" / "3" / "data").exists()
    train_and_evaluate(cfg, tmp_path, data=SyntheticData())  # a checkpoint without a data item
    resumed = _final(tmp_path, cfg)
    for k in full:
        assert np.array_equal(full[k], resumed[k]), k
