"""RandAugment (Cubuk et al. 2020, "RandAugment: Practical automated data augmentation with a
reduced search space", §3) in NumPy, on float32 [0, 1] images (H, W, C). The ops that take `xp`
also serve the device chain (nest_jax.data.device_augment) with `xp=jax.numpy`.

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


def gray(image: np.ndarray, xp=np) -> np.ndarray:
    """(H, W, 3) → (H, W, 1) luma; one-channel images are returned as they are."""
    if image.shape[-1] == 1:
        return image
    return (image[..., :3] @ xp.asarray(GRAY_WEIGHTS))[..., None].astype(xp.float32)


def blend(degenerate: np.ndarray, image: np.ndarray, factor: float, xp=np) -> np.ndarray:
    """factor 0 → degenerate, 1 → image, > 1 extrapolates (then clipped), as PIL.ImageEnhance."""
    return xp.clip(degenerate + xp.float32(factor) * (image - degenerate), 0.0, 1.0)


@functools.lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return x, y


def _nearest(coord: np.ndarray, xp=np) -> np.ndarray:
    """std::round (half away from zero, as TF's nearest sampling) for the coordinates that can
    land inside the image; every negative result is −1 (outside) either way."""
    return xp.where(coord > -0.5, xp.floor(coord + 0.5), -1.0).astype(np.int64 if xp is np else xp.int32)


def affine(image: np.ndarray, transform, xp=np) -> np.ndarray:
    """Output pixel (x, y) reads input (a0·x + a1·y + a2, b0·x + b1·y + b2), nearest neighbour,
    grey 0.5 outside the image (the convention of tf ImageProjectiveTransform; transform holds
    the 6 numbers a0 a1 a2 b0 b1 b2: floats, or with `xp=jax.numpy` a (6,) float32 array)."""
    h, w, c = image.shape
    if xp is np:
        (x, y), transform = _grid(h, w), [float(t) for t in transform]
    else:
        y, x = xp.meshgrid(xp.arange(h, dtype=xp.float32), xp.arange(w, dtype=xp.float32), indexing="ij")
    a0, a1, a2, b0, b1, b2 = (transform[i] for i in range(6))
    src_x, src_y = _nearest(a0 * x + a1 * y + a2, xp), _nearest(b0 * x + b1 * y + b2, xp)
    inside = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
    flat = xp.where(inside, src_y * w + src_x, 0).reshape(-1)
    out = image.reshape(h * w, c)[flat].reshape(h, w, c)
    return xp.where(inside[..., None], out, xp.float32(0.5)).astype(xp.float32, copy=False)


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


def autocontrast(image: np.ndarray, xp=np) -> np.ndarray:
    """Per channel, stretch [min, max] to [0, 1]; flat channels stay as they are."""
    if xp is np:
        planes = _channels(image)
        lo, hi = planes.min(1), planes.max(1)
    else:
        lo, hi = image.min((0, 1)), image.max((0, 1))
    scaled = (image - lo) / xp.maximum(hi - lo, 1e-6)
    return xp.where(hi > lo, scaled, image).astype(xp.float32)


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


def smooth(image: np.ndarray, xp=np) -> np.ndarray:
    """PIL's SMOOTH kernel [[1,1,1],[1,5,1],[1,1,1]]/13 inside, the one-pixel border as it is."""
    h, w, _ = image.shape
    if h <= 2 or w <= 2:
        return image
    acc = 4.0 * image[1:-1, 1:-1]
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            acc = acc + image[dy : dy + h - 2, dx : dx + w - 2]
    if xp is not np:
        return image.at[1:-1, 1:-1].set(acc / 13.0)
    out = image.copy()
    out[1:-1, 1:-1] = acc / 13.0
    return out


def sharpness(image: np.ndarray, factor: float) -> np.ndarray:
    """PIL ImageEnhance.Sharpness: blend with `smooth`."""
    return blend(smooth(image), image, factor)


def posterize(image: np.ndarray, level: float, xp=np) -> np.ndarray:
    """Drop ⌊4·level⌋ low bits of the 8-bit value."""
    quantum = 2.0 ** (math.floor(level * 4) if xp is np else xp.floor(level * 4))
    return (xp.floor(xp.round(image * 255.0) / quantum) * quantum / 255.0).astype(xp.float32)


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
    ops = {
        "identity": lambda: image,
        "autocontrast": lambda: autocontrast(image),
        "equalize": lambda: equalize(image),
        "rotate": lambda: affine(image, rotation(sign * level * 30.0 * math.pi / 180.0, h, w)),
        "solarize": lambda: np.where(image < level, image, 1.0 - image).astype(np.float32),  # threshold = level
        "color": lambda: blend(np.broadcast_to(gray(image), image.shape), image, enhance),
        "posterize": lambda: posterize(image, level),
        "contrast": lambda: blend(np.full_like(image, gray(image).mean()), image, enhance),
        "brightness": lambda: blend(np.zeros_like(image), image, enhance),
        "sharpness": lambda: sharpness(image, enhance),
        "shear_x": lambda: affine(image, (1.0, shear, 0.0, 0.0, 1.0, 0.0)),
        "shear_y": lambda: affine(image, (1.0, 0.0, 0.0, shear, 1.0, 0.0)),
        "translate_x": lambda: affine(image, (1.0, 0.0, pixels, 0.0, 1.0, 0.0)),
        "translate_y": lambda: affine(image, (1.0, 0.0, 0.0, 0.0, 1.0, pixels)),
    }
    if name not in ops:
        raise ValueError(f"unknown RandAugment op {name!r}; expected one of {OPS}")
    return ops[name]()


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
