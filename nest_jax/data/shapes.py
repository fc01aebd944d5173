"""Procedural shapes × textures: a small data set on which shape bias is measurable.

Every image shows one filled shape (circle, square, triangle, …) at a random position and size
on a grey, lightly noisy background; the shape is filled with a texture (a two-colour pattern:
stripes, checks, dots, …). Class k owns shape k and texture k. Three variants, after the
Stylized-ImageNet / cue-conflict protocol of Geirhos et al. (2019):

- "natural": shape k filled with texture k, label k — both cues agree;
- "stylized": shape k filled with a uniformly random texture, label k — only the shape predicts;
- "cue_conflict": shape k filled with texture j ≠ k, label k (the shape), `texture_label` j.

Examples are a pure function of (seed, split, variant, index) — random access, no files.
Pure NumPy (no framework): `get(split, index)` / `source[split, index]` returns
{"image": uint8 (H, W, 3), "label": int, "texture_label": int}.
"""

from __future__ import annotations

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross", "star", "ring", "diamond", "hexagon", "crescent", "bar")
VARIANTS = ("natural", "stylized", "cue_conflict")
_SPLITS = {"train": 0, "test": 1, "validation": 2}
# Two colours per texture (RGB in [0, 1]); distinct hues so that texture is an easy cue.
_PALETTE = (
    (0.9, 0.2, 0.2),
    (0.2, 0.3, 0.9),
    (0.95, 0.8, 0.1),
    (0.1, 0.7, 0.3),
    (0.8, 0.3, 0.9),
    (0.1, 0.8, 0.85),
    (0.95, 0.5, 0.1),
    (0.5, 0.3, 0.1),
    (0.95, 0.95, 0.95),
    (0.05, 0.05, 0.05),
)


def shape_mask(kind: str, size: int, cy: float, cx: float, r: float) -> np.ndarray:
    """(size, size) bool mask of a shape centred at (cy, cx) with radius-like scale r (pixels)."""
    y, x = np.mgrid[:size, :size].astype(np.float64) + 0.5
    dy, dx = (y - cy) / r, (x - cx) / r
    rad = np.hypot(dy, dx)
    ang = np.arctan2(dy, dx)
    if kind == "circle":
        return rad <= 1.0
    if kind == "square":
        return (np.abs(dy) <= 0.8) & (np.abs(dx) <= 0.8)
    if kind == "triangle":  # apex up
        return (dy <= 0.8) & (dy >= -0.9 + 2 * np.abs(dx) * 0.9) & (np.abs(dx) <= 1.0)
    if kind == "cross":
        return ((np.abs(dy) <= 0.3) & (np.abs(dx) <= 1.0)) | ((np.abs(dx) <= 0.3) & (np.abs(dy) <= 1.0))
    if kind == "star":
        edge = 0.5 + 0.5 * np.cos(5 * (ang + np.pi / 2)) ** 2
        return rad <= edge
    if kind == "ring":
        return (rad <= 1.0) & (rad >= 0.55)
    if kind == "diamond":
        return np.abs(dy) + np.abs(dx) <= 1.0
    if kind == "hexagon":
        return (np.abs(dy) <= 0.87) & (np.abs(dy) * 0.577 + np.abs(dx) <= 1.0)
    if kind == "crescent":
        return (rad <= 1.0) & (np.hypot(dy, dx - 0.55) > 0.8)
    if kind == "bar":
        return (np.abs(dy) <= 0.35) & (np.abs(dx) <= 1.0)
    raise ValueError(f"unknown shape {kind!r}")


