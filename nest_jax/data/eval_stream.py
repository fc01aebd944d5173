"""One eval pass, padded so every process runs the same number of steps and no example is lost.

Process p of P reads the p-th of P even shards of the split (sizes differ by at most one, as
`tfds.even_splits`), then pads with masked examples up to `steps × local_batch`, where
steps = ⌈N / global_batch⌉ — enough for every shard since ⌈⌈N/P⌉ / b⌉ = ⌈N / (P·b)⌉. Real examples
carry mask 1, padding mask 0 (image zeros, label 0): sum the metric × mask over all processes.
"""
from __future__ import annotations

import math

from nest_jax.data import preprocess
from nest_jax.data._tf import plain, tf


def num_steps(num_examples: int, global_batch_size: int) -> int:
    return math.ceil(num_examples / global_batch_size)


def even_shard(num_examples: int, process_index: int, process_count: int) -> tuple[int, int]:
    """[start, end) of shard `process_index`; the first N mod P shards hold one extra example."""
    base, extra = divmod(num_examples, process_count)
    start = process_index * base + min(process_index, extra)
    return start, start + base + (process_index < extra)


def eval_dataset(source, ds_cfg, *, global_batch_size: int, process_index: int,
                 process_count: int) -> tf.data.Dataset:
    """Batches {"image": (b, S, S, C) float32, "label": (b,) int32, "mask": (b,) float32},
    b = global_batch_size / process_count, exactly num_steps(N, global_batch_size) of them."""
    if global_batch_size % process_count:
        raise ValueError(f"eval batch {global_batch_size} not divisible by "
                         f"{process_count} processes")
    local_batch = global_batch_size // process_count
    split = ds_cfg.eval_split
    steps = num_steps(source.num_examples(split), global_batch_size)
    if source.random_access:
        start, end = even_shard(source.num_examples(split), process_index, process_count)
        ds = tf.data.Dataset.range(start, end).map(plain(source.lookup(split)))
    else:
        ds = source.read(split, process_index=process_index, process_count=process_count)
        ds = ds.map(plain(source.decode))

    def real(example):
        return {"image": preprocess.eval_image(example["image"], ds_cfg),
                "label": tf.cast(example["label"], tf.int32), "mask": tf.constant(1.0)}

    ds = ds.map(plain(real), num_parallel_calls=tf.data.AUTOTUNE)
    size, c = ds_cfg.image_size, ds_cfg.num_channels
    pad = tf.data.Dataset.from_tensors({"image": tf.zeros((size, size, c)),
                                        "label": tf.constant(0, tf.int32),
                                        "mask": tf.constant(0.0)}).repeat()
    ds = ds.concatenate(pad).take(steps * local_batch).batch(local_batch, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE)
