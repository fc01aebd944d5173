"""`train_and_evaluate(config, workdir)`: the one training loop (setup, data, model, loop, eval).

Every task runs here: `config.task` "classification" (`trainer.make_trainer`) or "gan"
(`gan.make_gan_trainer`, whose evaluators see the EMA generator); a task is a train state, its
shardings and a jitted train step. Resumes automatically from the newest readable checkpoint in
`workdir` (an `etils.epath` path: local or gs://), with the input iterator's saved position when
the data module reports one; one run per workdir (a lock file); SIGTERM saves (unless that step is
saved already) and raises `Preempted`; a non-finite loss or non-finite parameters stop training
with a FloatingPointError naming the last good checkpoint; each checkpoint is saved before the
evaluations of the same step, so a failing evaluation loses nothing. Evaluations are the `config.evals` entries
(`nest_jax.train.evaluators`); metrics go to TensorBoard event files and `metrics.jsonl`
(`nest_jax.train.writers`), one progress line per log interval to stdout. `config.mode == "eval"`
runs the evaluators on the newest checkpoint and writes nothing. Defaults of every field read here
live in `config_base.base_config()` only. See docs/training.md.
"""

from __future__ import annotations

import importlib
import logging
import math
import time
from typing import Any

import jax
import numpy as np
from clu import parameter_overview

from nest_jax.errors import Interrupted, Preempted, UserError
from nest_jax.train import data_position
from nest_jax.train.checkpoint import Checkpointer, as_path
from nest_jax.train.evaluators import EvalData, build_evaluators, check_batch_size
from nest_jax.train.lock import WorkdirLock
from nest_jax.train.preemption import Preemption, signals_held, wait_for_all_processes
from nest_jax.train.sharding import make_mesh
from nest_jax.train.trainer import make_trainer, shard_batch
from nest_jax.train.validate import validate_config
from nest_jax.train.writers import MetricWriter, Progress, write_file

log = logging.getLogger(__name__)


def mesh_axes(config: Any) -> dict:
    return dict(config.mesh.axes)


