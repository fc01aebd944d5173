"""Every shipped config builds its own train and eval input pipelines (its augmentation chain, at
32 px, on data written for the test) and yields two batches of each — for every get_config
argument. The ImageNet configs' chain (inception crop → RandAugment) once failed here."""

import json

import numpy as np
import pytest

from nest_jax import data
from nest_jax.data import preprocess
from tests._configs import CONFIG_ARGS, config_for_test

NUM_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100, "imagenet2012": 1000, "image_folder": 2}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("configs")  # shared: each dataset is written once


def _check_pipelines(ds_cfg) -> None:
    info = data.get_info(ds_cfg)
    size, c = ds_cfg.image_size, ds_cfg.num_channels
    assert info.num_classes == NUM_CLASSES[ds_cfg.name] and info.image_shape == (size, size, c)
    it = data.train_iterator(ds_cfg, global_batch_size=8, seed=0, process_index=0, process_count=1)
    train = [next(it) for _ in range(2)]
    evals = list(data.eval_iterator(ds_cfg, global_batch_size=8, process_index=0, process_count=1))[:2]
    for b in train + evals:
        assert b["image"].shape == (8, size, size, c) and b["image"].dtype == np.float32
        assert np.isfinite(b["image"]).all() and b["label"].dtype == np.int32
        assert 0 <= b["label"].min() and b["label"].max() < info.num_classes
    # Normalized images: inside the normalized range of [0, 1] pixels, except random-erasing
    # noise (N(0, 1)).
    mean, std = (np.asarray(v) for v in preprocess.mean_std(ds_cfg))
    lo, hi = (0 - mean) / std, (1 - mean) / std
    for b in evals:
        real = b["image"][b["mask"] == 1]
        assert (real >= lo - 1e-4).all() and (real <= hi + 1e-4).all()
    if not ds_cfg.augment.get("random_erasing", 0.0):
        for b in train:
            assert (b["image"] >= lo - 1e-4).all() and (b["image"] <= hi + 1e-4).all()
    # Epoch 0 is a permutation of the split: two batches of 8 hold 16 distinct records' labels.
    assert sum(e["mask"].sum() for e in evals) == min(16, info.num_eval)


@pytest.mark.parametrize("config_file", sorted(CONFIG_ARGS))
def test_config_builds_its_train_and_eval_pipelines(config_file, data_dir):
    seen = set()
    for arg in CONFIG_ARGS[config_file]:
        config = config_for_test(config_file, arg, data_dir)
        key = json.dumps(config.dataset.to_dict(), sort_keys=True, default=str)
        if key in seen:  # model sizes differ, the data pipeline does not: build it once
            continue
        seen.add(key)
        _check_pipelines(config.dataset)
