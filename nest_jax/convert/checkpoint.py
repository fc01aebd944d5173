"""Saving and restoring a model's weights as an orbax checkpoint that knows how to rebuild its model.

Layout of `directory` (one orbax composite checkpoint):
  params/        orbax PyTree of the `nnx.Param` arrays, nested by parameter path
  batch_stats/   the same for `nnx.BatchStat` (only when the model has any, e.g. a ResNet)
  meta/          JSON: {"format", "model", "kwargs", "collections"} — `create_model(model, **kwargs)`
                 rebuilds the architecture.
  _NEST_JAX_FILES  JSON list of every path the save wrote (what overwriting may delete).

The checkpoint is written into a hidden sibling directory (orbax completes it there, then
`commit_success.txt` marks it) and renamed to `directory` only once complete, so a crash or a full
disk mid-save never leaves a half-written checkpoint under the final name, and a failed save leaves
nothing behind (a full disk is one `UserError` line). `overwrite=True` replaces only an earlier
checkpoint of this format (or an empty directory), only after the new one is complete, and never
one that holds files nest_jax did not write (`foreign_files`): it refuses, naming them.
"""

from __future__ import annotations

import errno
import glob
import json
import logging
import os
import shutil
import sys
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from nest_jax.convert.common import flat_paths, host_arrays, nest_paths
from nest_jax.convert.workdir import as_path
from nest_jax.errors import UserError
from nest_jax.paths import copytree, is_remote, rmtree, walk

FORMAT = "nest_jax.params/1"
COLLECTIONS = {"params": nnx.Param, "batch_stats": nnx.BatchStat}
MANIFEST = "_NEST_JAX_FILES"  # JSON list of every path save_params wrote: what --overwrite may delete
# The top level of a checkpoint written before MANIFEST existed: orbax's files and the items.
_ORBAX_TOP = {"_CHECKPOINT_METADATA", "commit_success.txt", "meta", *COLLECTIONS}


def as_tuples(value: Any) -> Any:
    """JSON lists back to tuples: configs are frozen (hashable) dataclasses holding tuples."""
    return tuple(as_tuples(v) for v in value) if isinstance(value, list) else value