def schedule_lengths(config: Any, num_train: int) -> tuple[int, int, int]:
    """(num_train_steps, warmup_steps, steps_per_epoch) from steps or epochs in the config."""
    steps_per_epoch = max(num_train // int(config.train.global_batch_size), 1)
    steps = config.train.num_train_steps or math.ceil(config.train.num_epochs * steps_per_epoch)
    warmup = config.optimizer.warmup_steps
    if warmup is None:
        warmup = int(round(float(config.optimizer.warmup_epochs) * steps_per_epoch))
    return int(steps), int(warmup), steps_per_epoch


def _check_finite(metrics: Any, step: int, ckpt: Checkpointer) -> None:
    loss = float(jax.device_get(metrics["loss"]))
    if not math.isfinite(loss):
        ckpt.wait()
        raise FloatingPointError(
            f"non-finite training loss {loss} at step {step}: training stopped. " + ckpt.resume_hint()
        )


def train_and_evaluate(config: Any, workdir: Any, *, data: Any = None) -> dict[str, Any]:
    """Trains `config` in `workdir` (resuming if it holds a checkpoint); returns the final metrics.

    workdir: a local path or any `etils.epath` path (gs://...). data: a module with the
    `nest_jax.data` API (get_info, train_iterator, eval_iterator); default `nest_jax.data`. Tests
    pass a small in-memory stand-in.
    """
    # ---- setup ----
    validate_config(config, check_dataset=data is None)
    data = data if data is not None else importlib.import_module("nest_jax.data")
    workdir = as_path(workdir)
    mode = config.mode
    if mode == "eval" and not Checkpointer.exists(workdir):
        raise UserError(
            f"--mode=eval needs a checkpoint but {workdir} has none (no {workdir}/checkpoints/<step>); "
            "pass the --workdir of a training run, or train first"
        )
    mesh = make_mesh(mesh_axes(config))
    for field in ("global_batch_size", "eval_batch_size"):  # positive multiples of the batch-axis devices
        check_batch_size(int(config.train[field]), mesh, f"--config.train.{field}")
    with WorkdirLock(workdir, enabled=mode == "train" and jax.process_index() == 0):
        return _train_and_evaluate(config, workdir, data, mesh, mode)


def make_task_trainer(config: Any, mesh: Any, info: Any, num_steps: int, warmup: int) -> tuple[Any, tuple]:
    """The trainer of `config.task` and the extra arguments of its train step (distillation teachers)."""
    if config.task == "gan":
        from nest_jax.train.gan import make_gan_trainer

        return make_gan_trainer(config, mesh), ()  # any other task name was refused by validate_config
    teachers, teacher_params = {}, {}
    if config.distill:
        from nest_jax.train.distill import load_teachers

        teachers, teacher_params = load_teachers(config, mesh, info.num_classes)
    return make_trainer(
        config, mesh, num_classes=info.num_classes, num_train_steps=num_steps, warmup_steps=warmup, teachers=teachers
    ), (teacher_params,)


def _scalars(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}


def _run_evals(evaluators: dict, state: Any, step: int, last: bool, writer: MetricWriter) -> dict:
    out: dict = {}
    for name, ev in evaluators.items():
        if ev.due(step, last):
            t = time.perf_counter()
            metrics = ev.run(state, step)
            log.info(
                "evaluation %s at step %d (%.1f s): %s",
                name,
                step,
                time.perf_counter() - t,
                {k: round(v, 4) for k, v in _scalars(metrics).items()},
            )
            writer.write(step, metrics)
            out.update(_scalars(metrics))
    return out


def _train_and_evaluate(config: Any, workdir: Any, data: Any, mesh: Any, mode: str) -> dict[str, Any]:
    t_start = time.perf_counter()
    is_main = jax.process_index() == 0
    training = mode == "train"
    tcfg = config.train
    if is_main and training:  # the workdir lock has created the workdir
        write_file(workdir / "config.json", config.to_json_best_effort(indent=2))
    info = data.get_info(config.dataset)
    num_steps, warmup, steps_per_epoch = schedule_lengths(config, info.num_train)
    log.info(
        "%s: %d train / %d eval examples, %d classes; %d steps (%d per epoch); mesh %s",
        info.name,
        info.num_train,
        info.num_eval,
        info.num_classes,
        num_steps,
        steps_per_epoch,
        dict(mesh.shape),
    )

    # ---- model, sharded state ----
    trainer, step_args = make_task_trainer(config, mesh, info, num_steps, warmup)
    rest = trainer.init_rest()
    evaluators = build_evaluators(config, lambda s: trainer.eval_model(s, rest), EvalData(config, data, mesh))
    ckpt = Checkpointer(workdir, max_to_keep=tcfg.max_to_keep, create=training)
    writer = MetricWriter(workdir, enabled=is_main and training)  # evaluation writes nothing
    try:
        found = ckpt.restore_latest(trainer.abstract_state, trainer.state_shardings, set_aside=training)
        data_state = None
        if found is not None:
            state = found[1]
            data_state = ckpt.restore_data(found[0])
            log.info("resumed from checkpoint step %d in %s", found[0], ckpt.directory)
        elif not training:
            raise UserError(f"--mode=eval: no readable checkpoint in {ckpt.directory}")
        else:
            state = trainer.init_state()
            if config.init_from.checkpoint or config.model.get("pretrained"):
                from nest_jax.train.init_from import initialize_from

                state = initialize_from(config, trainer, state, info.num_classes)
        # The parameter table: in full to WORKDIR/params.txt, one summary line to the log.
        abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), trainer.parameters(state))
        leaves = jax.tree.leaves(abstract)
        count = sum(math.prod(a.shape) for a in leaves)
        nbytes = sum(math.prod(a.shape) * np.dtype(a.dtype).itemsize for a in leaves)
        where = ""
        if is_main and training:
            write_file(workdir / "params.txt", parameter_overview.get_parameter_overview(abstract, include_stats=False))
            where = f" (table: {workdir / 'params.txt'})"
        log.info("parameters: %s in %d arrays, %.1f MiB%s", f"{count:,}", len(leaves), nbytes / 2**20, where)
        start = int(jax.device_get(state["step"]))

        if not training:
            return dict(_run_evals(evaluators, state, start, True, writer), step=start)

        # ---- loop ----
        # stop_after_steps: end this run early (same schedule as the full run; resume continues it).
        end = min(num_steps, int(tcfg.stop_after_steps or num_steps))
        if start >= end:
            message = (
                f"this run already reached step {start} of {num_steps} (stop_after_steps="
                f"{tcfg.stop_after_steps}) in {workdir}: nothing to train. To continue, raise "
                "--config.train.stop_after_steps or the schedule length "
                "(--config.train.num_train_steps / num_epochs)"
            )
            log.warning("%s", message)
            return {"step": start, "message": message}
        log_every, ckpt_every = int(tcfg.log_every_steps), int(tcfg.checkpoint_every_steps or 0)
        # Another seed: UserError; another step: ignored (the step places the input).
        data_state = data_position.checked(data_state, step=start, seed=int(config.seed), where=ckpt.data_file(start))
        it = data.train_iterator(
            config.dataset,
            global_batch_size=int(tcfg.global_batch_size),
            seed=int(config.seed),
            start_step=start,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        # The iterator's own position (e.g. a grain iterator) when it can report one; otherwise
        # start_step alone places it: batch k is a pure function of (seed, k).
        saves_position = callable(getattr(it, "get_state", None))
        if data_state is not None and callable(getattr(it, "set_state", None)):
            it.set_state(data_state)
        progress = Progress(num_steps, start, enabled=is_main)
        profile_at = start + 10 if is_main and tcfg.profile else None
        result: dict[str, Any] = {}
        if start == 0 and trainer.evaluate_at_start:  # the evaluations' curves start at initialization
            result.update(_run_evals(evaluators, state, 0, False, writer))
            writer.flush()
        pending, window = None, []
        step = start
        wait_for_all_processes("nest_jax_train_start")
        with Preemption() as preemption:
            while step < end:
                if preemption.interrupted:  # a Ctrl-C whose KeyboardInterrupt was dropped on the way
                    raise KeyboardInterrupt
                if preemption.reached(step):
                    if ckpt.saved_step != step:  # a regular save of this step may have just happened
                        ckpt.save(step, state, it.get_state() if saves_position else None)
                    ckpt.wait()
                    log.warning("preempted: checkpoint %d is saved in %s", step, ckpt.directory)
                    raise Preempted(step, str(ckpt.directory))
                if step == profile_at:
                    jax.profiler.start_trace(str(workdir / "profile"))
                batch = shard_batch(next(it), trainer.batch_sharding)
                with jax.profiler.StepTraceAnnotation("train", step_num=step):
                    state, metrics = trainer.train_step(state, batch, rest, *step_args)
                # The previous step's loss is checked now, so the check never stalls the device queue.
                if pending is not None:
                    _check_finite(pending, step - 1, ckpt)
                pending = metrics
                window.append(metrics)
                step += 1
                if profile_at is not None and step == profile_at + 5:
                    jax.block_until_ready(state)
                    jax.profiler.stop_trace()
                    log.info("profile of steps %d-%d in %s", profile_at, step - 1, workdir / "profile")
                last = step == end
                save_now = bool(ckpt_every and step % ckpt_every == 0) or last
                evals_now = [ev for ev in evaluators.values() if ev.due(step, last)]
                if save_now or evals_now or step % log_every == 0:
                    _check_finite(pending, step - 1, ckpt)  # never report a bad loss
                if step % log_every == 0 or last:
                    means = _scalars(jax.device_get(jax.tree.map(lambda *xs: np.mean(np.stack(xs)), *window)))
                    writer.write(step, {f"train_{k}": v for k, v in means.items()})
                    progress.update(step, means)
                    window = []
                if save_now:  # before evaluating: a failing evaluation must not lose the training
                    ckpt.save(step, state, it.get_state() if saves_position else None)
                    writer.flush()
                if evals_now:
                    result.update(_run_evals(evaluators, state, step, last, writer))
                    writer.flush()
        progress.close()
        ckpt.close()
        writer.close()
        result["step"] = step
        if is_main:
            wall = time.perf_counter() - t_start
            m, s = divmod(int(wall), 60)
            log.info(
                "done: step %d in %s; final metrics %s",
                step,
                f"{m} min {s} s" if m else f"{wall:.1f} s",
                {k: round(v, 4) for k, v in result.items() if isinstance(v, float)},
            )
            log.info(
                "checkpoints: %s; metrics: %s; TensorBoard: tensorboard --logdir '%s'",
                ckpt.directory,
                workdir / "metrics.jsonl",
                workdir,
            )
        return result
    except KeyboardInterrupt:  # Ctrl-C: the save in progress is finished, then one line says where to resume
        with signals_held():
            ckpt.close(quiet=True)
        raise Interrupted(ckpt.last_good, str(ckpt.directory)) from None
    finally:  # after an error: the first error is the one reported
        writer.close(quiet=True)
        ckpt.close(quiet=True)
