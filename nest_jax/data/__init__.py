"""Input pipelines (host side, tf.data): the only API the training code calls.

    get_info(ds_cfg) -> DataInfo
    train_iterator(ds_cfg, *, global_batch_size, seed, start_step=0, process_index=None,
                   process_count=None) -> Iterator[{"image", "label"}]   (infinite)
    eval_iterator(ds_cfg, *, global_batch_size, process_index=None, process_count=None)
        -> Iterator[{"image", "label", "mask"}]                          (one padded pass)
    num_eval_steps(ds_cfg, global_batch_size) -> int

`ds_cfg` is `config.dataset` (see configs/). Sources: "digits" (scikit-learn, digits.py),
"image_folder" (image_folder.py), anything else is a tfds name (tfds_source.py; never downloads).
Batches are host-local: global_batch_size // process_count examples, numpy arrays.
Mixing (mixup/CutMix) happens on device: nest_jax.data.mixing.mix_batch.

Choices worth knowing: digits' split is train_test_split(test_size=0.25, stratified,
random_state=0) → 1,347 / 450; image folders are validated when indexed, bad files skipped and
reported by name; digits and folders shuffle by full permutation per epoch (`shuffle_buffer`
and `cache` apply to tfds only); extra optional keys: validate_files, image_key, label_key.
"""
from __future__ import annotations

from typing import Iterator, NamedTuple

import numpy as np

from nest_jax.data import eval_stream, train_stream
from nest_jax.data._tf import tf  # noqa: F401  (configures TF: CPU only, quiet)


class DataInfo(NamedTuple):
    name: str
    num_classes: int
    num_train: int
    num_eval: int
    image_shape: tuple[int, int, int]  # (H, W, C) as the model sees it


def get_source(ds_cfg):
    """The source for `ds_cfg.name` (cached: folder scans and tfds metadata are read once)."""
    name = ds_cfg.name
    data_dir = ds_cfg.get("data_dir", None)
    if name == "digits":
        from nest_jax.data.digits import DigitsSource
        return DigitsSource()
    if name == "image_folder":
        from nest_jax.data.image_folder import ImageFolderSource
        return ImageFolderSource.get(data_dir, train_split=ds_cfg.train_split,
                                     validate=ds_cfg.get("validate_files", True))
    from nest_jax.data.tfds_source import TfdsSource
    return TfdsSource.get(name, data_dir, image_key=ds_cfg.get("image_key", "image"),
                          label_key=ds_cfg.get("label_key", "label"))


def get_info(ds_cfg) -> DataInfo:
    source = get_source(ds_cfg)
    return DataInfo(
        name=ds_cfg.name, num_classes=source.num_classes,
        num_train=source.num_examples(ds_cfg.train_split),
        num_eval=source.num_examples(ds_cfg.eval_split),
        image_shape=(ds_cfg.image_size, ds_cfg.image_size, ds_cfg.num_channels))


def _processes(process_index, process_count) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    return process_index, process_count


def _numpy(ds) -> Iterator[dict[str, np.ndarray]]:
    yield from ds.as_numpy_iterator()


def train_iterator(ds_cfg, *, global_batch_size: int, seed: int, start_step: int = 0,
                   process_index: int | None = None,
                   process_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Infinite host-local batches {"image": float32 (b, H, W, C), "label": int32 (b,)},
    b = global_batch_size // process_count. Batch k is a pure function of (seed, k) (and the
    process); start_step=k starts at batch k. See train_stream.py for epochs and resuming."""
    p, n = _processes(process_index, process_count)
    if global_batch_size % n:
        raise ValueError(f"global batch {global_batch_size} not divisible by {n} processes")
    ds = train_stream.train_dataset(get_source(ds_cfg), ds_cfg, local_batch=global_batch_size // n,
                                    seed=seed, start_step=start_step, process_index=p,
                                    process_count=n)
    return _numpy(ds)


def num_eval_steps(ds_cfg, global_batch_size: int) -> int:
    return eval_stream.num_steps(get_info(ds_cfg).num_eval, global_batch_size)


def eval_iterator(ds_cfg, *, global_batch_size: int, process_index: int | None = None,
                  process_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """One pass over `eval_split`: {"image", "label", "mask" float32 (1 real, 0 padding)};
    exactly num_eval_steps(ds_cfg, global_batch_size) batches on every process, every example
    in exactly one (process, batch, row) with mask 1."""
    p, n = _processes(process_index, process_count)
    ds = eval_stream.eval_dataset(get_source(ds_cfg), ds_cfg, global_batch_size=global_batch_size,
                                  process_index=p, process_count=n)
    return _numpy(ds)


__all__ = ["DataInfo", "get_info", "train_iterator", "eval_iterator", "num_eval_steps",
           "get_source"]
