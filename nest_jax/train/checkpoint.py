"""Training checkpoints: orbax CheckpointManager over the whole train state, async, atomic, checked.

Layout: `<workdir>/checkpoints/<step>/default` holds the train state (params, optimizer state, EMA,
batch stats, step, raw rng key); `<step>/data` holds the input iterator's position, one JSON file
per process (`process_<i>-of-<n>.json`, `nest_jax.train.data_position`), when the data module can
report it. Without it the position is the step itself: the input stream is a pure function of
(seed, step). Orbax writes each checkpoint into a temporary directory and renames it to `<step>`
only when complete, so a partially written checkpoint is never listed.

Guarantees on top of orbax:
- nothing non-finite is ever saved: `save` first reduces every float leaf of the state to one
  on-device "all finite" flag (the only value fetched) and refuses a state that fails;
- `restore_latest` restores the newest checkpoint that reads and is finite; one that does not is
  moved aside to `<step>.corrupt` with a one-line warning, and the previous one is tried;
- a model whose parameter shapes differ from the checkpoint is one `UserError` naming the first
  mismatching parameter and both shapes, found from the checkpoint's metadata before reading;
- a full disk is one `UserError` line naming the step, the directory and the last good checkpoint;
- every array carries a checksum (`nest_jax.train.integrity`) verified at restore: a checkpoint whose
  bytes changed after writing is treated like an unreadable one;
- retention (`max_to_keep`; 0 keeps every checkpoint) deletes only what nest_jax wrote, never the
  newest good checkpoint, and moves aside what it did not write (`nest_jax.train.retention`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

# The layout lives in the convert layer, which reads a workdir's weights without the trainer.
from nest_jax.convert.checkpoint import ignore_closed_loop_callbacks as _ignore_closed_loop_callbacks
from nest_jax.convert.checkpoint import is_no_space as _is_no_space
from nest_jax.convert.checkpoint import quiet_orbax_on_full_disk as _quiet_orbax_on_full_disk
from nest_jax.convert.workdir import CHECKPOINTS, DATA, STATE, as_path
from nest_jax.errors import UserError
from nest_jax.train import data_position, integrity, retention
from nest_jax.train.data_position import DataStateHandler, DataStateRestore, DataStateSave
from nest_jax.train.preemption import signals_held, wait_for_all_processes

log = logging.getLogger(__name__)

CHECKSUMS = retention.CHECKSUMS


def abstract_with_shardings(abstract: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying the target shardings: orbax restores straight into them."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


# One bool: every element of every float leaf of a tree is finite (on device; jit drops the unused checksums).
all_finite = jax.jit(lambda tree: integrity.finite_and_checksums(tree)[0])


class NonFiniteStateError(FloatingPointError):
    """The state to be saved holds NaN or Inf values; it was not saved."""


class CorruptCheckpointError(ValueError):
    """A checkpoint read back differs from what was written (its checksums do not match)."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _shape_mismatch(saved: Any, abstract: Any) -> str | None:
    """First parameter whose saved shape differs from the model's, as one line; None if all match."""
    from nest_jax.train.sharding import path_str

    want = {path_str(p): tuple(a.shape) for p, a in jax.tree_util.tree_flatten_with_path(abstract)[0]}
    have = {
        path_str(p): tuple(getattr(m, "shape", ()) or ()) for p, m in jax.tree_util.tree_flatten_with_path(saved)[0]
    }
    # Parameters first: an optimizer-state or EMA mismatch is a consequence of theirs.
    for name, shape in sorted(want.items(), key=lambda kv: not kv[0].startswith("params/")):
        if name not in have:
            return f"parameter {name} {shape} of the model is not in the checkpoint"
        if have[name] != shape:
            return f"parameter {name} has shape {have[name]} in the checkpoint but {shape} in the model"
    extra = sorted(set(have) - set(want))
    if extra:
        return f"the checkpoint has {extra[0]} {have[extra[0]]}, which the model does not"
    return None


