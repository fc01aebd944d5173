"""Image-folder source: `data_dir/<split>/<class>/<image>` (classes = sorted subfolders of the
train split, shared by every split so labels agree).

Unreadable files are found when the split is indexed, not mid-epoch: each file is opened with PIL
(`verify()`: header, PNG chunk CRCs to IEND) and JPEGs must end with the EOI marker (catches
truncation). Bad files are excluded, reported by name in a warning and kept in
`source.bad_files(split)`; `validate_files: False` in the config skips the check (large trusted
folders). Decoding is tf.io.decode_image (JPEG, PNG, GIF first frame, BMP).
"""
from __future__ import annotations

import concurrent.futures
import logging
import os
from typing import NamedTuple

import numpy as np

from nest_jax.data._tf import tf

EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
_DECODABLE = {"JPEG", "MPO", "PNG", "GIF", "BMP"}  # PIL format names tf.io.decode_image reads


class FolderSplit(NamedTuple):
    paths: list[str]
    labels: np.ndarray  # (N,) int32
    bad_files: list[tuple[str, str]]  # (path, reason)


def check_image(path: str) -> str | None:
    """None if `path` decodes as an image TF can read, else the reason."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            fmt = image.format
            image.verify()
        if fmt not in _DECODABLE:
            return f"format {fmt} not decodable by tf.io.decode_image"
        if fmt in ("JPEG", "MPO"):
            with open(path, "rb") as f:
                f.seek(max(0, os.path.getsize(path) - 64))
                if b"\xff\xd9" not in f.read():
                    return "truncated JPEG (no end-of-image marker)"
    except Exception as e:  # PIL raises many types for garbage input
        return f"{type(e).__name__}: {e}"
    return None


class ImageFolderSource:
    """Random-access source over files: `lookup(split)(index)` → {"image": uint8 (H, W, 3),
    "label"}."""

    random_access = True
    _instances: dict = {}

    @classmethod
    def get(cls, root: str | None, *, train_split: str = "train", validate: bool = True):
        key = (root, train_split, validate)
        if key not in cls._instances:
            cls._instances[key] = cls(root, train_split=train_split, validate=validate)
        return cls._instances[key]

    def __init__(self, root: str | None, *, train_split: str = "train", validate: bool = True):
        if not root or not os.path.isdir(root):
            raise FileNotFoundError(f"image_folder: data_dir {root!r} is not a directory; expected "
                                    "data_dir/<split>/<class>/<image files>")
        self.root, self.validate, self.name = root, validate, "image_folder"
        train_dir = self._split_dir(train_split)
        self.classes = sorted(d for d in os.listdir(train_dir)
                              if os.path.isdir(os.path.join(train_dir, d)))
        if not self.classes:
            raise FileNotFoundError(f"image_folder: no class subfolders in {train_dir}")
        self.num_classes = len(self.classes)
        self._splits: dict[str, FolderSplit] = {}

    def _split_dir(self, split: str) -> str:
        path = os.path.join(self.root, split)
        if not os.path.isdir(path):
            found = sorted(d for d in os.listdir(self.root)
                           if os.path.isdir(os.path.join(self.root, d)))
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
            raise ValueError(f"image_folder: {split_dir} has classes {unknown} missing from the "
                             "train split, so they would have no label")
        paths, labels = [], []
        for label, name in enumerate(self.classes):
            class_dir = os.path.join(split_dir, name)
            if not os.path.isdir(class_dir):
                continue
            for file in sorted(os.listdir(class_dir)):
                if file.lower().endswith(EXTENSIONS):
                    paths.append(os.path.join(class_dir, file))
                    labels.append(label)
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
                logging.warning("image_folder: skipping %d unreadable file(s) in %s:\n%s%s",
                                len(bad), split_dir, listed, more)
        if not paths:
            raise FileNotFoundError(f"image_folder: no readable images under {split_dir}")
        return FolderSplit(paths, np.asarray(labels, np.int32), bad)

    def bad_files(self, split: str) -> list[tuple[str, str]]:
        return self.split(split).bad_files

    def num_examples(self, split: str) -> int:
        return len(self.split(split).paths)

    def lookup(self, split: str):
        s = self.split(split)
        paths, labels = tf.constant(s.paths), tf.constant(s.labels)

        def fn(index):
            data = tf.io.read_file(tf.gather(paths, index))
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
            return {"image": image, "label": tf.gather(labels, index)}

        return fn
