"""Train or evaluate a model from a config: `nest-jax --config=configs/X.py --workdir=DIR`; `usage()` is
the `--help` text (modes, `--config.FIELD=VALUE` overrides, fine-tuning, shipped configs, exit codes).

Multi-host: `--config.distributed.enabled=True` (plus coordinator address / process count / id on GPU
clusters; TPU pods detect them) calls `jax.distributed.initialize` before anything else.
A `UserError` (config, flag, file or dataset) and a full disk while writing the workdir are one line
`nest_jax.main: error: <what and how to fix it>` on stderr without a traceback, exit 2; SIGTERM stops
the run with exit 75 (in the training loop after saving a checkpoint; during setup, restore or a final
evaluation at once, the workdir lock released); Ctrl-C exits 130 after finishing the checkpoint save in
progress; a diverged run (the line names the last good checkpoint) or a bug exits 1. `--debug` or
`NEST_JAX_DEBUG=1` prints the traceback as well.
"""

from __future__ import annotations

import errno
import logging as pylogging
import os
import signal
import sys
import traceback
from typing import Any, NoReturn

from nest_jax.cli_config import check_required, load_config, shipped_configs, split_argv
from nest_jax.errors import (
    DEBUG_ENV,
    INTERRUPTED_EXIT_CODE,
    PREEMPTED_EXIT_CODE,
    USAGE_EXIT_CODE,
    Interrupted,
    Preempted,
    Terminated,
    UserError,
    debug_requested,
)
from nest_jax.overrides import apply_overrides

PROG = "nest_jax.main"
_notes: list[str] = []  # said once absl logging is up


def usage(full: bool = False) -> str:
    """The text of `nest-jax --help`."""
    configs = shipped_configs()
    width = max((len(n) for n, _ in configs), default=0) + 2
    listing = [f"  {name:<{width}}{_clip(doc, 96 - width)}" for name, doc in configs] or [
        "  (no configs/ folder beside this installation: clone the repository for the shipped configs,",
        "   or write a file with `def get_config(): return ml_collections.ConfigDict(...)`)",
    ]
    text = f"""nest-jax (python -m nest_jax.main): train or evaluate a ViT, DeiT or NesT image classifier
from a config file, on one CPU, GPUs or a TPU pod; checkpoints and metrics go to --workdir.

USAGE: nest-jax --config=PATH[:ARG] --workdir=DIR [--mode=train|eval] [--config.FIELD=VALUE ...]

MODES
  --mode=train   (default) train; a workdir that holds checkpoints resumes from the latest one
  --mode=eval    evaluate the latest checkpoint in the workdir
  fine-tune      --config.init_from.checkpoint=PATH [--config.init_from.source=timm|vit_npz|
                 nest_official|nest_jax]: start from imported or earlier weights

CONFIGS (ARG after ':' picks a variant, e.g. --config=configs/cifar10_nest.py:small)
{chr(10).join(listing)}

COMMON OVERRIDES (any field of the config: --config.FIELD=VALUE, checked against its type)
  --config.train.num_train_steps=1000   train this many steps (default: the config's epochs)
  --config.optimizer.lr=0.001           learning rate
  --config.dataset.data_dir=/data/tfds  where the TFDS dataset is prepared
  --config.seed=1                       initialization, data order and augmentation

EXIT CODES
  0   done
  1   training diverged (non-finite loss or parameters): the line names the last good checkpoint
  {USAGE_EXIT_CODE}   bad input (config, flag, file or dataset): one line on stderr says what and how to fix it
  {PREEMPTED_EXIT_CODE}  preempted (SIGTERM) after saving a checkpoint: rerun the same command to resume
  {INTERRUPTED_EXIT_CODE} interrupted (Ctrl-C) after finishing the checkpoint save in progress: rerun to resume

OTHER FLAGS
  --debug           show the traceback of an error (also: {DEBUG_ENV}=1)
  --helpfull        this text and absl's logging flags (--verbosity, --log_dir, ...)

The README (README.md, section Training) has the full guide.
"""
    if full:
        from absl import flags, logging  # noqa: F401  (defines absl's logging flags)

        text += "\nabsl logging flags:\n" + flags.FLAGS.module_help("absl.logging") + "\n"
    return text


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


# ----------------------------------------------------------------------------------------------
# A quiet console: set before jax / TensorFlow are imported


def quiet_environment() -> None:
    """No TensorFlow C++ chatter and no backend probing that cannot succeed; the user's settings win.

    Without any accelerator plugin (a PJRT plugin or libtpu, found here without importing jax) jax
    still tries libtpu and logs the failure, and warns about an NVIDIA device it cannot use; with
    `JAX_PLATFORMS=cpu` it goes straight to the CPU.
    """
    import importlib.metadata
    import importlib.util
    import pkgutil

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "JAX_PLATFORMS" in os.environ or os.environ.get("TPU_LIBRARY_PATH") or importlib.util.find_spec("libtpu"):
        return
    if list(importlib.metadata.entry_points(group="jax_plugins")):
        return
    spec = importlib.util.find_spec("jax_plugins")  # the namespace package CUDA/ROCm plugins install into
    if spec and spec.submodule_search_locations and any(pkgutil.iter_modules(list(spec.submodule_search_locations))):
        return
    os.environ["JAX_PLATFORMS"] = "cpu"
    if any(os.path.exists(f"/dev/nvidia{i}") for i in range(8)):
        _notes.append(
            "running on CPU: no JAX GPU plugin is installed (pip install -U 'jax[cuda12]'), "
            "or set JAX_PLATFORMS to choose"
        )


