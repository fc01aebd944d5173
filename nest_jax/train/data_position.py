"""The input iterator's position, saved with each checkpoint: one JSON file per process.

`<workdir>/checkpoints/<step>/data/process_<i>-of-<n>.json` holds what the train iterator's
`get_state()` returned (nest_jax's own stream: `{"step": k, "seed": s}`, the next batch and the
stream's seed). The file is not covered by the checkpoint's checksums, so at resume `checked`
compares it with what is: a seed other than the config's is a `UserError` naming both (the run was
trained on another data order); a step other than the checkpoint's means the file was edited or is
corrupt, and is ignored with a warning: the iterator is placed by the checkpoint's step alone,
which is exact because batch k is a pure function of (seed, k).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from nest_jax.errors import UserError

log = logging.getLogger(__name__)


def file_name() -> str:
    """This process's file in a checkpoint's `data` folder."""
    return f"process_{jax.process_index()}-of-{jax.process_count()}.json"


class DataStateHandler(ocp.CheckpointHandler):
    """Saves a JSON-serialisable dict per process (each process reads its own input shard)."""

    def save(self, directory: epath.Path, args: DataStateSave) -> None:
        (directory / file_name()).write_text(json.dumps(args.state))

    def restore(self, directory: epath.Path, args: DataStateRestore | None = None) -> dict | None:
        f = directory / file_name()
        return json.loads(f.read_text()) if f.exists() else None  # None: other process count


@ocp.args.register_with_handler(DataStateHandler, for_save=True)
@dataclasses.dataclass
class DataStateSave(ocp.args.CheckpointArgs):
    state: dict


@ocp.args.register_with_handler(DataStateHandler, for_restore=True)
@dataclasses.dataclass
class DataStateRestore(ocp.args.CheckpointArgs):
    pass


def checked(position: Any, *, step: int, seed: int, where: Any) -> dict | None:
    """The saved input position `position` if it agrees with checkpoint `step` and the config's
    `seed`, else None (the iterator is then placed by `step`); `where`: the file, for messages.

    Raises UserError when the position records another seed than `seed`."""
    if position is None:
        return None
    if not isinstance(position, dict):
        log.warning("the input position %s is not a JSON object: ignored, the input restarts at step %d", where, step)
        return None
    if (saved_seed := position.get("seed")) is not None and saved_seed != seed:
        raise UserError(
            f"checkpoint {step} was trained with seed {saved_seed!r} (its input position {where}) but the config has "
            f"seed {seed}: pass --config.seed={saved_seed} to resume it, or another --workdir to train with seed {seed}"
        )
    saved_step = position.get("step", step)
    if isinstance(saved_step, bool) or saved_step != step:
        log.warning(
            "the input position %s says step %r but the checkpoint is step %d (the file was edited or is corrupt): "
            "ignored, the input restarts at step %d (batch k is a pure function of the seed and k)",
            where,
            saved_step,
            step,
            step,
        )
        return None
    return position
