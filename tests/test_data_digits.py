"""Digits pipeline: shapes, normalization, the fixed split, determinism, resume, process shards."""

import collections
import itertools

import numpy as np
import pytest
from sklearn.datasets import load_digits

from nest_jax import data
from nest_jax.data import digits
from tests._data_cfg import FULL_AUGMENT, dataset_config

MEAN, STD = 0.3053, 0.3760


def _take(iterator, n):
    return list(itertools.islice(iterator, n))


def _train(cfg, batch=32, seed=0, **kw):
    kw.setdefault("process_index", 0)
    kw.setdefault("process_count", 1)
    return data.train_iterator(cfg, global_batch_size=batch, seed=seed, **kw)


def test_digits_fixed_split_is_stratified_and_complete():
    cfg = dataset_config()
    info = data.get_info(cfg)
    assert (info.num_train, info.num_eval, info.num_classes) == (1347, 450, 10)
    arrays = digits.load_split_arrays()
    test_counts = np.bincount(arrays["test"][1], minlength=10)
    assert test_counts.min() >= 43 and test_counts.max() <= 46  # 25% of each class (174..183)
    # The two splits together are exactly sklearn's 1,797 images (as a multiset).
    every = collections.Counter(x.tobytes() for x in (load_digits().images / 16).astype(np.float32))
    both = collections.Counter(x[..., 0].tobytes() for split in ("train", "test") for x in arrays[split][0])
    assert every == both


def test_digits_eval_is_normalized_raw_digits_in_order():
    cfg = dataset_config(image_size=8, eval_resize="resize")
    batches = list(data.eval_iterator(cfg, global_batch_size=100, process_index=0, process_count=1))
    assert len(batches) == data.num_eval_steps(cfg, 100) == 5
    images = np.concatenate([b["image"] for b in batches])
    labels = np.concatenate([b["label"] for b in batches])
    mask = np.concatenate([b["mask"] for b in batches])
    assert images.dtype == np.float32 and labels.dtype == np.int32 and mask.dtype == np.float32
    assert images.shape == (500, 8, 8, 1) and mask.sum() == 450 and not mask[450:].any()
    x, y = digits.load_split_arrays()["test"]
    np.testing.assert_allclose(images[:450], (x - MEAN) / STD, atol=1e-6)
    np.testing.assert_array_equal(labels[:450], y)


def test_digits_train_batch_shapes_and_rgb_upscaling():
    cfg = dataset_config(image_size=32, num_channels=3, augment=FULL_AUGMENT)
    batch = next(_train(cfg, batch=16))
    assert batch["image"].shape == (16, 32, 32, 3) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (16,) and batch["label"].dtype == np.int32
    assert np.isfinite(batch["image"]).all()
    # Grey replicated: the channels agree wherever random erasing (independent noise) left them.
    same = np.isclose(batch["image"][..., 0], batch["image"][..., 1]).mean()
    assert same > 0.7


@pytest.fixture(scope="module")
def fresh_stream():
    """The first 17 batches of a fully augmented stream over the 450-image split: 450 / 32 →
    batch 14 straddles epochs 0 and 1, batch 16 lies inside epoch 1."""
    cfg = dataset_config(train_split="test", augment=FULL_AUGMENT)
    return cfg, _take(_train(cfg), 17)


def test_train_stream_is_a_pure_function_of_seed_and_step(fresh_stream):
    cfg, fresh = fresh_stream
    again = _take(_train(cfg), 2)
    for x, y in zip(again, fresh):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])
    other = next(_train(cfg, seed=1))
    assert not np.array_equal(other["image"], fresh[0]["image"])


@pytest.mark.parametrize("k", [14, 16])
def test_start_step_resumes_exactly_across_an_epoch_boundary(fresh_stream, k):
    cfg, fresh = fresh_stream
    resumed = next(_train(cfg, start_step=k))
    np.testing.assert_array_equal(resumed["image"], fresh[k]["image"])
    np.testing.assert_array_equal(resumed["label"], fresh[k]["label"])


def _epoch_keys(cfg, process_index, process_count, length, batch=24):
    it = _train(cfg, batch=batch * process_count, process_index=process_index, process_count=process_count)
    images = np.concatenate([b["image"] for b in _take(it, -(-length // batch))])[:length]
    return [np.round(x, 4).tobytes() for x in images]


def _train_keys(cfg):
    x = digits.load_split_arrays()["train"][0]
    return [np.round((x_i - MEAN) / STD, 4).astype(np.float32).tobytes() for x_i in x]


def test_process_shards_are_disjoint_and_cover_an_epoch():
    cfg = dataset_config()  # no augmentation: a sample is recognisable by its pixels
    shard0 = _epoch_keys(cfg, 0, 2, 674)
    shard1 = _epoch_keys(cfg, 1, 2, 673)
    assert collections.Counter(shard0 + shard1) == collections.Counter(_train_keys(cfg))
    assert not set(shard0) & set(shard1) - _duplicated(_train_keys(cfg))


def _duplicated(keys):
    return {k for k, c in collections.Counter(keys).items() if c > 1}


def test_repeated_augmentation_puts_copies_on_different_processes():
    cfg = dataset_config(repeated_aug=3)
    shards = [_epoch_keys(cfg, p, 3, 449) for p in range(3)]
    # DeiT RASampler: an epoch holds N/3 distinct images, each 3 times, one copy per process.
    assert collections.Counter(shards[0]) == collections.Counter(shards[1])
    assert collections.Counter(shards[1]) == collections.Counter(shards[2])
    assert len(set(shards[0]) - _duplicated(_train_keys(cfg))) > 400


def test_get_state_set_state_resumes_bit_identically(fresh_stream):
    """The state saved with a checkpoint (JSON) restores the exact next batches, in a new
    iterator or the same one, across the epoch boundary at batch 14."""
    import json

    cfg, fresh = fresh_stream
    it = _train(cfg)
    _take(it, 13)
    state = json.loads(json.dumps(it.get_state()))
    assert state["step"] == 13
    restored = _train(cfg)  # a fresh process would build it from start_step=0
    restored.set_state(state)
    for k, batch in enumerate(_take(restored, 3), start=13):
        np.testing.assert_array_equal(batch["image"], fresh[k]["image"])
        np.testing.assert_array_equal(batch["label"], fresh[k]["label"])
    it.set_state({"step": 2, "seed": 0})  # and backwards on the same iterator
    np.testing.assert_array_equal(next(it)["image"], fresh[2]["image"])
    with pytest.raises(ValueError, match="seed"):
        it.set_state({"step": 2, "seed": 1})


def test_worker_processes_give_the_same_stream(fresh_stream):
    """grain mp_prefetch with 2 workers: batch k is built whole by worker k mod 2, returned in
    order, so the stream equals the in-process one; its state resumes the same way."""
    cfg, fresh = fresh_stream
    cfg = cfg.copy_and_resolve_references()
    cfg.num_workers = 2
    it = _train(cfg, start_step=13)
    for k, batch in enumerate(_take(it, 3), start=13):
        assert type(batch["image"]) is np.ndarray  # plain arrays, not shared-memory views
        np.testing.assert_array_equal(batch["image"], fresh[k]["image"])
    assert it.get_state()["step"] == 16
    it.close()
