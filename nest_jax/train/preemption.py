"""Preemption notices (SIGTERM): every process stops at the same step, without a per-step collective.

One process: a SIGTERM handler sets a flag that the loop reads at each step boundary. Several
processes (`jax.distributed.initialize` was called): JAX's preemption sync manager, started by
`jax.distributed.initialize`, catches SIGTERM itself and agrees in the background, through the
coordination service, on the first step every process can still reach;
`multihost_utils.reached_preemption_sync_point(step)` is then a local check that turns True on
every process at that same step. The common step therefore runs no collective outside the jitted
train step. No Python handler is installed in that case: it would replace JAX's.

Outside the training steps the command line (`nest_jax.main`) turns SIGTERM into a `Terminated`
exception (a BaseException), so setup and restore unwind (the workdir lock is released) instead of dying.
`signals_held()` holds SIGINT and SIGTERM for the length of a block (a checkpoint save, the
wait for one) and delivers them at its end: Ctrl-C never cuts a save in half.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

import jax

log = logging.getLogger(__name__)


class Preemption:
    """Context manager; `reached(step)` is True at the step where every process should save and stop.

    It also remembers Ctrl-C: SIGINT still raises KeyboardInterrupt at once, and sets `interrupted`,
    which the loop reads at each step boundary. A KeyboardInterrupt raised while Python code runs
    inside the garbage collector (JAX's gc callback, any `__del__`) is printed as "Exception
    ignored" and dropped; the flag stops the run at the next step all the same.
    """

    def __init__(self):
        self.requested = False
        self.interrupted = False
        self._old = None
        self._old_int = None
        self._multi = False

    def _interrupt(self, signum, frame) -> None:
        self.interrupted = True
        raise KeyboardInterrupt

    def __enter__(self) -> Preemption:
        try:  # only over Python's own handler: a caller's SIGINT handler is left alone
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                self._old_int = signal.signal(signal.SIGINT, self._interrupt)
        except ValueError:  # not the main thread
            self._old_int = None
        self._multi = jax.process_count() > 1
        if self._multi:
            return self
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler, never preempted
            self._old = None
        return self

    def _handle(self, signum, frame) -> None:
        log.warning("SIGTERM received: saving a checkpoint and stopping at the next step boundary")
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
            self._old = None
        if self._old_int is not None:
            signal.signal(signal.SIGINT, self._old_int)
            self._old_int = None

    def reached(self, step: int) -> bool:
        """Called at every step boundary, with the same `step` on every process."""
        if not self._multi:
            return self.requested
        from jax.experimental import multihost_utils

        try:
            return multihost_utils.reached_preemption_sync_point(step)
        except RuntimeError as e:  # jax_enable_preemption_service=False: no notices to agree on
            log.warning("preemption notices are not handled: %s", e)
            self._multi, self.requested = False, False
            return False


def wait_for_all_processes(name: str, timeout_s: int = 1800) -> None:
    """Barrier through the coordination service (no device collective): aligns processes before
    the first train step, whose collectives time out after 30 s on CPU (gloo) if one process is
    still compiling. A no-op with one process."""
    if jax.process_count() == 1:
        return
    from jax._src import distributed  # the client orbax itself waits on; no public barrier exists

    client = distributed.global_state.client
    if client is None:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
        return
    client.wait_at_barrier(name, timeout_in_ms=timeout_s * 1000)


@contextlib.contextmanager
def signals_held():
    """SIGINT and SIGTERM arriving inside the block are delivered when it ends (to the handlers
    that were in place before); an exception leaving the block drops them: it is reported instead.
    No-op off the main thread (signals only ever reach the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []

    def hold(signum, frame) -> None:
        held.append(signum)  # first: a failing log call below must not lose the signal
        if len(held) == 1:
            try:  # a handler can run inside a write to stderr, and writing again there can raise
                log.warning("%s received: finishing the checkpoint save first", signal.Signals(signum).name)
            except Exception:  # noqa: BLE001 -- the notice is optional, the signal is not
                pass

    previous = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
    for s in dict.fromkeys(held):
        signal.raise_signal(s)
