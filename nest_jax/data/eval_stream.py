"""One eval pass, padded so every process runs the same number of steps and no example is lost.

Process p of P reads the p-th of P even shards of the split (sizes differ by at most one, as
`tfds.even_splits`), then pads with masked examples up to `steps × local_batch`, where
steps = ⌈N / global_batch⌉ — enough for every shard since ⌈⌈N/P⌉ / b⌉ = ⌈N / (P·b)⌉. Real examples
carry mask 1, padding mask 0 (image zeros, label 0): sum the metric × mask over all processes.
"""

from __future__ import annotations

import math

import numpy as np

from nest_jax.data import preprocess
from nest_jax.data.train_stream import grain_iterator


def num_steps(num_examples: int, global_batch_size: int) -> int:
    return math.ceil(num_examples / global_batch_size)


def even_shard(num_examples: int, process_index: int, process_count: int) -> tuple[int, int]:
    """[start, end) of shard `process_index`; the first N mod P shards hold one extra example."""
    base, extra = divmod(num_examples, process_count)
    start = process_index * base + min(process_index, extra)
    return start, start + base + (process_index < extra)


class EvalBatches:
    """Eval batch j of one process's shard [start, end) → {"image": (b, S, S, C) float32,
    "label": (b,) int32, "mask": (b,) float32}; rows past `end` are padding (zeros, mask 0)."""

    def __init__(self, records, ds_cfg, *, start: int, end: int, local_batch: int):
        self.records, self.ds_cfg = records, ds_cfg
        self.start, self.end, self.b = start, end, local_batch

    def __call__(self, j: int) -> dict[str, np.ndarray]:
        size, c = int(self.ds_cfg.image_size), int(self.ds_cfg.num_channels)
        images = np.zeros((self.b, size, size, c), np.float32)
        labels = np.zeros((self.b,), np.int32)
        mask = np.zeros((self.b,), np.float32)
        for row in range(self.b):
            index = self.start + j * self.b + row
            if index >= self.end:
                break
            record = self.records[index]
            images[row] = preprocess.eval_image(record["image"], self.ds_cfg)
            labels[row], mask[row] = record["label"], 1.0
        return {"image": images, "label": labels, "mask": mask}


def eval_iterator(source, ds_cfg, *, split: str, global_batch_size: int, process_index: int, process_count: int):
    """Exactly num_steps(N, global_batch_size) batches of global_batch_size / process_count."""
    import grain

    if global_batch_size % process_count:
        raise ValueError(f"eval batch {global_batch_size} not divisible by {process_count} processes")
    local_batch = global_batch_size // process_count
    records = source.lookup(split)
    steps = num_steps(len(records), global_batch_size)
    start, end = even_shard(len(records), process_index, process_count)
    batches = EvalBatches(records, ds_cfg, start=start, end=end, local_batch=local_batch)
    ds = grain.MapDataset.range(steps).map(batches)
    return grain_iterator(ds, int(ds_cfg.num_workers))
