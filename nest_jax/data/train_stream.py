"""The infinite training stream: batch k is a pure function of (seed, k); `start_step` resumes.

The stream is built as consecutive epochs. Each example's augmentation key is
fold_in(fold_in(key(seed), epoch), position), so it never depends on how far a previous run got.
Batches run across epoch boundaries (no example dropped at an epoch's end); resuming at step k
skips ⌊k·b / L⌋ whole epochs without reading them and `skip`s the remainder of the next one,
L = examples per epoch on this process, b = local batch.

Random-access sources (digits, image folders) — every epoch is a full permutation of the split
seeded by (seed, epoch), the same on every process; with repeated augmentation (DeiT's
RASampler, r = `repeated_aug`) every index of the permutation is repeated r times; process p of
P takes positions p, p+P, p+2P, … so the r copies land on different processes when P > 1 (in the
same batch when P = 1). With r > 1 each process keeps ⌊N/P⌋ positions per epoch, so an epoch
still holds ≈ N samples (N/r distinct images), as in DeiT. The remainder skip reads only indices.

Streaming sources (tfds) — each process reads its own even shard of the split in a fixed file
order; each epoch is that shard through a shuffle buffer of `shuffle_buffer` seeded by
(seed, process, epoch) (a full permutation when the buffer holds the shard, e.g. CIFAR). With
r > 1 the first ⌈n/r⌉ shuffled examples are each repeated r times (copies adjacent, on one
process). The remainder skip reads (but does not decode) the skipped records.
"""
from __future__ import annotations

import math

from nest_jax.data import preprocess
from nest_jax.data._tf import plain, tf

_FOREVER = 2**62


def _example_key(seed: int, stream: int, epoch, position):
    key = tf.constant([seed, stream], tf.int64)
    key = tf.random.experimental.stateless_fold_in(key, tf.cast(epoch, tf.int64))
    return tf.random.experimental.stateless_fold_in(key, tf.cast(position, tf.int64))


def epoch_length(num_examples: int, process_index: int, process_count: int,
                 repeated_aug: int) -> int:
    """Examples per epoch on one process of a random-access source."""
    if repeated_aug > 1:
        return num_examples // process_count
    return len(range(process_index, num_examples, process_count))


def _index_stream(source, split, *, seed, process_index, process_count, repeated_aug, first_epoch):
    """(epoch, position, index) from `first_epoch` on; position = slot in the global epoch."""
    n = source.num_examples(split)
    length = epoch_length(n, process_index, process_count, repeated_aug)

    def epoch(e):
        # Full permutation of the split for epoch e: argsort of stateless uniforms from (seed, e).
        epoch_key = tf.stack([tf.constant(seed, tf.int64), e])
        perm = tf.argsort(tf.random.stateless_uniform([n], epoch_key))
        slots = tf.range(process_index, n * repeated_aug, process_count, dtype=tf.int64)[:length]
        index = tf.gather(perm, slots // repeated_aug)
        return tf.data.Dataset.from_tensor_slices((tf.fill([length], e), slots, index))

    return tf.data.Dataset.range(first_epoch, _FOREVER).flat_map(plain(epoch)), source.lookup(split)


def _record_stream(source, split, ds_cfg, *, seed, process_index, process_count, repeated_aug,
                   first_epoch):
    """(epoch, position, raw record) from `first_epoch` on, for a streaming source."""
    shard = source.read(split, process_index=process_index, process_count=process_count)
    if ds_cfg.get("cache", False):
        shard = shard.cache()  # raw (still encoded) records, so memory ≈ the files' size
    n = source.num_local_examples(split, process_index=process_index, process_count=process_count)
    buffer = max(1, int(ds_cfg.get("shuffle_buffer", 10_000)))

    def epoch(e):
        # Seeded per (seed, process, epoch); a tf.int64 tensor seed is allowed inside flat_map.
        shuffle_seed = (seed * 1_000_003 + process_index) * 1_000_003 + e
        ds = shard.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
        if repeated_aug > 1:
            ds = ds.take(math.ceil(n / repeated_aug))
            ds = ds.flat_map(plain(lambda x: tf.data.Dataset.from_tensors(x).repeat(repeated_aug)))
            ds = ds.take(n)
        return ds.enumerate().map(plain(lambda pos, x: (e, pos, x)))

    return tf.data.Dataset.range(first_epoch, _FOREVER).flat_map(plain(epoch)), source.decode


def train_dataset(source, ds_cfg, *, local_batch: int, seed: int, start_step: int,
                  process_index: int, process_count: int) -> tf.data.Dataset:
    """Infinite batches {"image": (b, S, S, C) float32 normalized, "label": (b,) int32}."""
    split = ds_cfg.train_split
    r = int(ds_cfg.get("repeated_aug", 1))
    if source.random_access:
        length = epoch_length(source.num_examples(split), process_index, process_count, r)
    else:
        length = source.num_local_examples(split, process_index=process_index,
                                           process_count=process_count)
    if length < 1:
        raise ValueError(f"split {split!r} has no examples for process {process_index}")
    first_epoch, offset = divmod(start_step * local_batch, length)
    kwargs = dict(seed=seed, process_index=process_index, process_count=process_count,
                  repeated_aug=r, first_epoch=first_epoch)
    if source.random_access:
        ds, load = _index_stream(source, split, **kwargs)
        stream_id = 0  # position is global: a sample's augmentation ignores the process count
    else:
        ds, load = _record_stream(source, split, ds_cfg, **kwargs)
        stream_id = 1 + process_index
    # Skip before loading/decoding: skipped indices cost nothing, skipped records one read.
    ds = ds.skip(offset)
    augment = preprocess.train_fn(ds_cfg)

    def prepare(e, pos, raw):
        key = _example_key(seed, stream_id, e, pos)
        example = load(raw)
        return {"image": augment(example["image"], key),
                "label": tf.cast(example["label"], tf.int32)}

    ds = ds.map(plain(prepare), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(local_batch, drop_remainder=True)
    options = tf.data.Options()
    options.deterministic = True  # parallel maps keep their input order
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
