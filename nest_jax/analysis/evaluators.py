"""Representation analyses as evaluators during training: a CKA snapshot and attention distances.

Registered with the training system's evaluator registry (`nest_jax.train.evaluators`) when it is
present; the classes work on their own too (call `run`). Both read `num_batches` full evaluation
batches (default 2; padded batches are skipped so every example is real), sharded like the
trainer's eval batches.

config entries (`cfg`): `num_batches` (2), `batch_size` (the config's `train.eval_batch_size`),
`pool` ("all"; CKA snapshot only).

Keys returned (prefixed with the evaluator's name):
  cka_snapshot: `{name}/matrix` (layers, layers) image, `{name}/adjacent_mean` (mean CKA of
    consecutive layers), `{name}/first_last` (CKA of the first and last layer).
  attention_distance: `{name}/layer{i}` mean over heads (pixels), `{name}/heads` (layers, heads) image.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from nest_jax.analysis.attention_distance import model_attention_distances
from nest_jax.analysis.cka import MinibatchCKA
from nest_jax.analysis.representations import layer_representations, model_family, num_prefix

try:  # the training system's registry; absent in a checkout without it
    from nest_jax.train.evaluators import register_evaluator
except ImportError:  # pragma: no cover - depends on the installed training system

    def register_evaluator(name: str):
        return lambda cls: cls


class _SnapshotEvaluator:
    def __init__(self, name: str, cfg: Any, *, config: Any, trainer: Any, data: Any):
        self.name, self.cfg, self.config, self.trainer, self.data = name, cfg or {}, config, trainer, data
        self.num_batches = int(self._get("num_batches", 2))
        self.batch_size = int(self._get("batch_size", config.train.get("eval_batch_size", 256)))
        self._fwd = None

    def _get(self, key, default):
        getter = getattr(self.cfg, "get", None)
        return getter(key, default) if getter else default

    def _batches(self):
        it = self.data.eval_iterator(
            self.config.dataset,
            global_batch_size=self.batch_size,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        seen = 0
        for batch in it:
            if seen >= self.num_batches:
                break
            if np.asarray(batch["mask"]).min() <= 0:
                continue  # a padded final batch: its padding rows would enter the statistics
            seen += 1
            yield batch

    def _shard(self, batch):
        from nest_jax.train.trainer import shard_batch

        sharding = getattr(self.trainer, "batch_sharding", None)
        return shard_batch({"image": batch["image"]}, sharding)["image"] if sharding is not None else batch["image"]


@register_evaluator("cka_snapshot")
class CKASnapshot(_SnapshotEvaluator):
    """Layer × layer unbiased minibatch CKA of the current parameters."""

    def run(self, state: dict, rest, step: int) -> dict[str, float | np.ndarray]:
        if self._fwd is None:
            pool = self._get("pool", "all")

            def fwd(params, stats, rest, images):
                model = self.trainer.model(params, stats, rest)
                _, inter = model(images, train=False, capture=("layers",))
                return layer_representations(inter, pool, model_family(model), num_prefix(model))

            self._fwd = jax.jit(fwd)
        acc = None
        for batch in self._batches():
            reps = self._fwd(state["params"], state.get("batch_stats"), rest, self._shard(batch))
            if acc is None:
                acc = MinibatchCKA(len(reps))
            acc.update(reps)
        if acc is None:
            return {}
        m = acc.result()
        n = len(m)
        return {
            f"{self.name}/matrix": m.astype(np.float32),
            f"{self.name}/adjacent_mean": float(np.mean([m[i, i + 1] for i in range(n - 1)])) if n > 1 else 1.0,
            f"{self.name}/first_last": float(m[0, -1]),
        }


@register_evaluator("attention_distance")
class AttentionDistance(_SnapshotEvaluator):
    """Mean attention distance (pixels) of every layer and head (ViT/DeiT/NesT)."""

    def run(self, state: dict, rest, step: int) -> dict[str, float | np.ndarray]:
        if self._fwd is None:

            def fwd(params, stats, rest, images):
                model = self.trainer.model(params, stats, rest)
                _, inter = model(images, train=False, capture=("attention",))
                return [d.sum(0) for d in model_attention_distances(inter["attention"], model.config)]

            self._fwd = jax.jit(fwd)
        sums, count = None, 0
        for batch in self._batches():
            d = jax.device_get(self._fwd(state["params"], state.get("batch_stats"), rest, self._shard(batch)))
            sums = d if sums is None else [a + b for a, b in zip(sums, d)]
            count += len(batch["image"]) * jax.process_count()
        if sums is None:
            return {}
        per_layer = [np.asarray(s, np.float64) / count for s in sums]
        out: dict[str, float | np.ndarray] = {f"{self.name}/layer{i}": float(d.mean()) for i, d in enumerate(per_layer)}
        if len({d.size for d in per_layer}) == 1:
            out[f"{self.name}/heads"] = np.stack(per_layer).astype(np.float32)
        return out
