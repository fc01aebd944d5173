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


def debug_requested(flag: bool = False) -> bool:
    """Whether a command line prints tracebacks: its `--debug` flag, or `NEST_JAX_DEBUG` set to
    anything but "", "0", "false", "no" or "off" (any case)."""
    return flag or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


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
