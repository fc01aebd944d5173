"""Input pipelines (host side, NumPy/PIL on grain; no TensorFlow): the API the training code calls.

    get_info(ds_cfg) -> DataInfo
    train_iterator(ds_cfg, *, global_batch_size, seed, start_step=0, process_index=None,
                   process_count=None) -> TrainIterator                   (infinite)
        next(it) -> {"image": float32 (b, H, W, C) normalized, "label": int32 (b,)}
        it.get_state() -> {"step": k, "seed": s} (JSON);  it.set_state(state): continue at batch k
    eval_iterator(ds_cfg, *, global_batch_size, split=None, process_index=None,
                  process_count=None) -> Iterator[{"image", "label", "mask"}]   (one padded pass)
    num_eval_steps(ds_cfg, global_batch_size, split=None) -> int
    get_source(ds_cfg) -> the dataset source (lookup(split)[i] → {"image", "label"})

`ds_cfg` is `config.dataset` (see configs/). Sources, all random access by index: "digits"
(scikit-learn, digits.py), "image_folder" (image_folder.py), anything else is a tfds name read
through `tfds.data_source` from array_record files (tfds_source.py; never downloads), or through
TensorFlow from TFRecord files when `tfrecord: True` and the `[tf]` extra is installed
(tfrecord_source.py). Batches are host-local: global_batch_size // process_count examples, NumPy
arrays; batch k is a pure function of (seed, k) and the process (train_stream.py). Mixing
(mixup/CutMix) happens on device, in the train step.

Choices worth knowing: digits' split is train_test_split(test_size=0.25, stratified,
random_state=0) → 1,347 / 450; image folders are validated when indexed (every file decoded),
bad files skipped and reported by name (unless `validate_files` is False); every epoch is a full
permutation of the split; `num_workers` (0: decode and augment in the calling process) sets grain's
worker processes; `image_key` / `label_key` name the tfds features; `shapes` configures the
procedural "shapes" set. Every field and its default: `nest_jax.train.config_base.base_config`.
See docs/data.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from nest_jax.data import eval_stream, train_stream


class DataInfo(NamedTuple):
    name: str
    num_classes: int
    num_train: int
    num_eval: int
    image_shape: tuple[int, int, int]  # (H, W, C) as the model sees it


def get_source(ds_cfg):
    """The source for `ds_cfg.name` (cached: folder scans and tfds metadata are read once)."""
    name = ds_cfg.name
    data_dir = ds_cfg.data_dir
    if name == "digits":
        from nest_jax.data.digits import DigitsSource

        return DigitsSource()
    if name == "shapes":  # the procedural shapes × textures set (shape-bias studies)
        from nest_jax.data.shapes import ShapesTexturesSource

        return ShapesTexturesSource.from_config(ds_cfg.shapes, ds_cfg.image_size)
    if name == "image_folder":
        from nest_jax.data.image_folder import ImageFolderSource

        return ImageFolderSource.get(
            data_dir,
            train_split=ds_cfg.train_split,
            validate=ds_cfg.validate_files,
            max_pixels=ds_cfg.max_image_pixels,
            draft=ds_cfg.jpeg_draft,
        )
    keys = dict(image_key=ds_cfg.image_key, label_key=ds_cfg.label_key)
    if ds_cfg.tfrecord:
        from nest_jax.data.tfrecord_source import TfrecordSource

        return TfrecordSource.get(name, data_dir, **keys)
    from nest_jax.data.tfds_source import TfdsSource

    return TfdsSource.get(name, data_dir, **keys)


def get_info(ds_cfg) -> DataInfo:
    source = get_source(ds_cfg)
    return DataInfo(
        name=ds_cfg.name,
        num_classes=source.num_classes,
        num_train=source.num_examples(ds_cfg.train_split),
        num_eval=source.num_examples(ds_cfg.eval_split),
        image_shape=(ds_cfg.image_size, ds_cfg.image_size, ds_cfg.num_channels),
    )


def _processes(process_index, process_count) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    return process_index, process_count


def train_iterator(
    ds_cfg,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
) -> train_stream.TrainIterator:
    """Infinite host-local batches {"image": float32 (b, H, W, C), "label": int32 (b,)},
    b = global_batch_size // process_count. Batch k is a pure function of (seed, k) (and the
    process); start_step=k starts at batch k, as does set_state(get_state() taken before batch
    k). See train_stream.py for epochs, repeated augmentation and workers."""
    p, n = _processes(process_index, process_count)
    if global_batch_size % n:
        raise ValueError(f"global batch {global_batch_size} not divisible by {n} processes")
    return train_stream.train_iterator(
        get_source(ds_cfg),
        ds_cfg,
        local_batch=global_batch_size // n,
        seed=seed,
        start_step=start_step,
        process_index=p,
        process_count=n,
    )


def num_eval_steps(ds_cfg, global_batch_size: int, split: str | None = None) -> int:
    split = split or ds_cfg.eval_split
    return eval_stream.num_steps(get_source(ds_cfg).num_examples(split), global_batch_size)


def eval_iterator(
    ds_cfg,
    *,
    global_batch_size: int,
    split: str | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """One pass over `split` (default `ds_cfg.eval_split`): {"image", "label", "mask" float32
    (1 real, 0 padding)}; exactly num_eval_steps(ds_cfg, global_batch_size, split) batches on
    every process, every example in exactly one (process, batch, row) with mask 1."""
    p, n = _processes(process_index, process_count)
    return eval_stream.eval_iterator(
        get_source(ds_cfg),
        ds_cfg,
        split=split or ds_cfg.eval_split,
        global_batch_size=global_batch_size,
        process_index=p,
        process_count=n,
    )


__all__ = ["DataInfo", "get_info", "train_iterator", "eval_iterator", "num_eval_steps", "get_source"]
