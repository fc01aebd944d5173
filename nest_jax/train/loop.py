"""`train_and_evaluate(config, workdir)`: the one training loop (setup, data, model, loop, eval).

Resumes automatically from the newest readable checkpoint in `workdir`; one run per workdir (a lock
file); SIGTERM saves (unless that step is saved already) and raises `Preempted`; a non-finite loss
or non-finite parameters stop training with a FloatingPointError naming the last good checkpoint;
each checkpoint is saved before the evaluation of the same step, so a failing evaluation loses
nothing. `config.mode == "eval"` evaluates the newest checkpoint and writes nothing.
"""
from __future__ import annotations

import importlib
import json
import logging
import math
from typing import Any

import jax
import numpy as np
from clu import metric_writers, parameter_overview, periodic_actions

from nest_jax.errors import Preempted, UserError
from nest_jax.train.checkpoint import Checkpointer, as_path
from nest_jax.train.lock import WorkdirLock
from nest_jax.train.preemption import Preemption, wait_for_all_processes
from nest_jax.train.sharding import BATCH_AXES, make_mesh
from nest_jax.train.trainer import Trainer, make_trainer, shard_batch

log = logging.getLogger(__name__)


def mesh_axes(config: Any) -> dict:
    mesh = config.get("mesh", None)
    if mesh is None:
        return {"data": -1}
    axes = mesh.get("axes", None) if hasattr(mesh, "get") else None
    return dict(axes if axes is not None else mesh)