def save_params(
    model_or_state: nnx.Module | nnx.State,
    directory: str | os.PathLike,
    *,
    model_name: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> epath.Path:
    """Writes the Params (and BatchStats, if any) of a model or its `nnx.state`, and how to rebuild it.

    Returns the checkpoint path.
    model_name / model_kwargs: the `create_model` call that builds this architecture (JSON-able
    kwargs, e.g. {"num_classes": 10, "img_size": 384, "gelu": "tanh"}); without a name,
    `load_into` needs the model built by the caller.
    """
    directory = as_path(directory)
    if directory.exists() and not overwrite:
        raise FileExistsError(f"{directory} exists; pass overwrite=True to replace it")
    if directory.exists() and not is_replaceable(directory):
        raise UserError(
            f"{directory} exists and is not a nest_jax checkpoint (no meta/ item of format {FORMAT}), "
            "so it is not replaced; choose another output directory or remove it yourself"
        )
    if directory.exists() and (foreign := foreign_files(directory)):
        raise UserError(f"{directory} {holds_foreign(foreign)}: move them out of it, or choose another directory")
    items = {name: host_arrays(model_or_state, kind) for name, kind in COLLECTIONS.items()}
    items = {name: nest_paths(arrays) for name, arrays in items.items() if arrays}
    meta = {"format": FORMAT, "model": model_name, "kwargs": dict(model_kwargs or {}), "collections": sorted(items)}
    try:
        json.dumps(meta)
    except TypeError as e:
        raise TypeError(f"model_kwargs must be JSON-serialisable (ints, strings, lists): {e}") from None
    args = {name: ocp.args.PyTreeSave(tree) for name, tree in items.items()}
    composite = ocp.args.Composite(meta=ocp.args.JsonSave(meta), **args)
    # The checkpoint is completed beside `directory`, then renamed into place: orbax's own
    # `force=True` would delete an earlier checkpoint before writing, so a failed save would lose
    # both, and its temporary directory would stay behind on a full disk.
    new = directory.with_name(f".{directory.name}.nest_jax-new-{os.getpid()}")
    old = directory.with_name(f".{directory.name}.nest_jax-old-{os.getpid()}")
    quiet_orbax_on_full_disk()
    ignore_closed_loop_callbacks()
    try:
        with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
            ckptr.save(new, args=composite, force=True)
        (new / MANIFEST).write_text(json.dumps(_paths(new)))
    except BaseException as e:
        remove_settled(directory.parent, new.name)
        if is_no_space(e):
            kept = "; the earlier checkpoint there is unchanged" if directory.exists() else ""
            raise UserError(
                f"no space left on device while writing {directory}: nothing was written{kept}; "
                "free some space or choose another directory"
            ) from e
        raise
    if is_remote(directory):
        _swap_remote(new, directory)
        return directory
    if not directory.exists():
        os.replace(new, directory)
        return directory
    os.replace(directory, old)
    try:
        os.replace(new, directory)
    except BaseException:
        os.replace(old, directory)  # put the old one back
        shutil.rmtree(new, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return directory


def _swap_remote(new: epath.Path, directory: epath.Path) -> None:
    """Puts the complete checkpoint `new` at `directory` on an object store (no rename there): the
    earlier checkpoint's files are deleted, `new`'s are copied with MANIFEST last, then `new` is
    deleted. A reader never takes a half copy for a checkpoint: `read_meta` needs `meta/`, which
    comes before MANIFEST, and `foreign_files`/`is_replaceable` judge a copy without MANIFEST at its
    top level only; an interrupted swap leaves `new` complete beside it, named in the error."""
    expected = json.loads((new / MANIFEST).read_text())
    if _paths(new) != sorted(expected + [MANIFEST]):
        rmtree(new)
        raise OSError(f"{directory}: the written checkpoint does not match its file list; nothing was replaced")
    try:
        rmtree(directory)
        copytree(new, directory, last=MANIFEST)
    except BaseException as e:
        raise OSError(f"replacing {directory} failed ({e}); the complete checkpoint is in {new}") from e
    rmtree(new)


def remove_settled(parent: epath.Path, prefix: str, settle_s: float = 1.0, limit_s: float = 30.0) -> None:
    """Removes `parent/prefix*` (the new checkpoint and orbax's temporary folders) until none has
    reappeared for `settle_s`: when one write fails, orbax raises while tensorstore's other writes
    are still in flight, and those re-create their folders after a single removal."""
    start = quiet_since = time.monotonic()
    while time.monotonic() - start < limit_s:
        found = list(parent.glob(f"{glob.escape(prefix)}*"))
        for leftover in found:
            if is_remote(leftover):
                rmtree(leftover)
            elif leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        now = time.monotonic()
        if found:
            quiet_since = now
        elif now - quiet_since >= settle_s:
            return
        time.sleep(0.05)


def is_replaceable(directory: str | os.PathLike) -> bool:
    """True for an empty directory or a `save_params` checkpoint: what `overwrite=True` may replace
    (once `foreign_files` finds nothing in it that nest_jax did not write)."""
    directory = as_path(directory)
    if not directory.is_dir():
        return False
    if not any(directory.iterdir()):
        return True
    try:
        read_meta(directory)
    except Exception:  # not a checkpoint, another format, or unreadable: never delete it
        return False
    return True


def _paths(directory: epath.Path) -> list[str]:
    """Every file and folder under `directory`, '/'-joined relative to it, sorted."""
    return sorted(p.relative_to(directory).as_posix() for p in walk(directory))


def foreign_files(directory: str | os.PathLike) -> list[str]:
    """What a user put in a `save_params` checkpoint: the paths (relative; a foreign folder as
    itself, not its contents) that `save_params` did not write, from the list it records in
    `MANIFEST`. A checkpoint written without that list is checked at its top level only."""
    directory = as_path(directory)
    present = _paths(directory)
    try:
        ours = set(json.loads((directory / MANIFEST).read_text())) | {MANIFEST}
        foreign = [p for p in present if p not in ours]
    except (OSError, ValueError, TypeError):
        foreign = [p for p in present if p.split("/")[0] not in _ORBAX_TOP]
    return [p for p in foreign if not any(p.startswith(q + "/") for q in foreign)]


def holds_foreign(foreign: list[str], limit: int = 5) -> str:
    """ "holds N files nest_jax did not write (a, b, ...), which overwriting never deletes"."""
    names = ", ".join(foreign[:limit]) + (f", … {len(foreign) - limit} more" if len(foreign) > limit else "")
    return f"holds {len(foreign)} file(s) nest_jax did not write ({names}), which overwriting never deletes"


def is_no_space(e: BaseException | None) -> bool:
    """Whether `e`, or an exception it was raised from, is a full disk (orbax wraps the OSError)."""
    while e is not None:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


class NoSpaceFromOrbax(logging.Filter):
    """Drops orbax's own error records (each with a traceback, one per background thread) about a
    full disk, and asyncio's "exception was never retrieved" records of orbax's abandoned writes
    (logged when they are garbage-collected): the caller reports that failure itself, in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or ("/orbax/" not in record.pathname and record.name != "asyncio"):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        return not (is_no_space(exc) or "No space left on device" in record.getMessage())


def quiet_orbax_on_full_disk() -> None:
    for name in ("absl", "asyncio"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, NoSpaceFromOrbax) for f in logger.filters):
            logger.addFilter(NoSpaceFromOrbax())


def ignore_closed_loop_callbacks() -> None:
    """After a failed read or write, tensorstore's pending callbacks hit orbax's closed asyncio
    loop; each would print an 'Event loop is closed' traceback (hundreds for a large model). Those
    alone are dropped; every other unraisable exception still reaches the previous hook."""
    previous = sys.unraisablehook
    if getattr(previous, "_nest_jax", False):
        return

    def hook(u):
        if isinstance(u.exc_value, RuntimeError) and str(u.exc_value) == "Event loop is closed":
            return
        previous(u)

    hook._nest_jax = True
    sys.unraisablehook = hook


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
            out[name] = flat_paths(handler.restore(directory / name, args=ocp.args.PyTreeRestore(restore_args=restore)))
    finally:
        handler.close()
    return out
