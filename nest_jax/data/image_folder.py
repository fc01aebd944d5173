"""Image-folder source: `data_dir/<split>/<class>/<image>` (classes = sorted subfolders of the
train split, shared by every split so labels agree).

Unreadable files are found when the split is indexed, not mid-epoch: every file is decoded in
full with PIL (`Image.open(path).load()`, in 16 threads: PIL's decoders release the GIL), which
catches what a header check misses — a JPEG whose Huffman tables or entropy-coded data are broken
decodes its header fine and fails only here — and JPEGs must also end with the EOI marker (PIL
pads a truncated JPEG silently). Bad files are excluded, reported by name and count in a warning
and kept in `source.bad_files(split)`. `validate_files: False` in the config skips the check (large
trusted folders); a file that then fails to decode mid-training stops it with an error naming the
file. A class folder with no images at all is an error naming it (it would be a class that can
never be predicted). Decoding is PIL (JPEG, PNG, GIF first frame, BMP), converted to RGB; 16-bit
PNGs are scaled to 8 bits (v / 257), not clipped.

Only regular files are indexed: a FIFO, socket or device named like an image would block or fail the
run, so it is skipped and named. An image larger than `max_pixels` (the config's
`dataset.max_image_pixels`; its size is read from the file header, nothing is decoded) is refused
the same way, so a decompression bomb costs nothing; the full decodes of validation share a budget
of pixels in flight, so memory stays bounded however large the accepted images are.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import logging
import os
import stat
import threading
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from nest_jax.data import augment
from nest_jax.data.digits import ArrayRecords
from nest_jax.errors import UserError
from nest_jax.paths import is_remote

EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
_DECODABLE = {"JPEG", "MPO", "PNG", "GIF", "BMP"}  # PIL format names accepted


class FolderSplit(NamedTuple):
    paths: list[str]
    labels: np.ndarray  # (N,) int32
    bad_files: list[tuple[str, str]]  # (path, reason)


# Full decodes in flight during validation hold at most this many pixels (~1 GiB as RGBA).
VALIDATION_PIXEL_BUDGET = 2**28


class _PixelBudget:
    """Bounds the pixels of the images being decoded at once by the validation threads."""

    def __init__(self, total: int):
        self.free, self.total, self.cond = total, total, threading.Condition()

    @contextlib.contextmanager
    def take(self, pixels: int):
        pixels = min(pixels, self.total)
        with self.cond:
            self.cond.wait_for(lambda: self.free >= pixels)
            self.free -= pixels
        try:
            yield
        finally:
            with self.cond:
                self.free += pixels
                self.cond.notify_all()


@contextlib.contextmanager
def _open(path: str):
    """PIL's image without PIL's decompression-bomb warning: `max_pixels` is this module's limit.

    PIL still refuses at open an image above twice its own `Image.MAX_IMAGE_PIXELS` (about 179 M
    pixels by default); that refusal is reported in this module's words as well."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except Image.DecompressionBombError:
            raise _TooLarge(f"more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels (PIL's limit)") from None
        with image:
            yield image


class _TooLarge(ValueError):
    pass


def _too_large(size: tuple[int, int], max_pixels: int) -> str | None:
    w, h = size
    if w * h > max_pixels:
        return (
            f"{w}x{h} = {w * h:,} pixels, above dataset.max_image_pixels={max_pixels:,} "
            "(raise it if the image is genuine)"
        )
    return None


def check_image(path: str, max_pixels: int, budget: _PixelBudget | None = None) -> str | None:
    """None if `path` decodes in full as an image of at most `max_pixels` pixels, else the reason."""
    try:
        with _open(path) as image:
            fmt = image.format
            if fmt not in _DECODABLE:
                return f"format {fmt} is not one of {sorted(_DECODABLE)}"
            reason = _too_large(image.size, max_pixels)
            if reason:
                return reason
            with budget.take(image.size[0] * image.size[1]) if budget else contextlib.nullcontext():
                image.load()  # the whole decode: broken entropy-coded data fails here, not in training
        if fmt in ("JPEG", "MPO"):
            with open(path, "rb") as f:
                f.seek(max(0, os.path.getsize(path) - 64))
                if b"\xff\xd9" not in f.read():
                    return "truncated JPEG (no end-of-image marker)"
    except _TooLarge as e:
        return f"{e}, above dataset.max_image_pixels={max_pixels:,}"
    except Exception as e:  # PIL raises many types for garbage input
        return f"{type(e).__name__}: {e}"
    return None


