"""RandAugment (Cubuk et al. 2020, "RandAugment: Practical automated data augmentation with a
reduced search space", §3) in NumPy, on float32 [0, 1] images (H, W, C).

Follows the official NesT / TF-TPU version: `layers` ops drawn uniformly from the list below,
each applied with probability `prob`, magnitude level ~ N(magnitude, magnitude_std) clipped to
[0, 10] and redrawn per layer. Level → argument maps are the official ones, except posterize,
which keeps 8 − ⌊4·level⌋ bits (the TF original keeps ⌊4·level⌋, i.e. *no* bits at level 0).
Empty pixels after a geometric op are filled with grey 0.5 (official: 128). Geometric ops use
nearest-neighbour sampling; every op is a float function (no rounding to 8 bits except where the
op is defined on 8-bit levels: equalize, posterize).
"""

from __future__ import annotations

import functools
import math

import numpy as np

OPS = (
    "identity",
    "autocontrast",
    "equalize",
    "rotate",
    "solarize",
    "color",
    "posterize",
    "contrast",
    "brightness",
    "sharpness",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)

_TRANSLATE_PX = {224: 100, 128: 40, 96: 30, 32: 10}  # official table; else 0.3 × size
GRAY_WEIGHTS = np.array([0.2989, 0.587, 0.114], np.float32)  # ITU-R 601-2 luma, as tf.image


