"""A real small file system for full-disk tests: a tmpfs of a given size (needs root, as CI has)."""

import contextlib
import subprocess
from pathlib import Path


@contextlib.contextmanager
def tmpfs(parent: Path, size: str):
    """Mounts a `size` tmpfs (e.g. "1m") at `parent/small`, yields its path, unmounts it."""
    mnt = parent / "small"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    assert proc.returncode == 0, f"this test needs root to mount a tmpfs: {proc.stderr.strip()}"
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
