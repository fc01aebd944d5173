"""`train_gan(config, workdir)`: the GAN training loop (setup, data, state, loop, samples, evaluation).

Resumes from the latest checkpoint in `workdir` bit-exactly (the input stream and every random
draw are pure functions of (seed, step)); SIGTERM saves and stops; non-finite losses stop with a
FloatingPointError. Writes scalars and sample grids of the EMA generator to TensorBoard
(tensorboardX, `workdir/tb`), the scalars to `workdir/metrics.jsonl` and the grids as PNG files to
`workdir/samples/step_<step>.png`. FID/KID are computed by an `evaluator` the caller passes
(`nest_jax.analysis.fid.fid_evaluator`): this module sits below the analysis layer.
"""

from __future__ import annotations

import importlib
import io
import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from etils import epath

from nest_jax.train.checkpoint import Checkpointer
from nest_jax.train.gan import GanTrainer, make_gan_trainer
from nest_jax.train.sharding import make_mesh
from nest_jax.train.trainer import shard_batch

log = logging.getLogger(__name__)
Evaluator = Callable[[int, Callable[[int, int], np.ndarray]], dict]


def image_grid(images: np.ndarray, cols: int | None = None) -> np.ndarray:
    """images: (N, H, W, C) in [-1, 1] -> uint8 grid (rows·(H+1)+1, cols·(W+1)+1, 3), 1-px borders."""
    n, h, w, c = images.shape
    cols = cols or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    x = np.clip((np.asarray(images, np.float32) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    if c == 1:
        x = np.repeat(x, 3, axis=-1)
    grid = np.full((rows * (h + 1) + 1, cols * (w + 1) + 1, 3), 255, np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + q * (w + 1) : 1 + q * (w + 1) + w] = x[i, ..., :3]
    return grid


def write_png(path: epath.Path, grid: np.ndarray) -> None:
    import matplotlib.image

    buf = io.BytesIO()
    matplotlib.image.imsave(buf, grid, format="png")
    path.write_bytes(buf.getvalue())


def make_sampler(trainer: GanTrainer, state: dict, rests, batch: int) -> Callable[[int, int], np.ndarray]:
    """`sample(n, seed)` -> (n, H, W, C) float32 in [-1, 1] from the EMA generator, host numpy."""
    stats = state.get("g_stats")

    def sample(n: int, seed: int) -> np.ndarray:
        out, key = [], jax.random.key(seed)
        for i in range(-(-n // batch)):
            z = jax.random.normal(jax.random.fold_in(key, i), (batch, trainer.latent_dim))
            z = jax.device_put(z, trainer.batch_sharding)
            out.append(np.asarray(jax.device_get(trainer.sample(state["g_ema"], stats, z, rests))))
        return np.concatenate(out)[:n]

    return sample


class _Writer:
    """Scalars to TensorBoard and metrics.jsonl, images to TensorBoard (main process only)."""

    def __init__(self, workdir: epath.Path, enabled: bool):
        self.enabled = enabled
        self.jsonl = workdir / "metrics.jsonl"
        self.tb = None
        if enabled:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(logdir=str(workdir / "tb"))

    def scalars(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        for k, v in values.items():
            self.tb.add_scalar(k, float(v), step)
        with self.jsonl.open("a") as f:
            f.write(json.dumps({"step": step, **{k: float(v) for k, v in values.items()}}) + "\n")
        log.info("step %d %s", step, " ".join(f"{k}={float(v):.4g}" for k, v in values.items()))

    def image(self, step: int, tag: str, grid: np.ndarray) -> None:
        if self.enabled:
            self.tb.add_image(tag, grid, step, dataformats="HWC")

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def num_steps(config: Any, num_train: int) -> int:
    steps = config.train.get("num_train_steps", None)
    if steps:
        return int(steps)
    return int(math.ceil(float(config.train.num_epochs) * max(num_train // int(config.train.global_batch_size), 1)))


def train_gan(config: Any, workdir: str, *, data: Any = None, evaluator: Evaluator | None = None) -> dict:
    """Trains the GAN of `config` in `workdir` (resuming if it holds a checkpoint).

    data: a module with the `nest_jax.data` API (default `nest_jax.data`); its images must be in
      [-1, 1] (`dataset.normalize="inception"`). evaluator: `fn(step, sample) -> metrics`, called
      every `gan.fid.every_steps` and at the end; `sample(n, seed)` draws from the EMA generator.
    Returns the last logged train metrics and evaluator metrics, with "step".
    """
    from nest_jax.errors import Preempted
    from nest_jax.train.preemption import Preemption

    # ---- setup ----
    data = data if data is not None else importlib.import_module("nest_jax.data")
    wd = epath.Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    is_main = jax.process_index() == 0
    if is_main:
        (wd / "config.json").write_text(config.to_json_best_effort(indent=2))
    writer = _Writer(wd, is_main)
    mesh = make_mesh(dict(config.mesh.axes))
    info = data.get_info(config.dataset)
    total = num_steps(config, info.num_train)
    trainer = make_gan_trainer(config, mesh)
    ckpt = Checkpointer(str(wd), max_to_keep=config.train.get("max_to_keep", 3))
    if ckpt.latest_step() is not None:
        state = ckpt.restore(trainer.abstract_state, trainer.state_shardings)
        log.info("resumed from checkpoint step %d", int(state["step"]))
    else:
        state = trainer.init_state()
    rests = trainer.init_rest()
    start = int(jax.device_get(state["step"]))

    # ---- loop ----
    tcfg, gcfg = config.train, config.gan
    batch_size = int(tcfg.global_batch_size)
    log_every = int(tcfg.get("log_every_steps", 50))
    ckpt_every = int(tcfg.get("checkpoint_every_steps", 0) or 0)
    sample_every = int(gcfg.get("sample_every_steps", 0) or 0)
    eval_every = int(gcfg.fid.get("every_steps", 0) or 0) if evaluator is not None else 0
    end = min(total, int(tcfg.get("stop_after_steps", None) or total))
    it = data.train_iterator(
        config.dataset,
        global_batch_size=batch_size,
        seed=int(config.seed),
        start_step=start,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    sample_z_seed = int(gcfg.get("sample_seed", 1234))
    n_show = int(gcfg.get("num_sample_images", 64))

    def samples_and_eval(step: int, do_samples: bool, do_eval: bool) -> dict:
        sample = make_sampler(trainer, state, rests, batch_size)
        out = {}
        if do_samples:
            grid = image_grid(sample(n_show, sample_z_seed))
            writer.image(step, "samples_ema", grid)
            if is_main:
                (wd / "samples").mkdir(exist_ok=True)
                write_png(wd / "samples" / f"step_{step:06d}.png", grid)
        if do_eval:
            out = evaluator(step, sample)
            writer.scalars(step, out)
        return out

    result: dict = {}
    if start == 0 and end > 0:
        result.update(samples_and_eval(0, bool(sample_every), bool(eval_every)))
    window, step, t0 = [], start, time.time()
    with Preemption() as preemption:
        while step < end:
            if preemption.reached(step):  # SIGTERM: save (unless this step is saved) and stop, exit 75
                if step not in ckpt.all_steps():
                    ckpt.save(step, state)
                ckpt.wait()
                ckpt.close()
                raise Preempted(step, str(ckpt.directory))
            batch = shard_batch(next(it), trainer.batch_sharding)
            state, metrics = trainer.train_step(state, batch, rests)
            window.append(metrics)
            step += 1
            last = step == end
            if step % log_every == 0 or last:
                means = jax.device_get(jax.tree.map(lambda *xs: np.mean(np.stack(xs)), *window))
                if not all(math.isfinite(float(v)) for v in means.values()):
                    ckpt.wait()
                    raise FloatingPointError(
                        f"non-finite GAN losses {dict(means)} before step {step}; the last good checkpoint is "
                        f"{ckpt.latest_step()} (lower the learning rates or add gan.r1_gamma)"
                    )
                scalars = {f"train_{k}": float(v) for k, v in means.items()}
                scalars["steps_per_sec"] = len(window) / max(time.time() - t0, 1e-9)
                writer.scalars(step, scalars)
                result.update(scalars)
                window, t0 = [], time.time()
            do_samples = bool(sample_every) and (step % sample_every == 0 or last)
            do_eval = bool(eval_every) and (step % eval_every == 0 or last)
            if do_samples or do_eval:
                result.update(samples_and_eval(step, do_samples, do_eval))
            if (ckpt_every and step % ckpt_every == 0) or last:
                ckpt.save(step, state)
    ckpt.close()
    writer.close()
    return dict(result, step=step)
