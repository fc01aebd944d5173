"""Errors a user can act on, and the exit codes the command lines use for them.

`UserError` carries one line that names the problem and the fix; the command lines
(`python -m nest_jax.main`, `python -m nest_jax.convert`, `python -m nest_jax.analyze`) print it as
`<program>: error: <message>` and exit with `USAGE_EXIT_CODE`, without a traceback (set
`NEST_JAX_DEBUG=1` or pass `--debug` to see one). Library callers catch it like any exception.
"""

from __future__ import annotations

import os

DEBUG_ENV = "NEST_JAX_DEBUG"
USAGE_EXIT_CODE = 2  # bad input: config, flag, file or dataset (as argparse/absl usage errors)
PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL (sysexits.h): stopped by SIGTERM after saving; requeue me
INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what a shell reports for a Ctrl-C'd command


def debug_requested(flag: bool = False) -> bool:
    """Whether a command line prints tracebacks: its `--debug` flag, or `NEST_JAX_DEBUG` set to
    anything but "", "0", "false", "no" or "off" (any case)."""
    return flag or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def describe(e: BaseException) -> str:
    """An exception as one line: its type, then its message with the whitespace folded."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class UserError(Exception):
    """Bad input that the user can fix: the message is one line saying what and how."""


class Preempted(Exception):
    """Training stopped on SIGTERM after a checkpoint was saved; resuming continues from it."""

    def __init__(self, step: int, directory: str):
        super().__init__(
            f"preempted: saved checkpoint {step} in {directory}; rerun the same command "
            f"to resume (exit code {PREEMPTED_EXIT_CODE})"
        )
        self.step, self.directory = step, directory


class Terminated(BaseException):
    """SIGTERM outside the training steps (setup, restore, a final evaluation): the run unwinds at
    once, nothing was being saved. Raised from a signal handler, so a BaseException (as
    KeyboardInterrupt): no `except Exception` on the way (logging, a checkpoint reader) swallows it."""

    def __init__(self):
        super().__init__(
            "preempted (SIGTERM) outside the training steps (setup, restore or a final evaluation); "
            f"rerun the same command to resume (exit code {PREEMPTED_EXIT_CODE})"
        )


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped a run after the checkpoint save in progress was finished.

    step: the newest complete checkpoint in `directory` (None: there is none)."""

    def __init__(self, step: int | None, directory: str):
        where = f"the newest complete checkpoint is step {step}" if step is not None else "no checkpoint is saved"
        super().__init__(f"interrupted (Ctrl-C): {where} in {directory}; rerun the same command to resume")
        self.step, self.directory = step, directory
