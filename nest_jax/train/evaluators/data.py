"""`EvalData`: the evaluation data an evaluator reads, bound to the dataset config, the data module,
this process and the mesh.

The data module is injected (the training loop's `data` argument, `nest_jax.data` by default), so
evaluators never import `nest_jax.data` themselves. `batches()` yields the host batches of THIS
process (`jax.process_index()` of `jax.process_count()`), {"image" normalized (B, H, W, C),
"label" (B,), "mask" (B,) 1 real / 0 padding}; `shard` turns one into global arrays split over the
mesh's batch axes; `mean`/`std` undo the normalization (`nest_jax.analysis.forward.to_pixels`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from nest_jax.data.preprocess import mean_std
from nest_jax.errors import UserError
from nest_jax.train.sharding import BATCH_AXES, batch_sharding
from nest_jax.train.trainer import shard_batch


def batch_multiple(mesh: Mesh) -> int:
    """Examples per batch must be a multiple of this: the devices along the mesh's batch axes and
    the number of processes."""
    n = math.prod(mesh.shape[a] for a in BATCH_AXES if a in mesh.shape)
    return math.lcm(n, jax.process_count())


def check_batch_size(value: int, mesh: Mesh, field: str) -> int:
    """`value` unless it does not split evenly over the mesh's batch axes and the processes
    (then a UserError naming `field` and the nearest valid value)."""
    n = batch_multiple(mesh)
    if value <= 0 or value % n:
        axes = "×".join(f"{a}={mesh.shape[a]}" for a in BATCH_AXES if a in mesh.shape)
        raise UserError(
            f"{field}={value} must be a positive multiple of {n} (the devices along the mesh's batch "
            f"axes {axes}, {jax.process_count()} process(es)); set {field}={max(n, value // n * n)}"
        )
    return value


class EvalData:
    """Batches of the evaluation split for evaluators.

    config: the run's config (dataset, train.eval_batch_size); module: the data module
    (get_info, eval_iterator); mesh: where `shard` places batches. batch_size / max_batches: the
    defaults of `batches()` (None: train.eval_batch_size; 0 or None: the whole split).
    """

    def __init__(
        self, config: Any, module: Any, mesh: Mesh, *, batch_size: int | None = None, max_batches: int | None = None
    ):
        self.config, self.module, self.mesh = config, module, mesh
        self.dataset = config.dataset
        field = "--batch-size" if batch_size else "train.eval_batch_size"
        self.batch_size = check_batch_size(int(batch_size or config.train.eval_batch_size), mesh, field)
        self.max_batches = int(max_batches or 0)
        self.sharding = batch_sharding(mesh)
        mean, std = mean_std(self.dataset)
        self.mean, self.std = tuple(mean), tuple(std)
        self.image_size = int(self.dataset.image_size)
        self.num_channels = int(self.dataset.num_channels)
        self._info = None

    @property
    def num_classes(self) -> int:
        if self._info is None:
            self._info = self.module.get_info(self.dataset)
        return int(self._info.num_classes)

    def batches(
        self,
        split: str | None = None,
        *,
        batch_size: int | None = None,
        max_batches: int | None = None,
        dataset: Any = None,
    ) -> Iterator[dict]:
        """Host batches of this process over `split` (None: dataset.eval_split) of `dataset` (None:
        the run's); at most `max_batches` (None: this object's default; 0: all)."""
        size = self.batch_size if batch_size is None else check_batch_size(int(batch_size), self.mesh, "batch_size")
        limit = self.max_batches if max_batches is None else int(max_batches)
        kw = {} if split is None else {"split": split}
        it = self.module.eval_iterator(
            self.dataset if dataset is None else dataset,
            global_batch_size=size,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            **kw,
        )
        for i, batch in enumerate(it):
            if limit and i >= limit:
                return
            yield batch

    def shard(self, batch: dict) -> dict:
        """Host-local numpy batch -> global arrays split over the mesh's batch axes."""
        return shard_batch(jax.tree.map(np.asarray, batch), self.sharding)

    @staticmethod
    def gather(tree: Any) -> Any:
        """Global (sharded) arrays -> arrays holding every process's rows, on every process (with
        one process: the arrays themselves, still on the devices)."""
        if jax.process_count() == 1:
            return tree
        return multihost_utils.process_allgather(tree, tiled=True)
