"""The foreign checkpoint formats nest_jax imports, as a library: read one, convert it into a model.

Used by the converter's command line (`python -m nest_jax.convert`) and by training
(`config.init_from`, distillation teachers). Paths go through `etils.epath`, so `gs://` works; a
remote file is copied to a local temporary file first (the readers need a seekable file).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from etils import epath
from flax import nnx

from nest_jax.convert.checkpoint import load_collection
from nest_jax.convert.common import load_array_file, path_str
from nest_jax.convert.resize import load_adapted
from nest_jax.convert.vit_npz import vit_npz_to_params
from nest_jax.errors import UserError

SOURCES = ("timm", "vit_npz", "nest_official", "nest_timm")


def is_remote(path: str | epath.PathLike) -> bool:
    return "://" in str(path)


def read_source(source: str, path: str | epath.PathLike, *, flag: str = "--input") -> dict[str, np.ndarray]:
    """The checkpoint file as a flat dict of numpy arrays. `flag` names the setting the path came
    from, for the error message (the command line's `--input`, a config field in training)."""
    path = epath.Path(path)
    if path.is_dir():
        raise UserError(
            f"{flag} {path} is a directory; pass a file (.npz, .pth, .safetensors), e.g. the "
            "official NesT parameters flattened to a '/'-keyed .npz"
        )
    if not is_remote(path):
        return load_array_file(Path(str(path)))
    if not path.exists():
        raise UserError(f"{flag} {path}: no such file")
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / path.name
        local.write_bytes(path.read_bytes())
        return load_array_file(local)


def to_params(source: str, data: dict[str, np.ndarray], model: nnx.Module) -> dict[str, np.ndarray]:
    """Source arrays -> {nest_jax path: array}, before any resizing. `model` may be abstract
    (`nnx.eval_shape`): only its class and config are read."""
    if source == "vit_npz":
        return vit_npz_to_params(data, model)
    if source == "timm":
        from nest_jax.convert.timm import timm_resnet_to_params, timm_vit_to_params

        if type(model).__name__ == "ResNet":
            return timm_resnet_to_params(data, model)
        return timm_vit_to_params(data, model)
    from nest_jax.convert import nest

    if source == "nest_official":
        return nest.official_nest_to_params(data, model.config)
    return nest.timm_nest_to_params(data, model.config)


def convert_into(
    model: nnx.Module, source: str, data: dict[str, np.ndarray], *, resize_method: str = "bicubic"
) -> list[str]:
    """Loads `data` from `source` into `model` in place, adapting resolution and head.

    Returns the names of the re-initialized (head) parameters.
    """
    arrays = to_params(source, data, model)
    stat_paths = {path_str(k) for k, _ in nnx.to_flat_state(nnx.state(model, nnx.BatchStat))}
    stats = {k: v for k, v in arrays.items() if k in stat_paths}
    fresh = load_adapted(
        model, {k: v for k, v in arrays.items() if k not in stat_paths}, source=source, resize_method=resize_method
    )
    if stat_paths:
        load_collection(model, nnx.BatchStat, stats, source=source)
    return fresh
