"""scikit-learn's digits: 1,797 real 8×8 grey images of 0–9, pixel values 0..16 (no download).

Fixed split, documented once: `train_test_split(test_size=0.25, stratify=labels,
random_state=0)` → 1,347 train / 450 test. Images are kept at 8×8 as v/16 ∈ [0, 1], (8, 8, 1),
and resized per example to `image_size` (bilinear or bicubic, `resize_method`) by the
preprocessing, which also replicates the grey channel when `num_channels` is 3.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

NUM_TRAIN, NUM_TEST = 1347, 450


@functools.lru_cache(maxsize=1)
def load_split_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train": (images (1347, 8, 8, 1) float32 in [0, 1], labels (1347,) int32), "test": …}."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    labels = digits.target.astype(np.int32)
    x_tr, x_te, y_tr, y_te = train_test_split(images, labels, test_size=0.25, stratify=labels, random_state=0)
    return {"train": (x_tr, y_tr), "test": (x_te, y_te)}


class DigitsSource:
    """Random-access source: `lookup(split)[index]` → {"image": (8, 8, 1) float32, "label"}."""

    name = "digits"
    num_classes = 10

    def _arrays(self, split: str):
        arrays = load_split_arrays()
        if split not in arrays:
            raise ValueError(f"digits has splits 'train' and 'test', not {split!r}")
        return arrays[split]

    def num_examples(self, split: str) -> int:
        return len(self._arrays(split)[1])

    def lookup(self, split: str) -> ArrayRecords:
        return ArrayRecords(*self._arrays(split))


class ArrayRecords:
    """Random access over in-memory arrays: `records[i]` → {"image": images[i], "label": labels[i]},
    or {"image": decode(images[i]), …} with `decode` (e.g. encoded bytes → uint8 pixels)."""

    def __init__(self, images, labels: np.ndarray, decode: Callable | None = None):
        self.images, self.labels, self.decode = images, labels, decode

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        image = self.images[index] if self.decode is None else self.decode(self.images[index])
        return {"image": image, "label": int(self.labels[index])}
