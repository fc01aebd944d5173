"""Saving and restoring a model's weights as an orbax checkpoint that knows how to rebuild its model.

Layout of `directory` (one orbax composite checkpoint):
  params/        orbax PyTree of the `nnx.Param` arrays, nested by parameter path
  batch_stats/   the same for `nnx.BatchStat` (only when the model has any, e.g. a ResNet)
  meta/          JSON: {"format", "model", "kwargs", "collections"} — `create_model(model, **kwargs)`
                 rebuilds the architecture.

Atomicity comes from orbax: it writes everything into a temporary sibling directory and renames it
to `directory` only once every item is complete (then `commit_success.txt` marks it), so a crash
mid-save never leaves a half-written checkpoint under the final name. `overwrite=True` replaces
only an earlier checkpoint of this format (or an empty directory), and only after the new one is
complete.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from nest_jax.convert.common import nest_paths, path_str
from nest_jax.convert.workdir import as_path
from nest_jax.errors import UserError

FORMAT = "nest_jax.params/1"
COLLECTIONS = {"params": nnx.Param, "batch_stats": nnx.BatchStat}


def _flat(model_or_state: nnx.Module | nnx.State, kind: type) -> dict[str, np.ndarray]:
    state = nnx.state(model_or_state) if isinstance(model_or_state, nnx.Module) else model_or_state
    return {path_str(k): np.asarray(v[...]) for k, v in nnx.to_flat_state(state) if isinstance(v, kind)}


def _unnest(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        out.update(_unnest(v, name + "/") if isinstance(v, dict) else {name: v})
    return out


def as_tuples(value: Any) -> Any:
    """JSON lists back to tuples: configs are frozen (hashable) dataclasses holding tuples."""
    return tuple(as_tuples(v) for v in value) if isinstance(value, list) else value


def save_params(
    model_or_state: nnx.Module | nnx.State,
    directory: str | Path,
    *,
    model_name: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Writes the Params (and BatchStats, if any) of a model or its `nnx.state`, and how to rebuild it.

    Returns the checkpoint path.
    model_name / model_kwargs: the `create_model` call that builds this architecture (JSON-able
    kwargs, e.g. {"num_classes": 10, "img_size": 384, "gelu": "tanh"}); without a name,
    `load_into` needs the model built by the caller.
    """
    directory = Path(directory).absolute()
    if directory.exists() and not overwrite:
        raise FileExistsError(f"{directory} exists; pass overwrite=True to replace it")
    if directory.exists() and not is_replaceable(directory):
        raise UserError(
            f"{directory} exists and is not a nest_jax checkpoint (no meta/ item of format {FORMAT}), "
            "so it is not replaced; choose another output directory or remove it yourself"
        )
    items = {name: _flat(model_or_state, kind) for name, kind in COLLECTIONS.items()}
    items = {name: nest_paths(flat) for name, flat in items.items() if flat}
    meta = {"format": FORMAT, "model": model_name, "kwargs": dict(model_kwargs or {}), "collections": sorted(items)}
    try:
        json.dumps(meta)
    except TypeError as e:
        raise TypeError(f"model_kwargs must be JSON-serialisable (ints, strings, lists): {e}") from None
    args = {name: ocp.args.PyTreeSave(tree) for name, tree in items.items()}
    composite = ocp.args.Composite(meta=ocp.args.JsonSave(meta), **args)
    if not directory.exists():
        with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
            ckptr.save(directory, args=composite)
        return directory
    # Replacing: orbax's own `force=True` deletes the old directory before writing, so a failed save
    # would lose both. Instead the new checkpoint is completed beside the old one, then swapped in.
    new = directory.with_name(f".{directory.name}.nest_jax-new-{os.getpid()}")
    old = directory.with_name(f".{directory.name}.nest_jax-old-{os.getpid()}")
    try:
        with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
            ckptr.save(new, args=composite, force=True)
    except BaseException:
        for leftover in directory.parent.glob(f"{new.name}*"):  # incl. orbax's own temporary directory
            shutil.rmtree(leftover, ignore_errors=True)
        raise
    os.replace(directory, old)
    try:
        os.replace(new, directory)
    except BaseException:
        os.replace(old, directory)  # put the old one back
        shutil.rmtree(new, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return directory


def is_replaceable(directory: str | Path) -> bool:
    """True for an empty directory or a `save_params` checkpoint: what `overwrite=True` may delete."""
    directory = Path(directory)
    if not directory.is_dir():
        return False
    if not any(directory.iterdir()):
        return True
    try:
        read_meta(directory)
    except Exception:  # not a checkpoint, another format, or unreadable: never delete it
        return False
    return True


def read_meta(directory: str | os.PathLike) -> dict[str, Any]:
    """The JSON written next to the arrays: {"format", "model", "kwargs", "collections"}."""
    directory = as_path(directory)
    if not (directory / "meta").is_dir():
        raise FileNotFoundError(
            f"{directory} is not a nest_jax checkpoint (no meta/ item); "
            "write one with nest_jax.convert.save_params or `python -m nest_jax.convert`"
        )
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        meta = ckptr.restore(directory, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    if meta.get("format") != FORMAT:
        raise ValueError(f"{directory}: unknown checkpoint format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def read_arrays(directory: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
    """{collection: {'/'-joined path: numpy array}} as saved, without building a model."""
    directory = as_path(directory)
    names = read_meta(directory)["collections"]
    out = {}
    handler = ocp.PyTreeCheckpointHandler()
    try:
        for name in names:
            # Each composite item is a PyTree item. Restoring as host NumPy (not in the sharding it
            # was saved with) leaves the placement to the caller.
            structure = handler.metadata(directory / name).tree
            restore = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), structure)
            out[name] = _unnest(handler.restore(directory / name, args=ocp.args.PyTreeRestore(restore_args=restore)))
    finally:
        handler.close()
    return out