def _listed(read: Any, tries: int = 20) -> Any:
    """`read()` (a listing of the checkpoints), again while a step folder vanishes under it: another
    run's retention deleting an old checkpoint while this process lists them (orbax reports a
    folder gone between its listing and its metadata read as either error)."""
    for _ in range(tries - 1):
        try:
            return read()
        except (FileNotFoundError, NotADirectoryError):
            time.sleep(0.01)
    return read()


class Checkpointer:
    """Train-state checkpoints under `<workdir>/checkpoints/<step>`.

    create=False (evaluation) never creates a directory; the caller checks `exists()` first.
    """

    def __init__(
        self,
        workdir: str | epath.PathLike,
        *,
        max_to_keep: int | None = 3,
        async_save: bool = True,
        create: bool = True,
    ):
        self.directory = as_path(workdir) / CHECKPOINTS
        _quiet_orbax_on_full_disk()
        if max_to_keep is not None and (isinstance(max_to_keep, bool) or max_to_keep < 0):
            raise UserError(f"train.max_to_keep={max_to_keep} must be 0 (keep every checkpoint) or a positive count")
        self.max_to_keep = max_to_keep or None
        # Orbax's own retention would delete whole step folders, user files included: ours is _prune.
        options = ocp.CheckpointManagerOptions(max_to_keep=None, create=create, enable_async_checkpointing=async_save)
        handlers = {
            STATE: ocp.StandardCheckpointHandler(),
            DATA: DataStateHandler(),
            CHECKSUMS: ocp.handlers.JsonCheckpointHandler(),
        }
        self.manager = _listed(lambda: ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers))
        self._closed = False
        self._pending: int | None = None  # step of a save that may still be in flight
        self.last_good: int | None = self.latest_step()  # newest step known complete and finite

    @staticmethod
    def exists(workdir: str | epath.PathLike) -> bool:
        """Whether `workdir` holds at least one finished checkpoint (creates nothing)."""
        d = as_path(workdir) / CHECKPOINTS
        return d.is_dir() and any(p.name.isdigit() for p in d.iterdir())

    @property
    def saved_step(self) -> int | None:
        """The newest step saved by this run or found on disk (possibly still being written)."""
        return self._pending if self._pending is not None else self.last_good

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    # ---- saving ----

    def save(self, step: int, state: Any, data_state: dict | None = None) -> None:
        """Starts an (async) save of `state` (and the data position) as checkpoint `step`.

        Raises NonFiniteStateError (nothing written) if any float in `state` is NaN or Inf, and
        UserError if the disk is full.
        """
        finite, sums = jax.device_get(integrity.finite_and_checksums(state))
        if not bool(finite):
            self.wait()
            raise NonFiniteStateError(f"non-finite parameters after step {step}: not saved. " + self.resume_hint())
        args = {STATE: ocp.args.StandardSave(state), CHECKSUMS: ocp.args.JsonSave(integrity.record(state, sums))}
        if data_state is not None:
            args[DATA] = DataStateSave(data_state)
        with signals_held():  # Ctrl-C waits until orbax has the save in hand (then `close` finishes it)
            self.wait()  # a failure of the previous async save is reported for its own step
            # Whatever already sits at the new checkpoint's path is moved aside (orbax would replace it).
            if jax.process_index() == 0 and retention.displace(self.directory, step):
                self.manager.reload()
            try:
                self.manager.save(step, args=ocp.args.Composite(**args), force=True)
            except Exception as e:
                self._fail(e, step)
            self._pending = step

    def wait(self) -> None:
        """Blocks until the pending save is written; its step becomes `last_good`."""
        with signals_held():
            try:
                self.manager.wait_until_finished()
            except Exception as e:
                self._fail(e, self._pending)
            if self._pending is not None:
                self.last_good, self._pending = self._pending, None
                self._prune()

    def _prune(self) -> None:
        """Deletes the checkpoints beyond the newest `max_to_keep`, and in them only what was written."""
        if self.max_to_keep is None or jax.process_index() != 0:
            return
        if retention.prune(self.directory, self.all_steps(), self.max_to_keep, self.last_good):
            self.manager.reload()

    def _fail(self, e: Exception, step: int | None) -> None:
        self._pending = None
        if not _is_no_space(e):
            raise e
        try:  # step folders on disk that orbax finished (renamed into place), without asking orbax
            finished = [int(p.name) for p in self.directory.iterdir() if p.name.isdigit() and int(p.name) != step]
        except OSError:
            finished = []
        good = self.last_good if self.last_good is not None else max(finished, default=None)
        self._close_manager(quiet=True)  # orbax's background threads stop now, not at interpreter exit
        if jax.process_index() == 0 and step is not None:  # the half-written copy only takes space
            retention.remove_partial(self.directory, f"{step}.orbax-checkpoint-tmp")
        where = f"the last good checkpoint is step {good}" if good is not None else "no checkpoint is complete yet"
        raise UserError(
            f"no space left on device while saving step {step} in {self.directory}; {where}: free space "
            "and rerun to resume"
        ) from None

    def resume_hint(self) -> str:
        """Where training can resume from, as the end of an error message."""
        if self.last_good is None:
            return (
                f"No checkpoint was saved in {self.directory}: restart with a lower learning rate "
                "(--config.optimizer.lr=...), optimizer.clip_norm, or check the inputs."
            )
        return (
            f"The last good checkpoint is step {self.last_good} in {self.directory}: rerun with a "
            "lower learning rate (--config.optimizer.lr=...) or optimizer.clip_norm to resume from it."
        )

    # ---- restoring ----

    def restore(self, abstract_state: Any, shardings: Any, step: int | None = None) -> Any:
        """Restores checkpoint `step` (default: latest) directly into the given shardings."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        target = abstract_with_shardings(abstract_state, shardings)
        args = {STATE: ocp.args.StandardRestore(target)}
        checked = (self.directory / str(step) / CHECKSUMS).exists()
        if checked:
            args[CHECKSUMS] = ocp.args.JsonRestore()
        out = self.manager.restore(step, args=ocp.args.Composite(**args))
        if checked:
            problem = integrity.mismatch(out[STATE], out[CHECKSUMS])
            if problem:
                raise CorruptCheckpointError(f"checkpoint {step}: {problem}")
        return out[STATE]

    def data_file(self, step: int) -> epath.Path:
        """This process's input-position file in checkpoint `step` (`nest_jax.train.data_position`)."""
        return self.directory / str(step) / DATA / data_position.file_name()

    def restore_data(self, step: int) -> dict | None:
        """This process's saved input position at `step`, or None if the checkpoint has none."""
        if not (self.directory / str(step) / DATA).exists():
            return None
        try:
            return self.manager.restore(step, args=ocp.args.Composite(**{DATA: DataStateRestore()}))[DATA]
        except Exception as e:  # the step is still a pure function of (seed, step): fall back to it
            log.warning(
                "could not read the input position of checkpoint %d (%s); restarting the input at that step", step, e
            )
            return None

    def check_shapes(self, step: int, abstract_state: Any) -> None:
        """UserError if the model's parameter shapes differ from checkpoint `step`'s metadata."""
        meta = self.manager.item_metadata(step)
        meta = meta[STATE] if meta is not None and STATE in meta else None
        tree = getattr(meta, "tree", meta)
        if not tree:  # no metadata to compare with: the restore itself decides
            return
        problem = _shape_mismatch(tree, abstract_state)
        if problem:
            raise UserError(
                f"the checkpoint {self.directory / str(step)} does not fit the model: {problem}; "
                "use the config it was trained with, or another --workdir"
            )

    def restore_latest(
        self, abstract_state: Any, shardings: Any, *, set_aside: bool = True, retries: int = 10
    ) -> tuple[int, Any] | None:
        """(step, state) of the newest checkpoint that reads and is finite; None if there is none.

        Unreadable or non-finite checkpoints are moved aside to `<step>.corrupt` (set_aside=False,
        for evaluation: only skipped, the workdir is left as it is). With set_aside=False a run may
        be training in the same workdir: a checkpoint that its retention deletes while it is read
        (a newer one has appeared) is not unreadable, the newest is read instead, at most `retries`
        times; then a UserError.
        """
        _ignore_closed_loop_callbacks()  # before reading: a read cut short leaves callbacks behind
        failures: dict[int, int] = {}  # set_aside=False: a step failing twice in place is unreadable
        for _ in range(retries + 1):
            listed = sorted((s for s in self.all_steps() if failures.get(s, 0) < 2), reverse=True)
            for step in listed:
                try:
                    self.check_shapes(step, abstract_state)
                    state = self.restore(abstract_state, shardings, step)
                    if not bool(all_finite(state)):
                        raise ValueError("it holds NaN or Inf values")
                except UserError:
                    raise
                except Exception as e:  # noqa: BLE001 -- any failure to read means this copy is unusable
                    if set_aside:
                        self._set_aside(step, e)
                        continue
                    failures[step] = failures.get(step, 0) + 1
                    if self._superseded(step) or failures[step] < 2:  # deleted, or still being finalized
                        log.info("checkpoint %d changed while it was read (%s); reading again", step, _first_line(e))
                        time.sleep(0.05)
                        break
                    log.warning(
                        "checkpoint %d in %s is unreadable (%s); trying the previous one",
                        step,
                        self.directory,
                        _first_line(e),
                    )
                    continue
                self.last_good = step
                return step, state
            else:  # nothing readable in this listing; beside a running run, a listing taken while it
                # renames a new step into place and deletes the old one can miss both: list again
                if set_aside or not self._relisted_differs(listed, failures):
                    return None
                log.info("the checkpoints in %s changed while they were listed; listing again", self.directory)
        raise UserError(
            f"the checkpoints in {self.directory} were replaced {retries + 1} times while being read (a run "
            "saving faster than they can be read): raise train.checkpoint_every_steps or evaluate after training"
        )

    def _superseded(self, step: int) -> bool:
        """Whether checkpoint `step` has been deleted, or a newer one saved, since it was listed."""
        _listed(self.manager.reload)
        steps = self.all_steps()
        return step not in steps or not (self.directory / str(step) / STATE).exists() or max(steps) > step

    def _relisted_differs(self, listed: list[int], failures: dict[int, int]) -> bool:
        """Whether a fresh listing holds a step to try that `listed` did not."""
        _listed(self.manager.reload)
        return any(s not in listed and failures.get(s, 0) < 2 for s in self.all_steps())

    def _set_aside(self, step: int, err: Exception) -> None:
        reason = _first_line(err)
        dst = retention.free_name(self.directory, f"{step}.corrupt")
        if jax.process_index() == 0:
            (self.directory / str(step)).rename(dst)
        wait_for_all_processes(f"nest_jax_set_aside_{step}")
        log.warning("checkpoint %d is unreadable (%s): moved it to %s; trying the previous one", step, reason, dst)
        self.manager.reload()

    def close(self, quiet: bool = False) -> None:
        """Waits for the pending save and closes; quiet=True (after another error) raises nothing."""
        if self._closed:
            return
        try:
            self.wait()
        except Exception:
            if not quiet:
                raise
        finally:
            self._close_manager(quiet)

    def _close_manager(self, quiet: bool) -> None:
        """Closes orbax's manager once; quiet: its failure (the same one again) is not raised."""
        if self._closed:
            return
        self._closed = True
        try:
            self.manager.close()
        except Exception:  # noqa: BLE001 -- closing after a failed save must not hide it
            if not quiet:
                raise