def gray(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) → (H, W, 1) luma; one-channel images are returned as they are."""
    if image.shape[-1] == 1:
        return image
    return (image[..., :3] @ GRAY_WEIGHTS)[..., None].astype(np.float32)


def blend(degenerate: np.ndarray, image: np.ndarray, factor: float) -> np.ndarray:
    """factor 0 → degenerate, 1 → image, > 1 extrapolates (then clipped), as PIL.ImageEnhance."""
    return np.clip(degenerate + np.float32(factor) * (image - degenerate), 0.0, 1.0)


@functools.lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return x, y


def _nearest(coord: np.ndarray) -> np.ndarray:
    """std::round (half away from zero, as TF's nearest sampling) for the coordinates that can
    land inside the image; every negative result is −1 (outside) either way."""
    return np.where(coord > -0.5, np.floor(coord + 0.5), -1.0).astype(np.int64)


def affine(image: np.ndarray, transform) -> np.ndarray:
    """Output pixel (x, y) reads input (a0·x + a1·y + a2, b0·x + b1·y + b2), nearest neighbour,
    grey 0.5 outside the image (the convention of tf ImageProjectiveTransform; transform holds
    the 6 numbers a0 a1 a2 b0 b1 b2)."""
    h, w, c = image.shape
    a0, a1, a2, b0, b1, b2 = (float(t) for t in transform)
    x, y = _grid(h, w)
    src_x = _nearest(a0 * x + a1 * y + a2)
    src_y = _nearest(b0 * x + b1 * y + b2)
    inside = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
    flat = np.where(inside, src_y * w + src_x, 0).ravel()
    out = image.reshape(h * w, c)[flat].reshape(h, w, c)
    return np.where(inside[..., None], out, np.float32(0.5)).astype(np.float32, copy=False)


def rotation(angle, h: int, w: int, xp=math) -> tuple:
    """Rotation by `angle` radians about the image centre, as an output→input affine map
    (`xp`: math, or jax.numpy for a traced angle)."""
    cos, sin = xp.cos(angle), xp.sin(angle)
    return (
        cos,
        -sin,
        ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / 2,
        sin,
        cos,
        ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / 2,
    )


def _channels(image: np.ndarray) -> np.ndarray:
    """(H, W, C) → contiguous (C, H·W): per-channel reductions over a strided last axis are
    ~50× slower in NumPy than over contiguous rows."""
    return np.ascontiguousarray(image.reshape(-1, image.shape[-1]).T)


def autocontrast(image: np.ndarray) -> np.ndarray:
    """Per channel, stretch [min, max] to [0, 1]; flat channels stay as they are."""
    planes = _channels(image)
    lo, hi = planes.min(1), planes.max(1)
    scaled = (image - lo) / np.maximum(hi - lo, 1e-6)
    return np.where(hi > lo, scaled, image).astype(np.float32)


def equalize(image: np.ndarray) -> np.ndarray:
    """PIL ImageOps.equalize per channel, on the image quantized to 256 levels."""
    q = _channels(np.round(image * 255.0).astype(np.uint8))
    out = np.empty(q.shape, np.float32)
    for c, ch in enumerate(q):
        hist = np.bincount(ch, minlength=256)
        step = (hist.sum() - hist[ch.max()]) // 255  # all but the highest occupied level
        if step == 0:
            out[c] = ch
            continue
        lut = (np.cumsum(hist) + step // 2) // step
        lut = np.clip(np.concatenate([[0], lut[:-1]]), 0, 255)
        out[c] = lut[ch]
    return (out.T.reshape(image.shape) / np.float32(255.0)).astype(np.float32)


def sharpness(image: np.ndarray, factor: float) -> np.ndarray:
    """PIL ImageEnhance.Sharpness: blend with the 3×3 smoothing [[1,1,1],[1,5,1],[1,1,1]]/13;
    the one-pixel border is left unsmoothed."""
    smooth = image.copy()
    h, w, _ = image.shape
    if h > 2 and w > 2:
        acc = 4.0 * image[1:-1, 1:-1]
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                acc = acc + image[dy : dy + h - 2, dx : dx + w - 2]
        smooth[1:-1, 1:-1] = acc / 13.0
    return blend(smooth, image, factor)


def posterize(image: np.ndarray, level: float) -> np.ndarray:
    """Drop ⌊4·level⌋ low bits of the 8-bit value."""
    quantum = 2.0 ** math.floor(level * 4)
    return (np.floor(np.round(image * 255.0) / quantum) * quantum / 255.0).astype(np.float32)


def translate_pixels(width: int) -> int:
    """Largest translation in pixels at level 1 (the official table; else 0.3 × width)."""
    return _TRANSLATE_PX.get(width, int(0.3 * width))


def apply_op(name: str, image: np.ndarray, level: float, sign: float) -> np.ndarray:
    """Applies op `name` at magnitude `level` ∈ [0, 1]; `sign` ±1 for the signed ops.
    image: (H, W, C) float32 in [0, 1] → same shape, same range."""
    h, w, _ = image.shape
    enhance = level * 1.8 + 0.1
    shear = sign * level * 0.3
    pixels = sign * level * translate_pixels(w)
    if name == "identity":
        return image
    if name == "autocontrast":
        return autocontrast(image)
    if name == "equalize":
        return equalize(image)
    if name == "rotate":
        return affine(image, rotation(sign * level * 30.0 * math.pi / 180.0, h, w))
    if name == "solarize":  # threshold = level
        return np.where(image < level, image, 1.0 - image).astype(np.float32)
    if name == "color":
        return blend(np.broadcast_to(gray(image), image.shape), image, enhance)
    if name == "posterize":
        return posterize(image, level)
    if name == "contrast":
        return blend(np.full_like(image, gray(image).mean()), image, enhance)
    if name == "brightness":
        return blend(np.zeros_like(image), image, enhance)
    if name == "sharpness":
        return sharpness(image, enhance)
    if name == "shear_x":
        return affine(image, (1.0, shear, 0.0, 0.0, 1.0, 0.0))
    if name == "shear_y":
        return affine(image, (1.0, 0.0, 0.0, shear, 1.0, 0.0))
    if name == "translate_x":
        return affine(image, (1.0, 0.0, pixels, 0.0, 1.0, 0.0))
    if name == "translate_y":
        return affine(image, (1.0, 0.0, 0.0, 0.0, 1.0, pixels))
    raise ValueError(f"unknown RandAugment op {name!r}; expected one of {OPS}")


def sample(
    rng: np.random.Generator,
    *,
    layers: int = 2,
    magnitude: float = 9.0,
    magnitude_std: float = 0.5,
    prob: float = 0.5,
) -> dict[str, np.ndarray]:
    """One image's RandAugment choices, per layer: op uniform over OPS, level ~ N(magnitude,
    magnitude_std) clipped to [0, 10] / 10, sign ±1 with prob ½, applied with probability `prob`
    (all four drawn every layer, so one layer's choice never shifts another's random numbers).
    Returns {"op": int32 (layers,), "level": float32, "sign": float32, "apply": bool}."""
    op, level, sign, apply = [], [], [], []
    for _ in range(layers):
        op.append(int(rng.integers(len(OPS))))
        lv = rng.normal(magnitude, magnitude_std) if magnitude_std > 0 else magnitude
        level.append(float(np.clip(lv, 0.0, 10.0)) / 10.0)
        sign.append(-1.0 if rng.random() < 0.5 else 1.0)
        apply.append(rng.random() < prob)
    return {
        "op": np.asarray(op, np.int32),
        "level": np.asarray(level, np.float32),
        "sign": np.asarray(sign, np.float32),
        "apply": np.asarray(apply, bool),
    }


def apply_sampled(image: np.ndarray, choices: dict[str, np.ndarray]) -> np.ndarray:
    """Applies `sample`'s choices in order. image: (H, W, C) float32 in [0, 1] → same."""
    for op, level, sign, apply in zip(choices["op"], choices["level"], choices["sign"], choices["apply"]):
        if apply:
            image = apply_op(OPS[int(op)], image, float(level), float(sign))
    return image


def rand_augment(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    layers: int = 2,
    magnitude: float = 9.0,
    magnitude_std: float = 0.5,
    prob: float = 0.5,
) -> np.ndarray:
    """image: (H, W, C) float32 in [0, 1] → same shape, same range: `sample`, then `apply_sampled`."""
    choices = sample(rng, layers=layers, magnitude=magnitude, magnitude_std=magnitude_std, prob=prob)
    return apply_sampled(image, choices)