def texture(k: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Texture k as (size, size, 3) floats in [0, 1]: pattern k % 10 in colour pair k, random phase."""
    y, x = np.mgrid[:size, :size].astype(np.float64)
    period = max(size / 8.0, 3.0)
    py, px = rng.uniform(0, period, 2)
    y, x = y + py, x + px
    kind = k % 10
    if kind == 0:
        f = np.sin(2 * np.pi * y / period) > 0
    elif kind == 1:
        f = np.sin(2 * np.pi * x / period) > 0
    elif kind == 2:
        f = np.sin(2 * np.pi * (x + y) / (period * 1.4)) > 0
    elif kind == 3:
        f = (np.floor(y / (period / 2)) + np.floor(x / (period / 2))) % 2 == 0
    elif kind == 4:
        f = np.hypot((y % period) - period / 2, (x % period) - period / 2) < period / 3.5
    elif kind == 5:
        f = np.sin(2 * np.pi * (x - y) / (period * 1.4)) > 0
    elif kind == 6:
        f = np.sin(2 * np.pi * np.hypot(y - size / 2, x - size / 2) / period) > 0
    elif kind == 7:
        f = (np.abs((y % period) - period / 2) < 0.6) | (np.abs((x % period) - period / 2) < 0.6)
    elif kind == 8:
        f = np.sin(2 * np.pi * y / period + 2.0 * np.sin(2 * np.pi * x / period)) > 0
    else:
        f = rng.random((size // 2 + 1, size // 2 + 1)).repeat(2, 0).repeat(2, 1)[:size, :size] > 0.5
    c1 = np.asarray(_PALETTE[k % len(_PALETTE)])
    c2 = np.asarray(_PALETTE[(k * 3 + 5) % len(_PALETTE)]) * 0.5 + 0.25
    return np.where(f[..., None], c1, c2)


class ShapesTexturesSource:
    """Random-access shapes × textures source.

    num_classes: ≤ 10 (shape k and texture k per class); image_size: pixels; variant: one of
    VARIANTS; num_train / num_test: split sizes; seed: changes every image.
    """

    name = "shapes"
    random_access = True

    def __init__(
        self,
        num_classes: int = 8,
        image_size: int = 32,
        variant: str = "natural",
        num_train: int = 4000,
        num_test: int = 1000,
        seed: int = 0,
    ):
        if not 2 <= num_classes <= len(SHAPES):
            raise ValueError(f"num_classes must be in 2..{len(SHAPES)}, got {num_classes}")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.num_classes, self.image_size, self.variant = int(num_classes), int(image_size), variant
        self.sizes = {"train": int(num_train), "test": int(num_test), "validation": int(num_test)}
        self.seed = int(seed)

    def num_examples(self, split: str) -> int:
        if split not in self.sizes:
            raise ValueError(f"shapes has splits {sorted(self.sizes)}, not {split!r}")
        return self.sizes[split]

    def get(self, split: str, index: int) -> dict:
        n = self.num_examples(split)
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {split} ({n} examples)")
        rng = np.random.default_rng([self.seed, _SPLITS[split], VARIANTS.index(self.variant), int(index)])
        k = int(index % self.num_classes)  # balanced classes
        if self.variant == "natural":
            t = k
        elif self.variant == "stylized":
            t = int(rng.integers(self.num_classes))
        else:
            t = int((k + 1 + rng.integers(self.num_classes - 1)) % self.num_classes)
        s = self.image_size
        r = rng.uniform(0.28, 0.42) * s
        cy, cx = rng.uniform(r, s - r, 2)
        mask = shape_mask(SHAPES[k], s, cy, cx, r)[..., None]
        background = 0.5 + rng.normal(0.0, 0.06, (s, s, 1))
        img = np.where(mask, texture(t, s, rng), background)
        return {"image": np.clip(np.round(img * 255), 0, 255).astype(np.uint8), "label": k, "texture_label": t}

    def __getitem__(self, item) -> dict:
        split, index = item if isinstance(item, tuple) else ("train", item)
        return self.get(split, int(index))

    def lookup(self, split: str) -> SplitRecords:
        """`records[i]` → example i of `split`, the random access the input pipelines read."""
        return SplitRecords(self, split)

    def arrays(self, split: str, limit: int | None = None) -> dict[str, np.ndarray]:
        """The whole split (or its first `limit` examples) as arrays: image uint8 (N, H, W, 3), labels."""
        n = self.num_examples(split) if limit is None else min(limit, self.num_examples(split))
        ex = [self.get(split, i) for i in range(n)]
        return {
            "image": np.stack([e["image"] for e in ex]),
            "label": np.asarray([e["label"] for e in ex], np.int32),
            "texture_label": np.asarray([e["texture_label"] for e in ex], np.int32),
        }


class SplitRecords:
    """One split of a ShapesTexturesSource as a sequence: `len(records)`, `records[i]`."""

    def __init__(self, source: ShapesTexturesSource, split: str):
        self.source, self.split = source, split

    def __len__(self) -> int:
        return self.source.num_examples(self.split)

    def __getitem__(self, index: int) -> dict:
        example = self.source.get(self.split, int(index))
        return {"image": example["image"], "label": example["label"]}
