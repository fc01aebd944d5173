"""Procedural shapes × textures: a world in which shape bias, segmentation and locality are measurable.

Every image shows one filled object: shape k of 20 (circle, square, triangle, …, hourglass) at a
random position and scale (optionally rotated), filled with a texture (a two-colour pattern, 20
of them: `nest_jax.data.textures`) on a grey, lightly noisy background, or, with `clutter > 0`,
on a cluttered one (smooth colour variation and `clutter` small distractor ellipses with random
textures, drawn under the object). Class k owns shape k and texture k. Three variants, after the
Stylized-ImageNet / cue-conflict protocol of Geirhos et al. (2019, §2):

- "natural": shape k filled with texture k, label k — both cues agree;
- "stylized": shape k filled with a uniformly random texture, label k — only the shape predicts
  (the Stylized-ImageNet analogue: the texture is re-drawn at random for every image);
- "cue_conflict": shape k filled with texture j ≠ k, label k (the shape), `texture_label` j.

Every example carries the ground-truth object mask (the object's pixels; distractors are under
it, so the mask is exactly what was painted last). Examples are a pure function of
(seed, split, variant, index): random access, any number of images, no files, so grain workers
generate them on the fly. Pure NumPy: `get(split, index)` / `source[split, index]` returns
{"image": uint8 (H, W, 3), "label": int, "texture_label": int, "mask": bool (H, W)}.
"""

from __future__ import annotations

import numpy as np

from nest_jax.data.textures import NUM_TEXTURES, clutter_background, texture

SHAPES = (
    "circle", "square", "triangle", "cross", "star", "ring", "diamond", "hexagon", "crescent", "bar",
    "pentagon", "heart", "arrow", "ellipse", "ell", "tee", "semicircle", "trapezoid", "chevron", "hourglass",
)  # fmt: skip
VARIANTS = ("natural", "stylized", "cue_conflict")
_SPLITS = {"train": 0, "test": 1, "validation": 2}
# Largest distance from the centre, in units of r, over the shapes (the square's corner): the
# margin that keeps a rotated object inside the image.
_ROTATED_EXTENT = 1.15