def schedule_lengths(config: Any, num_train: int) -> tuple[int, int, int]:
    """(num_train_steps, warmup_steps, steps_per_epoch) from steps or epochs in the config."""
    steps_per_epoch = max(num_train // int(config.train.global_batch_size), 1)
    steps = config.train.get("num_train_steps", None) or math.ceil(config.train.num_epochs * steps_per_epoch)
    opt = config.optimizer
    warmup = opt.get("warmup_steps", None)
    if warmup is None:
        warmup = int(round(float(opt.get("warmup_epochs", 0.0)) * steps_per_epoch))
    return int(steps), int(warmup), steps_per_epoch


def evaluate(trainer: Trainer, data: Any, config: Any, params: Any, stats: Any, rest: Any,
             prefix: str = "eval_") -> dict[str, float]:
    """Top-1 / top-5 / loss over one pass of the eval split, padding masked out."""
    sums = None
    it = data.eval_iterator(config.dataset, global_batch_size=int(config.train.eval_batch_size),
                            process_index=jax.process_index(), process_count=jax.process_count())
    for batch in it:
        m = trainer.eval_step(params, stats, shard_batch(batch, trainer.batch_sharding), rest)
        sums = m if sums is None else jax.tree.map(lambda a, b: a + b, sums, m)
    sums = jax.device_get(sums)
    n = max(float(sums["count"]), 1.0)
    return {f"{prefix}top1": float(sums["top1"]) / n, f"{prefix}top5": float(sums["top5"]) / n,
            f"{prefix}loss": float(sums["loss"]) / n, f"{prefix}count": float(sums["count"])}


def _run_eval(trainer, data, config, state, rest) -> dict[str, float]:
    stats = state.get("batch_stats")
    out = evaluate(trainer, data, config, state["params"], stats, rest)
    if "ema" in state:  # the EMA is a separate model: evaluated on its own
        out.update(evaluate(trainer, data, config, state["ema"], stats, rest, prefix="eval_ema_"))
    return out


def _check_finite(metrics: Any, step: int, ckpt: Checkpointer) -> None:
    loss = float(jax.device_get(metrics["loss"]))
    if not math.isfinite(loss):
        ckpt.wait()
        raise FloatingPointError(f"non-finite training loss {loss} at step {step}: training stopped. "
                                 + ckpt.resume_hint())


def check_batch_sizes(config: Any, mesh: Any) -> None:
    """UserError unless both batch sizes split evenly over the mesh's batch axes and processes."""
    n = math.prod(mesh.shape[a] for a in BATCH_AXES if a in mesh.shape)
    n = math.lcm(n, jax.process_count())
    axes = "×".join(f"{a}={mesh.shape[a]}" for a in BATCH_AXES if a in mesh.shape)
    for field in ("global_batch_size", "eval_batch_size"):
        value = int(config.train[field])
        if value <= 0 or value % n:
            raise UserError(f"train.{field}={value} must be a positive multiple of {n} (the devices along "
                            f"the mesh's batch axes {axes}, {jax.process_count()} process(es)); "
                            f"set --config.train.{field}={max(n, value // n * n)}")


def train_and_evaluate(config: Any, workdir: Any, *, data: Any = None) -> dict[str, Any]:
    """Trains `config` in `workdir` (resuming if it holds a checkpoint); returns the final metrics.

    workdir: a local path or any `etils.epath` path (gs://...). data: a module with the
    `nest_jax.data` API (get_info, train_iterator, eval_iterator); default `nest_jax.data`. Tests
    pass a small in-memory stand-in.
    """
    # ---- setup ----
    data = data if data is not None else importlib.import_module("nest_jax.data")
    workdir = as_path(workdir)
    mode = config.get("mode", "train")
    if mode == "eval" and not Checkpointer.exists(workdir):
        raise UserError(f"--mode=eval needs a checkpoint but {workdir} has none (no {workdir}/checkpoints/<step>); "
                        "pass the --workdir of a training run, or train first")
    mesh = make_mesh(mesh_axes(config))
    check_batch_sizes(config, mesh)
    is_main = jax.process_index() == 0
    with WorkdirLock(workdir, enabled=mode == "train" and is_main):
        return _train_and_evaluate(config, workdir, data, mesh, mode)


def _train_and_evaluate(config: Any, workdir: Any, data: Any, mesh: Any, mode: str) -> dict[str, Any]:
    is_main = jax.process_index() == 0
    training = mode == "train"
    writer = metric_writers.create_default_writer(str(workdir), just_logging=not (is_main and training))
    if is_main and training:
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
    info = data.get_info(config.dataset)
    num_steps, warmup, steps_per_epoch = schedule_lengths(config, info.num_train)
    log.info("%s: %d train / %d eval examples, %d classes; %d steps (%d per epoch); mesh %s",
             info.name, info.num_train, info.num_eval, info.num_classes, num_steps, steps_per_epoch,
             dict(mesh.shape))

    # ---- model, sharded state ----
    teachers, teacher_params = {}, {}
    if config.get("distill", None):
        from nest_jax.train.distill import load_teachers
        teachers, teacher_params = load_teachers(config, mesh, info.num_classes)
    trainer = make_trainer(config, mesh, num_classes=info.num_classes, num_train_steps=num_steps,
                           warmup_steps=warmup, teachers=teachers)
    ckpt = Checkpointer(workdir, max_to_keep=config.train.get("max_to_keep", 3), create=training)
    try:
        found = ckpt.restore_latest(trainer.abstract_state, trainer.state_shardings, set_aside=training)
        if found is not None:
            state = found[1]
            log.info("resumed from checkpoint step %d in %s", found[0], ckpt.directory)
        elif not training:
            raise UserError(f"--mode=eval: no readable checkpoint in {ckpt.directory}")
        else:
            state = trainer.init_state()
            if config.get("init_from", None) and config.init_from.get("checkpoint", None):
                from nest_jax.train.init_from import initialize_from
                state = initialize_from(config, trainer, state, info.num_classes)
        rest = trainer.init_rest()
        if is_main:
            log.info("parameters:\n%s", parameter_overview.get_parameter_overview(
                jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state["params"]),
                include_stats=False))
        start = int(jax.device_get(state["step"]))

        if not training:
            result = _run_eval(trainer, data, config, state, rest)
            writer.write_scalars(start, result)
            writer.flush()
            return dict(result, step=start)

        # ---- loop ----
        tcfg = config.train
        log_every = int(tcfg.get("log_every_steps", 50))
        eval_every = int(tcfg.get("eval_every_steps", 0) or 0)
        ckpt_every = int(tcfg.get("checkpoint_every_steps", 0) or 0)
        # stop_after_steps: end this run early (same schedule as the full run; resume continues it).
        end = min(num_steps, int(tcfg.get("stop_after_steps", None) or num_steps))
        if start >= end:
            message = (f"this run already reached step {start} of {num_steps} (stop_after_steps="
                       f"{tcfg.get('stop_after_steps', None)}) in {workdir}: nothing to train. To continue, "
                       "raise --config.train.stop_after_steps or the schedule length "
                       "(--config.train.num_train_steps / num_epochs)")
            log.warning("%s", message)
            return {"step": start, "message": message}
        hooks = [periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer, every_secs=30)]
        if is_main and tcfg.get("profile", False):
            hooks.append(periodic_actions.Profile(logdir=str(workdir), num_profile_steps=5, first_profile=start + 10))
        it = data.train_iterator(config.dataset, global_batch_size=int(tcfg.global_batch_size),
                                 seed=int(config.seed), start_step=start, process_index=jax.process_index(),
                                 process_count=jax.process_count())
        result: dict[str, Any] = {}
        pending, window = None, []
        step = start
        wait_for_all_processes("nest_jax_train_start")
        with Preemption() as preemption:
            while step < end:
                if preemption.reached(step):
                    if ckpt.saved_step != step:  # a regular save of this step may have just happened
                        ckpt.save(step, state)
                    ckpt.wait()
                    log.warning("preempted: checkpoint %d is saved in %s", step, ckpt.directory)
                    raise Preempted(step, str(ckpt.directory))
                batch = shard_batch(next(it), trainer.batch_sharding)
                with jax.profiler.StepTraceAnnotation("train", step_num=step):
                    state, metrics = trainer.train_step(state, batch, rest, teacher_params)
                # The previous step's loss is checked now, so the check never stalls the device queue.
                if pending is not None:
                    _check_finite(pending, step - 1, ckpt)
                pending = metrics
                window.append(metrics)
                step += 1
                for hook in hooks:
                    hook(step)
                last = step == end
                save_now = bool(ckpt_every and step % ckpt_every == 0) or last
                eval_now = bool(eval_every and step % eval_every == 0) or last
                if save_now or eval_now or step % log_every == 0:
                    _check_finite(pending, step - 1, ckpt)  # never report a bad loss
                if step % log_every == 0 or last:
                    means = jax.device_get(jax.tree.map(lambda *xs: np.mean(np.stack(xs)), *window))
                    writer.write_scalars(step, {f"train_{k}": float(v) for k, v in means.items()})
                    window = []
                if save_now:  # before evaluating: a failing evaluation must not lose the training
                    ckpt.save(step, state)
                if eval_now:
                    with hooks[0].timed("eval"):
                        result = _run_eval(trainer, data, config, state, rest)
                    writer.write_scalars(step, result)
        writer.flush()
        ckpt.close()
        return dict(result, step=step)
    finally:
        ckpt.close(quiet=True)
