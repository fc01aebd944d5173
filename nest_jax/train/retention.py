"""What a checkpoint folder may hold, and what retention deletes (`nest_jax.train.checkpoint`).

Retention deletes only what nest_jax wrote: a step folder that also holds other files keeps them,
renamed to `<step>.kept`; anything already at the path of a new checkpoint is moved to
`<step>.displaced`; an unreadable checkpoint is set aside as `<step>.corrupt`. Process 0 only.
"""

from __future__ import annotations

import contextlib
import logging

from etils import epath

from nest_jax.convert.checkpoint import remove_settled
from nest_jax.convert.workdir import DATA, STATE

log = logging.getLogger(__name__)

CHECKSUMS = "checksums"
# What orbax and nest_jax write into a step folder; retention deletes these and nothing else.
WRITTEN = (STATE, DATA, CHECKSUMS, "_CHECKPOINT_METADATA", "commit_success.txt")


def free_name(directory: epath.Path, stem: str) -> epath.Path:
    """`directory/stem`, or `stem1`, `stem2`, … : the first name not taken."""
    dst, n = directory / stem, 1
    while dst.exists():
        dst, n = directory / f"{stem}{n}", n + 1
    return dst


def remove_partial(directory: epath.Path, prefix: str) -> None:
    """Best effort: a failed save's temporary folder (its other writes may still be landing)."""
    if "://" not in str(directory):
        remove_settled(directory, prefix)
        return
    for partial in directory.glob(f"{prefix}*"):
        with contextlib.suppress(OSError):
            partial.rmtree() if partial.is_dir() else partial.unlink()


def displace(directory: epath.Path, step: int) -> bool:
    """Moves whatever sits at checkpoint `step`'s path aside; whether there was anything."""
    target = directory / str(step)
    if not target.exists():
        return False
    dst = free_name(directory, f"{step}.displaced")
    target.rename(dst)
    log.warning("%s already existed and is not this run's checkpoint: moved it to %s", target, dst)
    return True


def prune(directory: epath.Path, steps: list[int], keep: int, last_good: int | None) -> bool:
    """Deletes what nest_jax wrote in the checkpoints beyond the newest `keep` (never `last_good`);
    whether any was deleted."""
    old = [s for s in sorted(steps, reverse=True)[keep:] if s != last_good]
    for step in old:
        folder = directory / str(step)
        for name in WRITTEN:
            entry = folder / name
            entry.rmtree() if entry.is_dir() else entry.unlink(missing_ok=True)
        left = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        if left:
            dst = free_name(directory, f"{step}.kept")
            folder.rename(dst)
            log.warning(
                "deleted checkpoint %d but kept %s, which nest_jax did not write: now in %s", step, left[:5], dst
            )
        elif folder.exists():
            folder.rmdir() if folder.is_dir() else None
    return bool(old)
