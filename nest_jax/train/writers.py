"""TensorFlow-free metric output: TensorBoard event files, a JSONL log, and one console line.

`MetricWriter` writes scalars and images to TensorBoard event files in the workdir (through
tensorboardX; `tensorboard --logdir WORKDIR` shows the run), every scalar to
`WORKDIR/metrics.jsonl`, one JSON object per write: {"step": k, name: value, ...}, and every
picture (a uint8 image, e.g. the GAN's sample grid `samples`) as `WORKDIR/<name>/step_<k>.png`.
Only process 0 writes; others get a writer that does nothing. `Progress` prints one line per log
interval (step of total, loss, accuracy, learning rate, steps/s, time left); on a terminal the
line is a progress bar redrawn in place.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import time
from typing import Any

import numpy as np
from absl import logging as absl_logging
from etils import epath

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


class MetricWriter:
    """Scalars and images to TensorBoard + scalars to metrics.jsonl (enabled=False: a no-op)."""

    def __init__(self, workdir: epath.Path, *, enabled: bool = True):
        self.enabled, self.workdir = enabled, workdir
        self._tb = None
        self._lines: list[str] = []
        if not enabled:
            return
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(logdir=str(workdir))
        self._jsonl = workdir / METRICS_FILE
        # Object stores cannot append: the file is rewritten whole at each flush (it stays small).
        self._lines = self._jsonl.read_text().splitlines() if self._jsonl.exists() else []

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        """Floats (and 0-d arrays) as scalars; arrays with ndim >= 2 as images (HWC or NHWC), a
        uint8 HWC picture also as a PNG file."""
        if not self.enabled:
            return
        scalars = {}
        for name, value in metrics.items():
            arr = np.asarray(value)
            if arr.ndim == 3 and arr.dtype == np.uint8:
                write_png(self.workdir / name / f"step_{int(step):06d}.png", arr)
            if arr.ndim >= 2:
                self._tb.add_images(name, arr, step, dataformats="NHWC") if arr.ndim == 4 else self._tb.add_image(
                    name, arr if arr.ndim == 3 else arr[..., None], step, dataformats="HWC"
                )
            elif arr.ndim == 0 and arr.dtype.kind in "fiub":
                scalars[name] = float(arr)
                self._tb.add_scalar(name, float(arr), step)
        if scalars:
            self._lines.append(json.dumps({"step": int(step), **scalars}))
            # The same line format as clu's logging writer, for readers of the log.
            absl_logging.info("[%d] %s", step, ", ".join(f"{k}={v}" for k, v in scalars.items()))

    def flush(self) -> None:
        if self.enabled:
            self._tb.flush()
            self._jsonl.write_text("".join(line + "\n" for line in self._lines))

    def close(self) -> None:
        if self.enabled:
            self.flush()
            self._tb.close()
            self.enabled = False


def write_png(path: epath.Path, image: np.ndarray) -> None:
    """image: (H, W, 3) uint8 -> a PNG file (any epath; parent folders created)."""
    import matplotlib.image

    buf = io.BytesIO()
    matplotlib.image.imsave(buf, image, format="png")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


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
        parts += [f"{rate:.2f} steps/s", f"ETA {_duration(eta) if np.isfinite(eta) else '?'}"]
        return "  ".join(parts)

    def update(self, step: int, means: dict[str, float]) -> None:
        if not self.enabled:
            return
        text = self.line(step, means)
        if self.tty:
            width = 24
            done = int(width * step / max(self.total, 1))
            self.stream.write(f"\r[{'#' * done}{'.' * (width - done)}] {text}")
            if step >= self.total:
                self.stream.write("\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
