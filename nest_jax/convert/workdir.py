"""The layout of a training workdir's checkpoints, and reading their weights without the trainer.

`<workdir>/checkpoints/<step>/default` holds the train state written by `nest_jax.train.checkpoint`
(an orbax PyTree: params, optimizer state, EMA, batch stats, step, rng key); `<step>/data` holds
the input pipeline's position. The names live here, below the training system, so that reading a
workdir's weights needs neither the trainer nor the optimizer: only the `params` (or `ema`) and
`batch_stats` subtrees are read, as host NumPy arrays, whatever mesh wrote them.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from nest_jax.convert.common import path_str
from nest_jax.errors import UserError
from nest_jax.paths import as_path  # noqa: F401  (the one path helper, re-exported)

CHECKPOINTS = "checkpoints"  # <workdir>/checkpoints/<step>/
STATE, DATA = "default", "data"  # orbax item names; "default" keeps single-item readers working
PARAMS, EMA, BATCH_STATS = "params", "ema", "batch_stats"  # keys of the train state read as weights
# A GAN run's state (nest_jax.train.gan) holds both networks; its weights are the generator's.
GAN_GENERATOR = {PARAMS: "g", EMA: "g_ema", BATCH_STATS: "g_stats"}


def is_workdir(path: epath.Path) -> bool:
    return (path / CHECKPOINTS).is_dir()


def checkpoint_steps(workdir: str | os.PathLike) -> list[int]:
    """The steps of the finished checkpoints in a workdir, ascending (set-aside `.corrupt` ones and
    orbax's temporary directories are not steps)."""
    directory = as_path(workdir) / CHECKPOINTS
    return sorted(ocp.path.step.checkpoint_steps(directory)) if directory.is_dir() else []


def _flat(tree: dict) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {path_str(getattr(k, "key", getattr(k, "idx", k)) for k in p): np.asarray(v) for p, v in leaves}


def read_workdir(
    workdir: str | os.PathLike, *, step: int | None = None, ema: bool = False
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
    """(params, batch_stats, step) of checkpoint `step` (default: the latest) of a training workdir.

    params / batch_stats: flat {'/'-joined nnx path: host array}, exactly as saved (the EMA copy is
    float32). ema=True reads the EMA parameters; a state without them, a workdir without
    checkpoints or a missing step is a one-line UserError. A GAN run's workdir gives its
    generator's weights (`GAN_GENERATOR`).
    """
    workdir = as_path(workdir)
    steps = checkpoint_steps(workdir)
    if not steps:
        raise UserError(f"{workdir} has no finished checkpoint under {CHECKPOINTS}/; train first or pass another path")
    step = steps[-1] if step is None else int(step)
    if step not in steps:
        raise UserError(f"{workdir} has no checkpoint of step {step}; its checkpoints are steps {steps}")
    item = workdir / CHECKPOINTS / str(step) / STATE
    handler = ocp.PyTreeCheckpointHandler()
    try:
        saved = handler.metadata(item).tree
        gan = PARAMS not in saved and GAN_GENERATOR[PARAMS] in saved
        names = GAN_GENERATOR if gan else {k: k for k in (PARAMS, EMA, BATCH_STATS)}
        key, stats = names[EMA if ema else PARAMS], names[BATCH_STATS]
        if key not in saved:
            raise UserError(
                f"checkpoint {step} of {workdir} holds no EMA parameters (it was trained with "
                "optimizer.ema_decay=0); load it without ema"
            )
        wanted = {k: saved[k] for k in (key, stats) if k in saved}
        # Restore as host NumPy, not into the sharding it was saved with; partial_restore leaves the
        # optimizer state and everything else unread.
        args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
        restored = handler.restore(
            item, args=ocp.args.PyTreeRestore(item=wanted, restore_args=args, partial_restore=True)
        )
    finally:
        handler.close()
    return _flat(restored[key]), _flat(restored.get(stats, {})), step
