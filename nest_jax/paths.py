"""The one way nest_jax names a user path: `as_path` returns an `etils.epath.Path`, local or remote.

Local paths are resolved against the current directory (`~` expanded); `gs://bucket/x` (and any
other `scheme://` path) is kept as written: `epath.Path(...).absolute()` would prepend the cwd.
A gs:// path needs gcsfs (the `[gcs]` extra, which brings google-cloud-storage for tensorboardX and
orbax): without it, `as_path` raises one line naming the install command instead of etils'
traceback at the first file access.

`EPATH_USE_TF`: nest_jax sets it to "false" when importing (unless the user set it), so etils
reaches gs:// through gcsfs whether or not TensorFlow is installed; with TensorFlow present etils
would otherwise use tf.io.gfile, which ignores STORAGE_EMULATOR_HOST and is a second GCS client to
configure.
"""

from __future__ import annotations

import importlib.util
import os

from etils import epath

from nest_jax.errors import UserError

GCS_INSTALL = 'pip install "nest_jax[gcs]"'


def is_remote(path: str | os.PathLike) -> bool:
    """True for `scheme://...` paths (gs://, s3://): object stores, no rename, no local file."""
    return "://" in str(path)


def as_path(path: str | os.PathLike) -> epath.Path:
    """An absolute `epath.Path`: local paths resolved against the current directory, gs:// kept."""
    text = os.fspath(path) if not isinstance(path, epath.Path) else str(path)
    if text.startswith("gs://") and importlib.util.find_spec("gcsfs") is None:
        raise UserError(f"{text} is a Google Cloud Storage path, which needs gcsfs: {GCS_INSTALL}")
    p = epath.Path(path)
    return p if is_remote(text) else p.expanduser().absolute()


def rmtree(path: epath.Path) -> None:
    """Removes a folder and everything under it (local or remote); a missing one is no error."""
    if path.exists():
        path.rmtree() if path.is_dir() else path.unlink()


def walk(root: epath.Path) -> list[epath.Path]:
    """Every file and folder under `root` (not `root`), by listing (epath's `rglob` refuses `**`)."""
    found, pending = [], [root]
    while pending:
        for child in pending.pop().iterdir():
            found.append(child)
            if child.is_dir():
                pending.append(child)
    return found


def copytree(src: epath.Path, dst: epath.Path, last: str | None = None) -> None:
    """Copies every file under `src` to `dst` (object stores have no rename); the file named `last`
    (relative), if given, is copied after all others, so a reader that checks it never sees a half
    copy as complete."""
    files = sorted(p for p in walk(src) if p.is_file())
    files.sort(key=lambda p: p.relative_to(src).as_posix() == last)
    for f in files:
        target = dst / f.relative_to(src).as_posix()
        target.parent.mkdir(parents=True, exist_ok=True)
        f.copy(target, overwrite=True)
