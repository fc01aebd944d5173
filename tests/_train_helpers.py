"""Test helpers for the training tests: a tiny config and an in-memory data source with the
`nest_jax.data` API (batch k a pure function of (seed, k), disjoint process shards, padded eval)."""

from __future__ import annotations

import sys
from typing import NamedTuple

import ml_collections
import numpy as np


class Info(NamedTuple):
    name: str
    num_classes: int
    num_train: int
    num_eval: int
    image_shape: tuple


class SyntheticData:
    """Learnable toy classes: image = class template + noise. `nan_at_step` poisons one batch;
    `announce` prints "batch k" as each train batch is produced (lets a test time a signal);
    `sigterm_at_step` sends this process SIGTERM while batch k is produced; `eval_error` makes the
    eval iterator raise it. `eval_calls` counts eval passes, `eval_splits` records the splits asked
    for. The train iterator reports its position (`get_state`/`set_state`, JSON dicts)."""

    def __init__(
        self,
        num_classes=4,
        image_size=8,
        channels=3,
        num_train=64,
        num_eval=20,
        nan_at_step=None,
        announce=False,
        sigterm_at_step=None,
        eval_error=None,
        ignore_start_step=False,
    ):
        self.k, self.size, self.c = num_classes, image_size, channels
        self.num_train, self.num_eval = num_train, num_eval
        self.nan_at_step, self.announce = nan_at_step, announce
        self.sigterm_at_step, self.eval_error, self.eval_calls = sigterm_at_step, eval_error, 0
        self.ignore_start_step = ignore_start_step  # as an iterator placed only by set_state
        self.eval_splits = []
        self.templates = np.random.default_rng(1234).normal(size=(num_classes, image_size, image_size, channels))

    def _examples(self, rng, n):
        labels = rng.integers(0, self.k, n).astype(np.int32)
        images = self.templates[labels] + 0.5 * rng.normal(size=(n, self.size, self.size, self.c))
        return images.astype(np.float32), labels

    def get_info(self, ds_cfg):
        return Info("synthetic", self.k, self.num_train, self.num_eval, (self.size, self.size, self.c))

    def train_iterator(self, ds_cfg, *, global_batch_size, seed, start_step=0, process_index=None, process_count=None):
        import jax

        p = jax.process_index() if process_index is None else process_index
        n = jax.process_count() if process_count is None else process_count
        self.iterator = _TrainIterator(self, global_batch_size, seed, 0 if self.ignore_start_step else start_step, p, n)
        return self.iterator

    def eval_iterator(self, ds_cfg, *, global_batch_size, process_index=None, process_count=None, split=None):
        import jax

        p = jax.process_index() if process_index is None else process_index
        n = jax.process_count() if process_count is None else process_count
        self.eval_calls += 1
        self.eval_splits.append(split)
        if self.eval_error is not None:
            raise self.eval_error
        images, labels = self._examples(np.random.default_rng(99), self.num_eval)
        steps = -(-self.num_eval // global_batch_size)
        pad = steps * global_batch_size - self.num_eval
        images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], np.float32)])
        labels = np.concatenate([labels, np.zeros(pad, np.int32)])
        mask = np.concatenate([np.ones(self.num_eval, np.float32), np.zeros(pad, np.float32)])
        local = global_batch_size // n
        for s in range(steps):
            sl = slice(s * global_batch_size + p * local, s * global_batch_size + (p + 1) * local)
            yield {"image": images[sl], "label": labels[sl], "mask": mask[sl]}


class _TrainIterator:
    """Batch k is a pure function of (seed, k); the state is {"step": k} of the next batch."""

    def __init__(self, source, global_batch_size, seed, step, p, n):
        self.src, self.gbs, self.seed, self.step, self.p, self.n = source, global_batch_size, seed, step, p, n
        self.set_states = []

    def __iter__(self):
        return self

    def __next__(self):
        src, step, local = self.src, self.step, self.gbs // self.n
        images, labels = src._examples(np.random.default_rng([self.seed, step]), self.gbs)
        if step == src.nan_at_step:
            images[:] = np.nan
        if src.announce:
            print(f"batch {step}", flush=True)
        if step == src.sigterm_at_step:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGTERM)
        self.step += 1
        sl = slice(self.p * local, (self.p + 1) * local)
        return {"image": images[sl], "label": labels[sl]}

    def get_state(self) -> dict:
        return {"step": self.step, "process": self.p}

    def set_state(self, state: dict) -> None:
        self.set_states.append(state)
        self.step = int(state["step"])


def tiny_config(**train) -> ml_collections.ConfigDict:
    """`base_config()` with a 1-layer ViT (8 px, patch 4, width 16) on SyntheticData; `train`
    overrides config.train."""
    from nest_jax.train.config_base import base_config

    c = base_config()
    c.model.name = "vit_tiny_patch16_224"
    c.model.overrides = dict(patch_size=4, dim=16, depth=1, num_heads=2, mlp_dim=32, drop_path_rate=0.1)
    c.dataset.update(dict(name="synthetic", image_size=8, num_channels=3))
    c.mix.label_smoothing = 0.1
    c.train.update(
        dict(
            global_batch_size=16,
            eval_batch_size=8,
            num_train_steps=6,
            log_every_steps=2,
            eval_every_steps=0,
            checkpoint_every_steps=3,
            max_to_keep=5,
        )
    )
    c.train.update(train)
    c.optimizer.update(
        dict(name="adamw", lr=3e-3, weight_decay=0.05, wd_mask="nest", schedule="cosine", warmup_steps=2, ema_decay=0.9)
    )
    return c


if __name__ == "__main__":  # worker for the subprocess tests: `python -m tests._train_helpers MODE WORKDIR ...`
    mode, workdir = sys.argv[1], sys.argv[2]
    import jax

    if mode == "multiprocess":
        port, pid = sys.argv[3], int(sys.argv[4])
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=pid)
        cfg = tiny_config(num_train_steps=3, checkpoint_every_steps=0, eval_batch_size=8)
        cfg.mesh.axes = dict(data=2, fsdp=2, tensor=1)  # 4 devices over 2 processes
        data = SyntheticData()
    else:  # "sigterm": runs until a SIGTERM arrives
        cfg = tiny_config(num_train_steps=100_000, checkpoint_every_steps=100_000, log_every_steps=1000)
        data = SyntheticData(announce=True)
    from nest_jax.errors import PREEMPTED_EXIT_CODE, Preempted
    from nest_jax.train.loop import train_and_evaluate

    try:
        result = train_and_evaluate(cfg, workdir, data=data)
    except Preempted as e:  # as nest_jax.main does: a requeueable exit
        print(e, flush=True)
        sys.exit(PREEMPTED_EXIT_CODE)
    print("RESULT", jax.process_index(), result, flush=True)