def _regular_files(folder: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Image-named entries of `folder`, sorted: (regular files, [(other entry, what it is)])."""
    files, others = [], []
    for name in sorted(os.listdir(folder)):
        if not name.lower().endswith(EXTENSIONS):
            continue
        path = os.path.join(folder, name)
        try:
            mode = os.stat(path).st_mode
        except OSError as e:  # e.g. a dangling link
            others.append((path, f"{type(e).__name__}: {e.strerror}"))
            continue
        if stat.S_ISREG(mode):
            files.append(name)
        elif not stat.S_ISDIR(mode):
            kind = "FIFO" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device"
            others.append((path, f"a {kind}, not a regular file"))
    return files, others


class ImageFolderSource:
    """Random-access source over files: `lookup(split)[index]` → {"image": uint8 (H, W, 3),
    "label"}."""

    _instances: dict = {}

    @classmethod
    def get(cls, root: str | None, *, train_split: str, validate: bool, max_pixels: int, draft: bool = False):
        key = (root, train_split, validate, max_pixels, draft)
        if key not in cls._instances:
            cls._instances[key] = cls(
                root, train_split=train_split, validate=validate, max_pixels=max_pixels, draft=draft
            )
        return cls._instances[key]

    def __init__(self, root: str | None, *, train_split: str, validate: bool, max_pixels: int, draft: bool = False):
        if root and is_remote(root):
            raise UserError(
                f"image_folder: data_dir {root} is on an object store; image folders are read from local "
                "disk (many small files): copy them first, e.g. `gcloud storage cp -r`"
            )
        if not root or not os.path.isdir(root):
            raise FileNotFoundError(
                f"image_folder: data_dir {root!r} is not a directory; expected data_dir/<split>/<class>/<image files>"
            )
        if max_pixels <= 0:
            raise UserError(f"dataset.max_image_pixels={max_pixels} must be positive")
        self.root, self.validate, self.max_pixels, self.name = root, validate, max_pixels, "image_folder"
        self.train_split, self.draft = train_split, bool(draft)
        train_dir = self._split_dir(train_split)
        self.classes = sorted(d for d in os.listdir(train_dir) if os.path.isdir(os.path.join(train_dir, d)))
        if not self.classes:
            raise FileNotFoundError(f"image_folder: no class subfolders in {train_dir}")
        self.num_classes = len(self.classes)
        self._splits: dict[str, FolderSplit] = {}

    def _split_dir(self, split: str) -> str:
        path = os.path.join(self.root, split)
        if not os.path.isdir(path):
            found = sorted(d for d in os.listdir(self.root) if os.path.isdir(os.path.join(self.root, d)))
            raise FileNotFoundError(f"image_folder: no split folder {path}; found {found}")
        return path

    def split(self, split: str) -> FolderSplit:
        if split not in self._splits:
            self._splits[split] = self._scan(split)
        return self._splits[split]

    def _scan(self, split: str) -> FolderSplit:
        split_dir = self._split_dir(split)
        unknown = sorted(set(os.listdir(split_dir)) - set(self.classes))
        unknown = [d for d in unknown if os.path.isdir(os.path.join(split_dir, d))]
        if unknown:
            raise ValueError(
                f"image_folder: {split_dir} has classes {unknown} missing from the "
                "train split, so they would have no label"
            )
        paths, labels, bad = [], [], []
        for label, name in enumerate(self.classes):
            class_dir = os.path.join(split_dir, name)
            if not os.path.isdir(class_dir):
                continue
            files, others = _regular_files(class_dir)
            bad += others
            if not files and split_dir == self._split_dir(self.train_split):
                raise UserError(
                    f"image_folder: class folder {class_dir} holds no images "
                    f"({', '.join(EXTENSIONS)}); remove it or add its images"
                )
            paths += [os.path.join(class_dir, f) for f in files]
            labels += [label] * len(files)
        if self.validate:
            budget = _PixelBudget(max(VALIDATION_PIXEL_BUDGET, self.max_pixels))
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                reasons = list(pool.map(lambda p: check_image(p, self.max_pixels, budget), paths))
            bad += [(p, r) for p, r in zip(paths, reasons) if r is not None]
            keep = [r is None for r in reasons]
            paths = [p for p, k in zip(paths, keep) if k]
            labels = [y for y, k in zip(labels, keep) if k]
        if bad:
            listed = "\n".join(f"  {p}: {r}" for p, r in bad[:50])
            more = f"\n  … and {len(bad) - 50} more" if len(bad) > 50 else ""
            logging.warning(
                "image_folder: skipping %d unusable file(s) in %s:\n%s%s", len(bad), split_dir, listed, more
            )
        if not paths:
            raise FileNotFoundError(f"image_folder: no readable images under {split_dir}")
        return FolderSplit(paths, np.asarray(labels, np.int32), bad)

    def bad_files(self, split: str) -> list[tuple[str, str]]:
        return self.split(split).bad_files

    def num_examples(self, split: str) -> int:
        return len(self.split(split).paths)

    def lookup(self, split: str) -> FileRecords:
        s = self.split(split)
        return FileRecords(s.paths, s.labels, self.max_pixels, encoded=self.draft and split == self.train_split)


def _to_rgb(image) -> np.ndarray:
    """uint8 (H, W, 3); 16-bit grey (PIL modes I;16*, and I from a PNG) scaled by 1/257, not clipped."""
    if image.mode.startswith("I;16") or (image.mode == "I" and image.format == "PNG"):
        grey = np.asarray(image, np.float64)
        grey = np.clip(np.rint(grey / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(image.convert("RGB"))


def _read(path: str, max_pixels: int, read: Callable, hint: bool = True):
    """`read(image)` of the file's PIL image. A file that does not decode, or has more than
    `max_pixels` pixels, is one UserError naming it (with `hint`: and how to skip such files)."""
    try:
        with _open(path) as image:
            reason = _too_large(image.size, max_pixels)
            if reason is None:
                return read(image)
    except _TooLarge as e:
        reason = str(e)
    except Exception as e:  # PIL raises many types for garbage input
        fix = "; remove it, or set config.dataset.validate_files=True to find and skip such files before training"
        raise UserError(f"image_folder: cannot decode {path} ({type(e).__name__}: {e}){fix if hint else ''}") from e
    fix = "; or set config.dataset.validate_files=True to skip such files"
    raise UserError(f"image_folder: {path} is {reason}{fix if hint else ''}")


def decode(path: str, max_pixels: int) -> np.ndarray:
    """The image file at `path` as uint8 (H, W, 3) (grey, palette and RGBA converted to RGB)."""
    return _read(path, max_pixels, _to_rgb)


DRAFT_SCALES = (8, 4, 2)  # the JPEG decoder's DCT-domain reductions (1/8, 1/4, 1/2)


class EncodedImage:
    """An image file not decoded yet. `np.asarray(x)` decodes it whole (uint8 (H, W, 3));
    `inception_crop` decodes only the scale its crop needs."""

    def __init__(self, path: str, max_pixels: int):
        self.path, self.max_pixels = path, max_pixels

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        image = decode(self.path, self.max_pixels)
        return image if dtype is None else image.astype(dtype)

    def inception_crop(self, rng: np.random.Generator, *, size: int, min_area: float, method: str) -> np.ndarray:
        """`augment.inception_crop` of the decoded image, decoding less: the crop box is drawn from
        the header's size (the same box, from the same rng, as for the full image), then the JPEG
        decoder reduces by the largest of 1/2, 1/4, 1/8 that keeps the box at least `size` px on
        both sides (PIL `Image.draft`), and the box is mapped onto the reduced image. Other formats
        decode whole. -> uint8 (size, size, 3)."""

        def read(image):
            w, h = image.size
            top, left, ch, cw = augment.sample_crop_box(rng, h, w, min_area=min_area)
            scale = next((s for s in DRAFT_SCALES if min(ch, cw) >= s * size), 1)
            if scale > 1:
                image.draft(image.mode, (-(-w // scale), -(-h // scale)))
            pixels = _to_rgb(image)
            sy, sx = pixels.shape[0] / h, pixels.shape[1] / w
            if (sy, sx) == (1.0, 1.0):
                return pixels, (left, top, left + cw, top + ch)
            return pixels, (left * sx, top * sy, (left + cw) * sx, (top + ch) * sy)

        pixels, box = _read(self.path, self.max_pixels, read, hint=False)
        return augment.resize(pixels, (size, size), method, box=box)


class FileRecords(ArrayRecords):
    """Random access over image files: `records[i]` → {"image": uint8 (H, W, 3), "label"}, or with
    `encoded=True` {"image": EncodedImage, "label"} for a training chain that decodes (less)
    itself."""

    def __init__(self, paths: list[str], labels: np.ndarray, max_pixels: int, encoded: bool = False):
        super().__init__(paths, labels, functools.partial(EncodedImage if encoded else decode, max_pixels=max_pixels))
        self.paths, self.max_pixels, self.encoded = paths, max_pixels, encoded
