"""The workdir lock: exactly one of many simultaneous starts gets it, and whatever a lock file holds,
a start is one line (refused) or a take-over (warning), never a traceback."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import subprocess
import sys
import textwrap

import pytest

from nest_jax.errors import UserError
from nest_jax.train.lock import LOCK_NAME, WorkdirLock

TRIALS = 2000


def _contender(workdir: str, barrier, trials: int, results) -> None:
    from etils import epath

    from nest_jax.errors import UserError
    from nest_jax.train.lock import WorkdirLock

    won = []
    for _ in range(trials):
        lock = WorkdirLock(epath.Path(workdir))
        barrier.wait()
        try:
            lock.acquire()
            won.append(1)
        except UserError:
            won.append(0)
        barrier.wait()  # both have tried; only now may the winner let go
        lock.release()
        barrier.wait()
    results.put(won)


def test_of_simultaneous_starts_exactly_one_takes_the_lock(tmp_path):
    """Two processes start on one workdir at the same moment, 2,000 times. Creating the file and
    writing the holder were two steps: a start that found the file still empty took it for a stale
    lock, deleted it and also went on (both held the lock about once in 200 trials)."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_contender, args=(str(tmp_path), barrier, TRIALS, results)) for _ in range(2)]
    for p in procs:
        p.start()
    won = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    winners = [a + b for a, b in zip(*won)]
    assert winners.count(2) == 0, f"both processes held the lock in {winners.count(2)} of {TRIALS} trials"
    assert winners.count(0) == 0, f"neither process got the lock in {winners.count(0)} of {TRIALS} trials"
    assert not (tmp_path / LOCK_NAME).exists()


@pytest.mark.parametrize(
    "content",
    ['{"pid": "abc", "host": "h"}', "[1, 2, 3]", '{"pid": 1e20}', '{"pid": 100000000000000000000}', "\x00\xff"],
)
def test_a_malformed_lock_file_left_behind_is_taken_over(tmp_path, caplog, content):
    """Malformed holder fields (a string pid, a list, a pid too large for the kernel) were a
    ValueError, AttributeError or OverflowError traceback."""
    (tmp_path / LOCK_NAME).write_bytes(content.encode("utf-8", "surrogateescape"))
    with caplog.at_level(logging.WARNING), WorkdirLock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert "taking over the stale lock" in caplog.text
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_held_lock_with_a_malformed_holder_is_refused_in_one_line(tmp_path):
    """A live run holds the lock; its file's contents are garbage: the second start is refused with
    one line (not a traceback, and the live run's lock is not taken over)."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import sys, time
                from etils import epath
                from nest_jax.train.lock import WorkdirLock
                with WorkdirLock(epath.Path({str(tmp_path)!r})) as lock:
                    (epath.Path({str(tmp_path)!r}) / {LOCK_NAME!r}).write_text('{{"pid": [1]}}')
                    print("held", flush=True)
                    sys.stdin.readline()
            """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=rf"workdir {tmp_path} is in use by another run") as info:
            WorkdirLock(tmp_path).acquire()
        assert "\n" not in str(info.value)
    finally:
        holder.communicate("\n", timeout=30)
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_run_killed_while_holding_the_lock_leaves_it_free(tmp_path, caplog):
    """kill -9 releases the kernel's lock: the next start takes over and names the old holder."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from etils import epath\nfrom nest_jax.train.lock import WorkdirLock\n"
            f"WorkdirLock(epath.Path({str(tmp_path)!r})).acquire()\nprint('held', flush=True)\nimport time\ntime.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "held"
    proc.kill()
    proc.wait()
    with caplog.at_level(logging.WARNING), WorkdirLock(tmp_path):
        pass
    assert f"pid {proc.pid}" in caplog.text