def _unit_mask(kind: str, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Shape `kind` in unit coordinates (dy down, dx right; the shape fits in about [-1, 1]²)."""
    rad, ang = np.hypot(dy, dx), np.arctan2(dy, dx)
    ady, adx = np.abs(dy), np.abs(dx)
    masks = {
        "circle": lambda: rad <= 1.0,
        "square": lambda: (ady <= 0.8) & (adx <= 0.8),
        "triangle": lambda: (dy <= 0.8) & (dy >= -0.9 + 2 * adx * 0.9) & (adx <= 1.0),  # apex up
        "cross": lambda: ((ady <= 0.3) & (adx <= 1.0)) | ((adx <= 0.3) & (ady <= 1.0)),
        "star": lambda: rad <= 0.5 + 0.5 * np.cos(5 * (ang + np.pi / 2)) ** 2,
        "ring": lambda: (rad <= 1.0) & (rad >= 0.55),
        "diamond": lambda: ady + adx <= 1.0,
        "hexagon": lambda: (ady <= 0.87) & (ady * 0.577 + adx <= 1.0),
        "crescent": lambda: (rad <= 1.0) & (np.hypot(dy, dx - 0.55) > 0.8),
        "bar": lambda: (ady <= 0.35) & (adx <= 1.0),
        # a regular pentagon, apex up: the polar radius of its edge at angle `ang`
        "pentagon": lambda: rad <= np.cos(np.pi / 5) / np.cos(((ang + np.pi / 2) % (2 * np.pi / 5)) - np.pi / 5),
        "heart": lambda: (
            ((1.15 * dx) ** 2 + (0.2 - 1.15 * dy) ** 2 - 1) ** 3 - (1.15 * dx) ** 2 * (0.2 - 1.15 * dy) ** 3 <= 0
        ),
        "arrow": lambda: (
            ((ady <= 0.22) & (dx >= -1.0) & (dx <= 0.15)) | ((dx >= 0.05) & (dx <= 1.0) & (ady <= 0.8 * (1.0 - dx)))
        ),
        "ellipse": lambda: dx**2 + (dy / 0.5) ** 2 <= 1.0,
        "ell": lambda: ((dx >= -0.8) & (dx <= -0.3) & (ady <= 0.9)) | ((dy >= 0.4) & (dy <= 0.9) & (adx <= 0.8)),
        "tee": lambda: ((dy >= -0.9) & (dy <= -0.45) & (adx <= 0.9)) | ((adx <= 0.25) & (ady <= 0.9)),
        "semicircle": lambda: (np.hypot(dy - 0.45, dx) <= 1.0) & (dy <= 0.45),
        "trapezoid": lambda: (ady <= 0.6) & (adx <= 0.45 + 0.45 * (dy + 0.6) / 1.2),
        "chevron": lambda: (dy >= 0.9 * adx - 0.6) & (dy <= 0.9 * adx - 0.1) & (adx <= 0.9),
        "hourglass": lambda: (adx <= ady * 0.9 + 0.08) & (ady <= 0.9),
    }
    if kind not in masks:
        raise ValueError(f"unknown shape {kind!r}; shapes: {', '.join(SHAPES)}")
    return masks[kind]()


def shape_mask(kind: str, size: int, cy: float, cx: float, r: float, angle: float = 0.0) -> np.ndarray:
    """(size, size) bool mask of a shape centred at (cy, cx) (pixels; pixel (i, j) has centre
    (i + 0.5, j + 0.5)) with radius-like scale r (pixels), rotated by `angle` radians."""
    y, x = np.mgrid[:size, :size].astype(np.float64) + 0.5
    dy, dx = (y - cy) / r, (x - cx) / r
    if angle:
        c, s = np.cos(angle), np.sin(angle)
        dy, dx = c * dy - s * dx, s * dy + c * dx
    return _unit_mask(kind, dy, dx)


class ShapesTexturesSource:
    """Random-access shapes × textures source.

    num_classes: 2..20 (shape k and texture k per class); image_size: pixels (64 by default; 32,
    96, 128 work alike); variant: one of VARIANTS; num_train / num_test: split sizes (any number:
    images are generated, not stored); seed: changes every image; clutter: distractor ellipses on
    a cluttered background (0: plain grey background); rotation: rotate each object uniformly;
    min_scale / max_scale: the object's radius-like scale as a fraction of the image side.
    """

    name = "shapes"
    random_access = True

    def __init__(
        self,
        num_classes: int = 8,
        image_size: int = 64,
        variant: str = "natural",
        num_train: int = 4000,
        num_test: int = 1000,
        seed: int = 0,
        clutter: int = 0,
        rotation: bool = False,
        min_scale: float = 0.28,
        max_scale: float = 0.42,
    ):
        if not 2 <= num_classes <= len(SHAPES):
            raise ValueError(f"num_classes must be in 2..{len(SHAPES)}, got {num_classes}")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if not 0.05 <= min_scale <= max_scale <= 0.45:
            raise ValueError(f"need 0.05 <= min_scale <= max_scale <= 0.45, got {min_scale}, {max_scale}")
        if clutter < 0 or image_size < 8:
            raise ValueError(f"need clutter >= 0 and image_size >= 8, got {clutter}, {image_size}")
        self.num_classes, self.image_size, self.variant = int(num_classes), int(image_size), variant
        self.sizes = {"train": int(num_train), "test": int(num_test), "validation": int(num_test)}
        self.seed, self.clutter, self.rotation = int(seed), int(clutter), bool(rotation)
        self.scale = (float(min_scale), float(max_scale))
        assert NUM_TEXTURES >= len(SHAPES)

    @classmethod
    def from_config(cls, shapes, image_size: int, **overrides) -> ShapesTexturesSource:
        """The world of a config's `dataset.shapes` section at `image_size` px; `overrides` replace
        fields (e.g. variant="cue_conflict", num_test=256 for an analysis's stimuli)."""
        fields = ("num_classes", "variant", "num_train", "num_test", "seed", "clutter", "rotation")
        kw = {k: shapes[k] for k in fields + ("min_scale", "max_scale")}
        return cls(image_size=image_size, **{**kw, **overrides})

    def num_examples(self, split: str) -> int:
        if split not in self.sizes:
            raise ValueError(f"shapes has splits {sorted(self.sizes)}, not {split!r}")
        return self.sizes[split]

    def _draw(self, split: str, index: int) -> tuple[dict, np.random.Generator]:
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
        r = rng.uniform(*self.scale) * s
        margin = r * _ROTATED_EXTENT if self.rotation else r
        cy, cx = rng.uniform(margin, s - margin, 2)
        angle = float(rng.uniform(0.0, 2 * np.pi)) if self.rotation else 0.0
        layout = {"label": k, "texture_label": t, "shape": SHAPES[k], "cy": cy, "cx": cx, "r": r, "angle": angle}
        return layout, rng

    def layout(self, split: str, index: int) -> dict:
        """What example `index` draws: label, texture_label, shape name, centre (cy, cx), scale r and
        angle (pixels / radians) — the parameters of `shape_mask`."""
        return self._draw(split, index)[0]

    def get(self, split: str, index: int) -> dict:
        lay, rng = self._draw(split, index)
        s = self.image_size
        mask = shape_mask(lay["shape"], s, lay["cy"], lay["cx"], lay["r"], lay["angle"])
        if self.clutter:
            background = clutter_background(s, rng, self.clutter)
        else:
            background = 0.5 + rng.normal(0.0, 0.06, (s, s, 1))
        img = np.where(mask[..., None], texture(lay["texture_label"], s, rng), background)
        return {
            "image": np.clip(np.round(img * 255), 0, 255).astype(np.uint8),
            "label": lay["label"],
            "texture_label": lay["texture_label"],
            "mask": mask,
        }

    def __getitem__(self, item) -> dict:
        split, index = item if isinstance(item, tuple) else ("train", item)
        return self.get(split, int(index))

    def lookup(self, split: str) -> SplitRecords:
        """`records[i]` → example i of `split`, the random access the input pipelines read."""
        return SplitRecords(self, split)

    def arrays(self, split: str, limit: int | None = None, *, masks: bool = False) -> dict[str, np.ndarray]:
        """The whole split (or its first `limit` examples) as arrays: image uint8 (N, H, W, 3),
        label and texture_label int32 (N,), and with `masks` the object masks bool (N, H, W)."""
        n = self.num_examples(split) if limit is None else min(limit, self.num_examples(split))
        ex = [self.get(split, i) for i in range(n)]
        out = {
            "image": np.stack([e["image"] for e in ex]),
            "label": np.asarray([e["label"] for e in ex], np.int32),
            "texture_label": np.asarray([e["texture_label"] for e in ex], np.int32),
        }
        if masks:
            out["mask"] = np.stack([e["mask"] for e in ex])
        return out


class SplitRecords:
    """One split of a ShapesTexturesSource as a sequence: `len(records)`, `records[i]`."""

    def __init__(self, source: ShapesTexturesSource, split: str):
        self.source, self.split = source, split

    def __len__(self) -> int:
        return self.source.num_examples(self.split)

    def __getitem__(self, index: int) -> dict:
        example = self.source.get(self.split, int(index))
        return {"image": example["image"], "label": example["label"]}
