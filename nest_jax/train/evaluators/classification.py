"""`classification`: top-1 / top-5 accuracy and cross-entropy over one pass of a split.

Padding examples (mask 0, added so the last batch splits over the devices) are excluded. With an
EMA of the parameters in the state, the EMA model is evaluated separately under `ema_`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from nest_jax.errors import UserError
from nest_jax.train import losses
from nest_jax.train.evaluators import Evaluator, model_state, register_evaluator
from nest_jax.train.evaluators.data import EvalData, check_batch_size


@register_evaluator("classification")
class ClassificationEvaluator(Evaluator):
    """Top-1, top-5 and loss over a split (and of the EMA parameters when the state has them)."""

    def __init__(
        self,
        model_fn: Callable,
        data: EvalData,
        *,
        split: str | None = None,
        batch_size: int | None = None,
        max_batches: int | None = None,
    ):
        if batch_size is not None:  # checked now, not at the first evaluation
            check_batch_size(batch_size, data.mesh, "batch_size")
        super().__init__(model_fn, data, batch_size=batch_size, max_batches=max_batches)
        self.split = split
        self._sums = jax.jit(
            lambda s, b: losses.eval_metrics(model_fn(s)(b["image"], train=False), b["label"], b["mask"])
        )

    def metrics(self, state: dict) -> dict[str, float]:
        """Mean top-1, top-5 and loss of the model of `state` over the split; `count` examples."""
        state, total = model_state(state), None
        for batch in self.batches(self.split):
            m = self._sums(state, self.data.shard(batch))
            total = m if total is None else jax.tree.map(lambda a, b: a + b, total, m)
        if total is None:
            raise UserError(f"classification evaluation: the split {self.split!r} is empty")
        total = {k: float(v) for k, v in jax.device_get(total).items()}
        n = max(total["count"], 1.0)
        return {**{k: total[k] / n for k in ("top1", "top5", "loss")}, "count": total["count"]}

    def run(self, state: dict, step: int) -> dict[str, float]:
        del step
        out = self.metrics(state)
        if "ema" in state:  # the EMA is a separate model: evaluated on its own
            out.update({f"ema_{k}": v for k, v in self.metrics({**state, "params": state["ema"]}).items()})
        return out
