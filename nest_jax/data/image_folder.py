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
never be predicted). Decoding is PIL (JPEG, PNG, GIF first frame, BMP), converted to RGB.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
from typing import NamedTuple

import numpy as np

from nest_jax.errors import UserError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
_DECODABLE = {"JPEG", "MPO", "PNG", "GIF", "BMP"}  # PIL format names accepted


class FolderSplit(NamedTuple):
    paths: list[str]
    labels: np.ndarray  # (N,) int32
    bad_files: list[tuple[str, str]]  # (path, reason)


def check_image(path: str) -> str | None:
    """None if `path` decodes in full as an image, else the reason."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            fmt = image.format
            if fmt not in _DECODABLE:
                return f"format {fmt} is not one of {sorted(_DECODABLE)}"
            image.load()  # the whole decode: broken entropy-coded data fails here, not in training
        if fmt in ("JPEG", "MPO"):
            with open(path, "rb") as f:
                f.seek(max(0, os.path.getsize(path) - 64))
                if b"\xff\xd9" not in f.read():
                    return "truncated JPEG (no end-of-image marker)"
    except Exception as e:  # PIL raises many types for garbage input
        return f"{type(e).__name__}: {e}"
    return None


class ImageFolderSource:
    """Random-access source over files: `lookup(split)[index]` → {"image": uint8 (H, W, 3),
    "label"}."""

    _instances: dict = {}

    @classmethod
    def get(cls, root: str | None, *, train_split: str = "train", validate: bool = True):
        key = (root, train_split, validate)
        if key not in cls._instances:
            cls._instances[key] = cls(root, train_split=train_split, validate=validate)
        return cls._instances[key]

    def __init__(self, root: str | None, *, train_split: str = "train", validate: bool = True):
        if not root or not os.path.isdir(root):
            raise FileNotFoundError(
                f"image_folder: data_dir {root!r} is not a directory; expected data_dir/<split>/<class>/<image files>"
            )
        self.root, self.validate, self.name = root, validate, "image_folder"
        self.train_split = train_split
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
        paths, labels = [], []
        for label, name in enumerate(self.classes):
            class_dir = os.path.join(split_dir, name)
            if not os.path.isdir(class_dir):
                continue
            files = [f for f in sorted(os.listdir(class_dir)) if f.lower().endswith(EXTENSIONS)]
            if not files and split_dir == self._split_dir(self.train_split):
                raise UserError(
                    f"image_folder: class folder {class_dir} holds no images "
                    f"({', '.join(EXTENSIONS)}); remove it or add its images"
                )
            paths += [os.path.join(class_dir, f) for f in files]
            labels += [label] * len(files)
        bad: list[tuple[str, str]] = []
        if self.validate:
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                reasons = list(pool.map(check_image, paths))
            bad = [(p, r) for p, r in zip(paths, reasons) if r is not None]
            keep = [r is None for r in reasons]
            paths = [p for p, k in zip(paths, keep) if k]
            labels = [y for y, k in zip(labels, keep) if k]
            if bad:
                listed = "\n".join(f"  {p}: {r}" for p, r in bad[:50])
                more = f"\n  … and {len(bad) - 50} more" if len(bad) > 50 else ""
                logging.warning(
                    "image_folder: skipping %d unreadable file(s) in %s:\n%s%s", len(bad), split_dir, listed, more
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
        return FileRecords(s.paths, s.labels)


def decode(path: str) -> np.ndarray:
    """The image file at `path` as uint8 (H, W, 3) (grey, palette and RGBA converted to RGB)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except Exception as e:  # PIL raises many types for garbage input
        raise UserError(
            f"image_folder: cannot decode {path} ({type(e).__name__}: {e}); remove it, "
            "or set config.dataset.validate_files=True to find and skip such files "
            "before training"
        ) from e


class FileRecords:
    """Random access over image files: `records[i]` → {"image": uint8 (H, W, 3), "label"}."""

    def __init__(self, paths: list[str], labels: np.ndarray):
        self.paths, self.labels = paths, labels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        return {"image": decode(self.paths[index]), "label": int(self.labels[index])}
