"""Entry point: `python -m nest_jax.main --config=configs/digits_nest_tiny.py --workdir=/tmp/run`.

Override any field with `--config.field=value` (e.g. `--config.train.num_train_steps=100`).
Modes: `--mode=train` (default; resumes from the latest checkpoint in the workdir) and
`--mode=eval` (evaluates the latest checkpoint). Fine-tuning: set `config.init_from`.
Multi-host: `--config.distributed.enabled=True` (plus coordinator address / process count / id on
GPU clusters; TPU pods detect them) calls `jax.distributed.initialize` before anything else.
"""
from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file (`configs/<name>.py[:arg]`).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
flags.DEFINE_enum("mode", "train", ["train", "eval"], "train (auto-resume) or eval (latest checkpoint).")
flags.mark_flags_as_required(["config", "workdir"])


def initialize_distributed(config) -> None:
    """`jax.distributed.initialize` from `config.distributed` (must run before any jax computation)."""
    dist = config.get("distributed", None)
    if not dist or not dist.get("enabled", False):
        return
    import jax
    if dist.get("cpu_collectives", None):
        jax.config.update("jax_cpu_collectives_implementation", dist.cpu_collectives)
    kwargs = {k: dist.get(k) for k in ("coordinator_address", "num_processes", "process_id")
              if dist.get(k, None) is not None}
    if dist.get("local_device_ids", None) is not None:
        kwargs["local_device_ids"] = list(dist.local_device_ids)
    jax.distributed.initialize(**kwargs)
    logging.info("process %d of %d, %d local / %d global devices", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())


def _quiet_orbax() -> None:
    """Orbax logs a dozen INFO lines per save; keep its warnings and errors only."""
    import logging as pylogging
    handler = logging.get_absl_handler()
    handler.addFilter(lambda r: r.levelno >= pylogging.WARNING or "/orbax/" not in r.pathname)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    _quiet_orbax()
    config = FLAGS.config
    initialize_distributed(config)
    from nest_jax.train.loop import train_and_evaluate  # after distributed init: imports jax state
    with config.unlocked():
        config.mode = FLAGS.mode
    if config.get("task", "classification") == "gan":
        from nest_jax.analysis.gan_eval import fid_evaluator
        from nest_jax.train.gan_loop import train_gan
        result = train_gan(config, FLAGS.workdir, evaluator=fid_evaluator(config))
    else:
        result = train_and_evaluate(config, FLAGS.workdir)
    logging.info("final: %s", result)
    print("final metrics:", {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()})


def run() -> None:
    """Console-script entry point (`nest-jax --config=... --workdir=...`)."""
    app.run(main)


if __name__ == "__main__":
    run()
