"""One run per workdir: a lock file `<workdir>/nest_jax.lock` holding {host, pid, started}.

A second run on the same workdir refuses with one line naming the workdir and the holder.

On a local or network file system the lock is the kernel's: an exclusive, non-blocking `flock` on
the lock file. Taking it is atomic, and it is released by the kernel when its process dies however
it dies, so a lock left behind by a killed run is simply taken over (with a warning naming the old
holder). The JSON inside is only information for the message; a malformed one changes nothing.

On object stores (gs://, s3://) there are no kernel locks: the lock is created by check-then-write
and read back, which catches the common mistake of starting a job twice but not two starts in the
same second; there a lock whose process is gone (same host, pid no longer alive) or that cannot be
read is taken over with a warning. Only process 0 of a multi-process run takes the lock.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import socket

from etils import epath

from nest_jax.errors import UserError

log = logging.getLogger(__name__)

LOCK_NAME = "nest_jax.lock"


def _alive(pid: object) -> bool:
    """Whether a process with this pid exists on this host (False for anything that is not a pid)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid < 2**22:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _parse(text: str | bytes) -> dict | None:
    """The holder's {host, pid, started}, or None when the text (bytes: UTF-8) is not such an object."""
    try:
        holder = json.loads(text.decode("utf-8", "replace") if isinstance(text, bytes) else text)
    except ValueError:
        return None
    return holder if isinstance(holder, dict) else None


def _describe(holder: dict | None) -> str:
    if holder is None:
        return "holder unknown"
    return f"pid {holder.get('pid')!s:.20} on {holder.get('host')!s:.64}, started {holder.get('started')!s:.32}"


class WorkdirLock:
    """Context manager holding `<workdir>/nest_jax.lock` (a no-op when enabled=False)."""

    def __init__(self, workdir: epath.Path, *, enabled: bool = True):
        self.workdir, self.path, self.enabled = workdir, workdir / LOCK_NAME, enabled
        self.info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        self._fd: int | None = None
        self._held = False

    def _in_use(self, holder: dict | None) -> UserError:
        return UserError(
            f"workdir {self.workdir} is in use by another run ({_describe(holder)}); wait for it, use "
            f"another --workdir, or delete {self.path} if that run is gone"
        )

    def _acquire_local(self) -> None:
        path = os.fspath(self.path)
        for _ in range(5):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _parse(os.pread(fd, 4096, 0))
                os.close(fd)
                raise self._in_use(holder) from None
            try:  # a run that releases unlinks the file: the inode we locked must still be the lock
                current = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if not current:
                os.close(fd)
                continue
            previous = os.pread(fd, 4096, 0)
            if previous.strip():
                log.warning(
                    "taking over the stale lock %s (%s): its process is gone", self.path, _describe(_parse(previous))
                )
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(self.info).encode(), 0)
            os.fsync(fd)
            self._fd = fd
            return
        raise UserError(f"could not take the lock {self.path}: other runs keep taking and releasing it")

    def _acquire_object_store(self) -> None:
        for _ in range(3):
            if not self.path.exists():
                self.path.write_text(json.dumps(self.info))
                if _parse(self.path.read_text()) == self.info:  # another run may have written after us
                    return
                continue
            try:
                holder = _parse(self.path.read_text())
            except FileNotFoundError:
                continue
            if holder is None or (holder.get("host") == self.info["host"] and not _alive(holder.get("pid"))):
                log.warning("taking over the stale lock %s (%s): its process is gone", self.path, _describe(holder))
                self.path.unlink(missing_ok=True)
                continue
            raise self._in_use(holder)
        raise UserError(f"could not take the lock {self.path}: another run keeps creating it")

    def acquire(self) -> None:
        if not self.enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._acquire_local() if "://" not in str(self.path) else self._acquire_object_store()
        self._held = True

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        if self._fd is not None:  # unlink while still holding, so no one locks a file about to vanish
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.fspath(self.path))
            os.close(self._fd)
            self._fd = None
            return
        with contextlib.suppress(FileNotFoundError):  # only a lock this run wrote is removed
            if _parse(self.path.read_text()) == self.info:
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> WorkdirLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
