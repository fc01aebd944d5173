"""Training checkpoints: orbax CheckpointManager over the whole train state, async, atomic.

Saved: params, optimizer state, EMA, batch stats, step and the raw rng key. The data position is the
step itself: the input stream is a pure function of (seed, step), so resuming at step k re-reads
exactly batch k. Orbax writes each checkpoint into a temporary directory (`<step>.orbax-checkpoint-
tmp-*`) and renames it to `<step>` only when complete, so a partially written checkpoint is never
listed and never restored.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


def abstract_with_shardings(abstract: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying the target shardings: orbax restores straight into them."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


class Checkpointer:
    """Train-state checkpoints under `<workdir>/checkpoints/<step>`."""

    def __init__(self, workdir: str, *, max_to_keep: int | None = 3, async_save: bool = True):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                               enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any) -> None:
        """Starts an (async) save of `state` as checkpoint `step`; returns before it is written."""
        self.manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def restore(self, abstract_state: Any, shardings: Any, step: int | None = None) -> Any:
        """Restores checkpoint `step` (default: latest) directly into the given shardings."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        target = abstract_with_shardings(abstract_state, shardings)
        return self.manager.restore(step, args=ocp.args.StandardRestore(target))

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