def _setup_logging(absl_args: list[str], debug: bool) -> None:
    """absl logging at INFO (as absl's app.run sets it), with its own flags parsed; libraries quieter."""
    import faulthandler

    from absl import flags, logging

    try:
        flags.FLAGS([PROG, *absl_args])
    except flags.Error as e:
        raise UserError(f"{' '.join(str(e).split())} (nest-jax --helpfull lists every flag)") from e
    if flags.FLAGS["verbosity"].using_default_value:
        flags.FLAGS.verbosity = 0
    logging.use_absl_handler()
    faulthandler.enable()
    handler = logging.get_absl_handler()
    if not getattr(handler, "_nest_jax_quiet", False):
        # Orbax logs a dozen INFO lines per save: keep its warnings and errors only.
        handler.addFilter(lambda r: r.levelno >= pylogging.WARNING or "/orbax/" not in r.pathname)
        handler._nest_jax_quiet = True
    if not debug:
        pylogging.getLogger("jax._src.xla_bridge").setLevel(pylogging.WARNING)  # backend probing
    for note in _notes:
        logging.info(note)
    _notes.clear()


# ----------------------------------------------------------------------------------------------
# The job


def initialize_distributed(config) -> None:
    """`jax.distributed.initialize` from `config.distributed` (must run before any jax computation)."""
    dist = config.distributed
    if not dist.enabled:
        return
    import jax
    from absl import logging

    if dist.cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", dist.cpu_collectives)
    given = ("coordinator_address", "num_processes", "process_id", "local_device_ids")
    kwargs = {k: dist[k] for k in given if dist[k] is not None}  # unset: jax detects it (TPU pods, SLURM)
    jax.distributed.initialize(**kwargs)
    counts = jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count()
    logging.info("process %d of %d, %d local / %d global devices", *counts)


def run_job(config, workdir: str, mode: str) -> dict[str, Any]:
    """Trains (resuming) or evaluates; prints the `final metrics:` line and returns the metrics."""
    from absl import logging

    initialize_distributed(config)
    from nest_jax.train.loop import train_and_evaluate  # after distributed init: imports jax state

    with config.unlocked():
        config.mode = mode
    result = train_and_evaluate(config, workdir)
    logging.info("final: %s", result)
    if "message" in result:  # e.g. the run had already reached its last step: say so, plainly
        result = dict(result)
        print(result.pop("message"))
    print("final metrics:", {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()})
    return result


def _raise_terminated(signum, frame) -> NoReturn:
    raise Terminated  # the training loop installs its own handler while it trains


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (0, `USAGE_EXIT_CODE`, `PREEMPTED_EXIT_CODE`,
    `INTERRUPTED_EXIT_CODE` or 1).

    argv: the arguments without the program name (default: `sys.argv[1:]`).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested("--debug" in argv)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        cl = split_argv(argv)
        debug = debug or cl.debug
        if cl.help:
            print(usage(full=cl.help == "helpfull"), end="")
            return 0
        # Every command-line mistake and bad value surfaces here, before any data, model or device work.
        from nest_jax.train.validate import validate_config

        check_required(cl)
        config = load_config(cl.config)
        apply_overrides(config, cl.overrides)
        with config.unlocked():
            config.mode = cl.mode
        validate_config(config)
        _setup_logging(cl.absl_args, debug)
        run_job(config, cl.workdir, cl.mode)
        return 0
    except UserError as e:
        error, code, line = e, USAGE_EXIT_CODE, f"error: {e}"
    except (Preempted, Terminated) as e:
        error, code, line = e, PREEMPTED_EXIT_CODE, str(e)
    except KeyboardInterrupt as e:  # Ctrl-C; in the training loop: after the save in progress finished
        setup = "interrupted (Ctrl-C) during setup, before any checkpoint was touched; rerun the same command"
        error, code, line = e, INTERRUPTED_EXIT_CODE, str(e) if isinstance(e, Interrupted) else setup
    except FloatingPointError as e:  # training diverged: the message names the last good checkpoint
        error, code, line = e, 1, f"error: {e}"
    except OSError as e:  # a full disk anywhere in the workdir (the lock file, a log): no traceback
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        error, code = e, USAGE_EXIT_CODE
        line = f"error: {e.strerror} while writing {e.filename or 'the workdir'}: free space and rerun"
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    if debug:  # the traceback, then the one line a failed run prints on stderr
        traceback.print_exception(error)
    print(f"{PROG}: {line}", file=sys.stderr)
    return code


def run() -> NoReturn:
    """Console-script entry point (`nest-jax --config=... --workdir=...`).

    After Ctrl-C the process ends without finalizing the interpreter (`os._exit`, once the output is
    flushed and any worker processes are stopped). The interrupt can land just after a train step
    was dispatched, and tearing the interpreter down under that step crashed it (a segmentation
    fault after the one-line message, in 6 of 12 trials with Ctrl-C during the first steps).
    Nothing is left to do by then: the save in progress is finished and the lock released."""
    quiet_environment()
    code = main()
    if code == INTERRUPTED_EXIT_CODE:
        import multiprocessing

        for child in multiprocessing.active_children():
            child.terminate()
        pylogging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
