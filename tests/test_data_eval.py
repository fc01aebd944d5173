"""Padded eval: every process runs the same steps; every example counted exactly once."""

import collections

import numpy as np
import pytest

from nest_jax import data
from nest_jax.data import digits
from nest_jax.data.eval_stream import even_shard
from tests._data_cfg import dataset_config

MEAN, STD = 0.3053, 0.3760


def _key(image):
    return np.round(image, 4).tobytes()


@pytest.mark.parametrize("process_count,global_batch", [(2, 64), (3, 96), (3, 33)])
def test_eval_covers_every_example_once_with_equal_steps(process_count, global_batch):
    cfg = dataset_config(image_size=8, eval_resize="resize")  # test split: 450 digits
    steps = data.num_eval_steps(cfg, global_batch)
    assert steps == -(-450 // global_batch) and 450 % global_batch != 0
    seen, labels = collections.Counter(), collections.Counter()
    for p in range(process_count):
        batches = list(
            data.eval_iterator(cfg, global_batch_size=global_batch, process_index=p, process_count=process_count)
        )
        assert len(batches) == steps
        for b in batches:
            assert b["image"].shape[0] == global_batch // process_count
            real = b["mask"] == 1
            assert set(np.unique(b["mask"])) <= {0.0, 1.0}
            assert not b["image"][~real].any()  # padding is blank
            seen.update(_key(x) for x in b["image"][real])
            labels.update(b["label"][real].tolist())
    x, y = digits.load_split_arrays()["test"]
    assert seen == collections.Counter(_key(((xi - MEAN) / STD).astype(np.float32)) for xi in x)
    assert labels == collections.Counter(y.tolist())


def test_even_shards_partition_the_range():
    for n in (0, 1, 7, 450, 1001):
        for count in (1, 2, 3, 8):
            shards = [even_shard(n, p, count) for p in range(count)]
            assert shards[0][0] == 0 and shards[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(shards, shards[1:]))
            sizes = [e - s for s, e in shards]
            assert max(sizes) - min(sizes) <= 1


def test_eval_split_argument_reads_another_split():
    """`split=` (for evaluators) overrides eval_split: the train split's 1,347 digits in order."""
    cfg = dataset_config(image_size=8, eval_resize="resize")
    assert data.num_eval_steps(cfg, 500, split="train") == 3
    batches = list(data.eval_iterator(cfg, global_batch_size=500, split="train", process_index=0, process_count=1))
    assert len(batches) == 3
    labels = np.concatenate([b["label"] for b in batches])
    mask = np.concatenate([b["mask"] for b in batches])
    assert mask.sum() == 1347
    np.testing.assert_array_equal(labels[:1347], digits.load_split_arrays()["train"][1])
