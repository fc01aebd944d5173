"""TensorFlow-free metric output: TensorBoard event files, a JSONL log, and one console line.

`MetricWriter` writes scalars and images to TensorBoard event files in the workdir (tensorboardX's
record format; `tensorboard --logdir WORKDIR` shows the run), every scalar to
`WORKDIR/metrics.jsonl`, one JSON object per write: {"step": k, name: value, ...}, and every
picture (a uint8 image, e.g. the GAN's sample grid `samples`) as `WORKDIR/<name>/step_<k>.png`.
Only process 0 writes; others get a writer that does nothing. `Progress` prints one line per log
interval (step of total, loss, accuracy, learning rate, steps/s, time left); on a terminal the
line is a progress bar redrawn in place. A write into the workdir that fails (a full disk) is one
`UserError` line naming the file (`write_file`, `workdir_errors`).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import sys
import time
from typing import Any

import numpy as np
from absl import logging as absl_logging
from etils import epath

from nest_jax.errors import UserError

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


class MetricWriter:
    """Scalars and images to TensorBoard + scalars to metrics.jsonl (enabled=False: a no-op).

    Event records are written from the calling thread (tensorboardX's `EventsWriter`, not its
    background-thread `SummaryWriter`), so a write that fails (a full disk) fails here, as one
    `UserError` line, instead of killing a thread and later blocking on its full queue."""

    def __init__(self, workdir: epath.Path, *, enabled: bool = True):
        self.enabled, self.workdir = enabled, workdir
        if not enabled:
            return
        from tensorboardX.event_file_writer import EventsWriter

        with workdir_errors(workdir):
            self._events = EventsWriter(str(workdir / "events"))
        self._jsonl = workdir / METRICS_FILE
        # Object stores cannot append: the file is rewritten whole at each flush (it stays small).
        self._lines: list[str] = self._jsonl.read_text().splitlines() if self._jsonl.exists() else []

    def _add(self, summary: Any, step: int) -> None:
        from tensorboardX.proto import event_pb2

        with workdir_errors(self.workdir):
            self._events.write_event(event_pb2.Event(summary=summary, step=int(step), wall_time=time.time()))

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        """Floats (and 0-d arrays) as scalars; arrays with ndim >= 2 as images (HWC or NHWC), a
        uint8 HWC picture also as a PNG file."""
        if not self.enabled:
            return
        from tensorboardX import summary

        scalars = {}
        for name, value in metrics.items():
            arr = np.asarray(value)
            if arr.ndim == 3 and arr.dtype == np.uint8:
                write_png(self.workdir / name / f"step_{int(step):06d}.png", arr)
            if arr.ndim >= 2:
                image = arr if arr.ndim >= 3 else arr[..., None]
                self._add(summary.image(name, image, dataformats="NHWC" if arr.ndim == 4 else "HWC"), step)
            elif arr.ndim == 0 and arr.dtype.kind in "fiub":
                scalars[name] = float(arr)
                self._add(summary.scalar(name, float(arr)), step)
        if scalars:
            self._lines.append(json.dumps({"step": int(step), **scalars}))
            # The same line format as clu's logging writer, for readers of the log.
            absl_logging.info("[%d] %s", step, ", ".join(f"{k}={v}" for k, v in scalars.items()))

    def flush(self) -> None:
        if self.enabled:
            with workdir_errors(self.workdir):
                self._events.flush()
            write_file(self._jsonl, "".join(line + "\n" for line in self._lines))

    def close(self, quiet: bool = False) -> None:
        """Flushes and closes; quiet=True (after another error) raises nothing."""
        if not self.enabled:
            return
        try:
            self.flush()
        except UserError:
            if not quiet:
                raise
        finally:
            self.enabled = False
            with contextlib.suppress(OSError):  # the flush above has reported a failed write
                self._events.close()


@contextlib.contextmanager
def workdir_errors(path: Any):
    """An OSError while writing `path` (a full disk, a read-only or vanished folder) becomes one
    `UserError` line naming the path and the fix."""
    try:
        yield
    except OSError as e:
        why = e.strerror or str(e) or type(e).__name__
        fix = "free space" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "fix the folder or pick another --workdir"
        raise UserError(
            f"cannot write {path}: {why}; {fix} and rerun (training resumes from the last checkpoint)"
        ) from None


def write_file(path: epath.Path, text: str) -> None:
    """Writes `path` whole through a temporary sibling renamed into place: a failed write (a full
    disk) leaves the previous content intact and is one `UserError` line."""
    tmp = path.with_name(path.name + ".tmp")
    with workdir_errors(path):
        try:
            tmp.write_text(text)
            tmp.replace(path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise


def write_png(path: epath.Path, image: np.ndarray) -> None:
    """image: (H, W, 3) uint8 -> a PNG file (any epath; parent folders created)."""
    import matplotlib.image

    buf = io.BytesIO()
    matplotlib.image.imsave(buf, image, format="png")
    with workdir_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buf.getvalue())


class Progress:
    """One console line per log interval; a bar redrawn in place when stdout is a terminal."""

    def __init__(self, total: int, start: int, *, enabled: bool = True, stream: Any = None):
        self.total, self.enabled = total, enabled
        self.stream = stream if stream is not None else sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._t, self._step = time.perf_counter(), start

    def line(self, step: int, means: dict[str, float]) -> str:
        now = time.perf_counter()
        rate = (step - self._step) / max(now - self._t, 1e-9)
        self._t, self._step = now, step
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        parts = [f"step {step}/{self.total}"]
        for key, fmt in (("loss", ".4f"), ("accuracy", ".3f"), ("lr", ".3g")):
            if key in means:
                parts.append(f"{key} {means[key]:{fmt}}")
        h, rem = divmod(int(max(eta, 0)) if np.isfinite(eta) else 0, 3600)
        m, s = divmod(rem, 60)
        left = "?" if not np.isfinite(eta) else f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
        parts += [f"{rate:.2f} steps/s", f"ETA {left}"]
        return "  ".join(parts)

    def update(self, step: int, means: dict[str, float]) -> None:
        if not self.enabled:
            return
        text = self.line(step, means)
        if self.tty:
            done = int(24 * step / max(self.total, 1))  # a bar 24 characters wide
            self.stream.write(f"\r[{'#' * done}{'.' * (24 - done)}] {text}")
            if step >= self.total:
                self.stream.write("\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
