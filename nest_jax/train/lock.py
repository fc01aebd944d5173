"""One run per workdir: a lock file `<workdir>/nest_jax.lock` holding {host, pid, started}.

A second run on the same workdir refuses with one line naming the workdir and the holder. A lock
left by a process that is gone (same host, pid no longer alive) is taken over with a warning. On
a local disk the file is created atomically (O_EXCL); on object stores (gs://, s3://) creation is
check-then-write, which is enough to catch the common mistake of starting a job twice. Only
process 0 of a multi-process run takes the lock.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket

from etils import epath

from nest_jax.errors import UserError

log = logging.getLogger(__name__)

LOCK_NAME = "nest_jax.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class WorkdirLock:
    """Context manager holding `<workdir>/nest_jax.lock` (a no-op when enabled=False)."""

    def __init__(self, workdir: epath.Path, *, enabled: bool = True):
        self.workdir, self.path, self.enabled = workdir, workdir / LOCK_NAME, enabled
        self.info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        self._held = False

    def _create(self) -> bool:
        text = json.dumps(self.info)
        if "://" not in str(self.path):
            try:
                fd = os.open(os.fspath(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:
                f.write(text)
            return True
        if self.path.exists():
            return False
        self.path.write_text(text)
        return True

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def acquire(self) -> None:
        if not self.enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._create():
                self._held = True
                return
            holder = self._holder()
            if holder is None or (holder.get("host") == self.info["host"] and not _alive(int(holder.get("pid", -1)))):
                log.warning(
                    "taking over the stale lock %s (%s): its process is gone",
                    self.path,
                    "unreadable"
                    if holder is None
                    else f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}",
                )
                self.path.unlink(missing_ok=True)
                continue
            raise UserError(
                f"workdir {self.workdir} is in use by another run (pid {holder.get('pid')} on "
                f"{holder.get('host')}, started {holder.get('started')}); wait for it, use another "
                f"--workdir, or delete {self.path} if that run is gone"
            )
        raise UserError(f"could not take the lock {self.path}: another run keeps creating it")

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        holder = self._holder()
        if holder is not None and holder.get("pid") == self.info["pid"] and holder.get("host") == self.info["host"]:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> WorkdirLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
