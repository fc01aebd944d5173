"""`classification`: top-1 / top-5 accuracy and cross-entropy over one pass of a split.

Padding examples (mask 0, added so the last batch splits over the devices) are excluded. With an
EMA of the parameters in the state, the EMA model is evaluated separately under `<prefix>ema_`.
Fields: split, batch_size (default train.eval_batch_size), every_steps, prefix.
"""

from __future__ import annotations

from typing import Any

import jax

from nest_jax.errors import UserError
from nest_jax.train.evaluators import batch_multiple, register_evaluator
from nest_jax.train.trainer import shard_batch


@register_evaluator("classification")
class ClassificationEvaluator:
    def __init__(self, name: str, cfg: Any, *, config: Any, trainer: Any, data: Any):
        self.name, self.cfg, self.config, self.trainer, self.data = name, cfg, config, trainer, data
        self.batch_size = int(cfg.get("batch_size", None) or config.train.eval_batch_size)
        n = batch_multiple(trainer)
        if self.batch_size <= 0 or self.batch_size % n:
            field = f"evals.{name}.batch_size" if cfg.get("batch_size", None) else "train.eval_batch_size"
            raise UserError(
                f"{field}={self.batch_size} must be a positive multiple of {n} (the devices "
                "along the mesh's batch axes)"
            )
        default_split = config.dataset.get("eval_split", None)
        # Only pass `split` when it differs: data modules without the argument keep working.
        self.split_kw = {} if cfg.get("split", None) in (None, default_split) else {"split": cfg.split}

    def metrics(self, params: Any, stats: Any, rest: Any, prefix: str) -> dict[str, float]:
        """Mean top-1, top-5 and loss of the model (params, stats) over the split; `count` examples."""
        sums = None
        it = self.data.eval_iterator(
            self.config.dataset,
            global_batch_size=self.batch_size,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            **self.split_kw,
        )
        for batch in it:
            m = self.trainer.eval_step(params, stats, shard_batch(batch, self.trainer.batch_sharding), rest)
            sums = m if sums is None else jax.tree.map(lambda a, b: a + b, sums, m)
        if sums is None:
            raise UserError(f"evaluation {self.name!r}: the split {self.cfg.get('split', None)!r} is empty")
        sums = jax.device_get(sums)
        n = max(float(sums["count"]), 1.0)
        return {
            f"{prefix}top1": float(sums["top1"]) / n,
            f"{prefix}top5": float(sums["top5"]) / n,
            f"{prefix}loss": float(sums["loss"]) / n,
            f"{prefix}count": float(sums["count"]),
        }

    def run(self, state: dict, rest: Any, step: int) -> dict[str, float]:
        stats = state.get("batch_stats")
        out = self.metrics(state["params"], stats, rest, self.cfg.prefix)
        if "ema" in state:  # the EMA is a separate model: evaluated on its own
            out.update(self.metrics(state["ema"], stats, rest, f"{self.cfg.prefix}ema_"))
        return out
