"""Per-example training augmentations in NumPy/PIL. Each takes an explicit
`np.random.Generator`: the same generator state gives the same output.

Photometric ops work on float32 [0, 1] images (H, W, C); the crops take uint8 or float images and
keep their dtype (resampling on uint8 rounds to 8 bits, as decoding already did).
"""

from __future__ import annotations

import math

import numpy as np

from nest_jax.data.randaugment import _channels, blend, gray

_PIL_METHODS = {"bilinear": "BILINEAR", "bicubic": "BICUBIC", "nearest": "NEAREST"}


def resize(
    image: np.ndarray, size: tuple[int, int], method: str = "bilinear", box: tuple[int, int, int, int] | None = None
) -> np.ndarray:
    """Resize (the `box` = (left, top, right, bottom) region of) `image` to `size` = (h, w) with
    PIL's convolution resampling, which widens the kernel when downscaling (antialiased, as
    tf.image.resize(antialias=True)). uint8 (H, W, 1|3|4) images are resized as 8-bit images,
    anything else per channel in float32 (then clipped to [0, 1]: bicubic overshoots)."""
    from PIL import Image

    if method not in _PIL_METHODS:
        raise ValueError(f"resize_method={method!r}; expected one of {sorted(_PIL_METHODS)}")
    resample = getattr(Image.Resampling, _PIL_METHODS[method])
    h, w = int(size[0]), int(size[1])
    if box is None and image.shape[:2] == (h, w):
        return image
    if image.dtype == np.uint8 and image.shape[-1] in (1, 3, 4):
        pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        out = np.asarray(pil.resize((w, h), resample, box=box))
        return out.reshape(h, w, image.shape[-1])
    planes = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image[..., c], np.float32), "F").resize((w, h), resample, box=box)
        )
        for c in range(image.shape[-1])
    ]
    return np.clip(np.stack(planes, -1), 0.0, 1.0).astype(np.float32)


def sample_crop_box(
    rng: np.random.Generator,
    height: int,
    width: int,
    *,
    min_area: float,
    aspect_range: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> tuple[int, int, int, int]:
    """(top, left, crop_h, crop_w) of an Inception-style crop (Szegedy et al. 2015, §6): area
    fraction ~ U[min_area, 1], aspect ratio w/h ~ U[aspect_range]; a draw that does not fit is
    redrawn, and after `attempts` failures the whole image is used (tf.image's fallback)."""
    area = height * width
    for _ in range(attempts):
        target = rng.uniform(min_area, 1.0) * area
        aspect = rng.uniform(*aspect_range)
        crop_w = int(round(math.sqrt(target * aspect)))
        crop_h = int(round(math.sqrt(target / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            return top, left, crop_h, crop_w
    return 0, 0, height, width


def inception_crop(
    image: np.ndarray, rng: np.random.Generator, *, size: int, min_area: float = 0.08, method: str = "bilinear"
) -> np.ndarray:
    """Random-resized crop (area ∈ [min_area, 1], aspect ∈ [3/4, 4/3]) resized to size × size.
    image: (H, W, C) → (size, size, C), same dtype."""
    top, left, ch, cw = sample_crop_box(rng, image.shape[0], image.shape[1], min_area=min_area)
    return resize(image, (size, size), method, box=(left, top, left + cw, top + ch))


def pad_and_crop(image: np.ndarray, rng: np.random.Generator, *, padding: int = 2) -> np.ndarray:
    """CIFAR crop: zero-pad `padding` pixels per side (32 → 36), random crop back to (H, W)."""
    h, w, _ = image.shape
    padded = np.pad(image, [(padding, padding), (padding, padding), (0, 0)])
    dy, dx = rng.integers(0, 2 * padding + 1, size=2)
    return padded[dy : dy + h, dx : dx + w]


def affine(
    image: np.ndarray, *, angle: float = 0.0, scale: float = 1.0, shift: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    """Rotate by `angle` degrees (counter-clockwise as displayed, row 0 at the top) and scale by
    `scale` about the image centre, then shift by `shift` = (rows, columns) pixels; bilinear, with
    zeros outside the image. Each output pixel centre p' is read at p = R(−angle)(p' − c − shift)
    / scale + c, c = ((H − 1) / 2, (W − 1) / 2), as an affine warp of the continuous bilinear image
    (Simard et al. 2003, §2, distort training digits this way). image: (H, W, C) float → float32."""
    h, w, _ = image.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    rad = math.radians(angle)
    cos, sin = math.cos(rad) / scale, math.sin(rad) / scale
    rows, cols = np.meshgrid(np.arange(h) - cy - shift[0], np.arange(w) - cx - shift[1], indexing="ij")
    src_r = cos * rows + sin * cols + cy + 1.0  # +1: one pixel of zero padding on every side
    src_c = -sin * rows + cos * cols + cx + 1.0
    padded = np.pad(np.asarray(image, np.float32), [(1, 1), (1, 1), (0, 0)])
    r0 = np.clip(np.floor(src_r), 0, h).astype(np.int64)  # beyond the padding reads zeros
    c0 = np.clip(np.floor(src_c), 0, w).astype(np.int64)
    fr = np.clip(src_r - r0, 0.0, 1.0)[..., None].astype(np.float32)
    fc = np.clip(src_c - c0, 0.0, 1.0)[..., None].astype(np.float32)
    top = padded[r0, c0] * (1 - fc) + padded[r0, c0 + 1] * fc
    bottom = padded[r0 + 1, c0] * (1 - fc) + padded[r0 + 1, c0 + 1] * fc
    return (top * (1 - fr) + bottom * fr).astype(np.float32)


def random_affine(
    image: np.ndarray, rng: np.random.Generator, *, degrees: float = 0.0, translate: float = 0.0, scale: float = 1.0
) -> np.ndarray:
    """`affine` with angle ~ U[−degrees, degrees], scale log-uniform in [1/scale, scale] and a
    shift of U[−translate, translate] × (H, W) pixels per axis (sub-pixel shifts included).
    image: (H, W, C) float → float32."""
    h, w, _ = image.shape
    angle = rng.uniform(-degrees, degrees)
    zoom = math.exp(rng.uniform(-math.log(scale), math.log(scale)))
    dy, dx = rng.uniform(-translate, translate, size=2)
    return affine(image, angle=angle, scale=zoom, shift=(dy * h, dx * w))


def flip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Left-right flip with probability ½."""
    return image[:, ::-1] if rng.random() < 0.5 else image


# ---- colour (float32 [0, 1], RGB or one channel) ----


def _rgb(image):
    return image[..., 0], image[..., 1], image[..., 2]


def rgb_to_hsv(rgb, xp=np):
    """(…, 3) RGB in [0, 1] → HSV, hue in [0, 1) (the hexcone model of tf.image / colorsys).
    `xp`: the array module (numpy, or jax.numpy for the device chain)."""
    r, g, b = _rgb(rgb)
    v = xp.maximum(xp.maximum(r, g), b)  # elementwise over planes: far faster than max(-1)
    delta = v - xp.minimum(xp.minimum(r, g), b)
    s = xp.where(v > 0, delta / xp.where(v > 0, v, 1), 0.0)
    d = xp.where(delta > 0, delta, 1)
    h = xp.where(v == r, (g - b) / d, xp.where(v == g, 2 + (b - r) / d, 4 + (r - g) / d))
    h = xp.where(delta > 0, (h / 6.0) % 1.0, 0.0)
    return xp.stack([h, s, v], -1)


def hsv_to_rgb(hsv, xp=np):
    h, s, v = _rgb(hsv)
    # Each channel is v − v·s·clip(min(k, 4 − k), 0, 1) with k = (n + 6h) mod 6, n = 5, 3, 1.
    vs, h6 = v * s, 6 * h
    out = []
    for n in (5, 3, 1):
        k = (n + h6) % 6
        out.append(v - vs * xp.clip(xp.minimum(k, 4 - k), 0, 1))
    return xp.stack(out, -1)


def adjust_contrast(image: np.ndarray, factor: float, xp=np) -> np.ndarray:
    """(x − channel mean) · factor + channel mean (tf.image.adjust_contrast), unclipped."""
    mean = _channels(image).mean(1) if xp is np else image.mean((0, 1))
    return ((image - mean) * xp.float32(factor) + mean).astype(xp.float32)


def adjust_saturation(image, factor, xp=np):
    """HSV saturation × factor, clipped to [0, 1] (tf.image.adjust_saturation), in closed form:
    hue and value (the channel max) are kept, so each channel moves along v − x by the ratio
    of new to old saturation, min(factor, v / (v − min))."""
    r, g, b = _rgb(image)
    v = xp.maximum(xp.maximum(r, g), b)[..., None]
    delta = v - xp.minimum(xp.minimum(r, g), b)[..., None]
    ratio = xp.minimum(xp.float32(factor), v / xp.where(delta > 0, delta, 1))
    return xp.where(delta > 0, v - (v - image) * ratio, image).astype(xp.float32)


def adjust_hue(image: np.ndarray, delta: float, xp=np) -> np.ndarray:
    h, s, v = _rgb(rgb_to_hsv(image, xp))
    return hsv_to_rgb(xp.stack([(h + delta) % 1.0, s, v], -1), xp).astype(xp.float32)


def sample_color_jitter(rng: np.random.Generator, *, strength: float) -> dict[str, np.ndarray]:
    """One image's colour-jitter choices (see `color_jitter`): {"apply": bool, "factors": float32
    (4,) = brightness, contrast, saturation factors and hue shift, "order": int32 (4,) the order of
    those four ops, "grey": bool}. All random numbers are drawn whether used or not."""
    s = float(strength)
    lo, hi = max(0.0, 1 - 0.8 * s), 1 + 0.8 * s
    apply, b, c, sat, hue, grey = rng.uniform(size=6)
    order = rng.permutation(4)
    factors = (lo + (hi - lo) * b, lo + (hi - lo) * c, lo + (hi - lo) * sat, -0.2 * s + 0.4 * s * hue)
    return {
        "apply": np.asarray(apply < 0.8),
        "factors": np.asarray(factors, np.float32),
        "order": order.astype(np.int32),
        "grey": np.asarray(grey < 0.2),
    }


def apply_color_jitter(image: np.ndarray, choices: dict[str, np.ndarray]) -> np.ndarray:
    """Applies `sample_color_jitter`'s choices. image: (H, W, C) float32 [0, 1] → same."""
    b, c, sat, hue = (float(f) for f in choices["factors"])
    rgb = image.shape[-1] == 3
    ops = [
        lambda x: x * np.float32(b),
        lambda x: adjust_contrast(x, c),
        lambda x: adjust_saturation(x, sat) if rgb else x,
        lambda x: adjust_hue(x, hue) if rgb else x,
    ]
    if choices["apply"]:
        for i in choices["order"]:
            image = np.clip(ops[int(i)](image), 0.0, 1.0).astype(np.float32)
    if choices["grey"] and image.shape[-1] > 1:
        image = np.broadcast_to(gray(image), image.shape).astype(np.float32)
    return image


def color_jitter(image: np.ndarray, rng: np.random.Generator, *, strength: float) -> np.ndarray:
    """SimCLR colour distortion (Chen et al. 2020, appendix A) of strength s: with prob 0.8
    brightness (×U[1-0.8s, 1+0.8s]), contrast (0.8s), saturation (0.8s) and hue (0.2s) in random
    order, each result clipped to [0, 1]; then grey with prob 0.2. Saturation and hue are
    skipped for one-channel images."""
    return apply_color_jitter(image, sample_color_jitter(rng, strength=strength))


def sample_erasing_box(
    rng: np.random.Generator,
    height: int,
    width: int,
    *,
    prob: float,
    min_area: float = 0.02,
    max_area: float = 1 / 3,
    min_aspect: float = 0.3,
) -> np.ndarray:
    """The box of `random_erasing` as int32 (top, bottom, left, right), rows [top, bottom) ×
    columns [left, right); (0, 0, 0, 0) when the image is not erased (probability 1 − `prob`)."""
    if rng.random() >= prob:
        return np.zeros(4, np.int32)
    area = rng.uniform(min_area, max_area)
    aspect = math.exp(rng.uniform(math.log(min_aspect), -math.log(min_aspect)))
    half_h, half_w = height * math.sqrt(area * aspect) / 2, width * math.sqrt(area / aspect) / 2
    cy, cx = rng.uniform() * height, rng.uniform() * width
    # Rows r with cy − half_h < r < cy + half_h (strict), clipped to the image.
    top, bottom = max(0, math.floor(cy - half_h) + 1), min(height, math.ceil(cy + half_h))
    left, right = max(0, math.floor(cx - half_w) + 1), min(width, math.ceil(cx + half_w))
    return np.asarray([top, max(top, bottom), left, max(left, right)], np.int32)


def random_erasing(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    prob: float,
    min_area: float = 0.02,
    max_area: float = 1 / 3,
    min_aspect: float = 0.3,
) -> np.ndarray:
    """Random erasing (Zhong et al. 2020) on a *normalized* image, official NesT's simplified form
    (no redraws): with probability `prob` a box of area U[min_area, max_area] of the image and
    log-uniform aspect ratio in [min_aspect, 1/min_aspect], centred uniformly (the part outside
    the image is dropped), is replaced by per-pixel N(0, 1) noise. image: (H, W, C) → same."""
    h, w, c = image.shape
    top, bottom, left, right = (
        int(v)
        for v in sample_erasing_box(rng, h, w, prob=prob, min_area=min_area, max_area=max_area, min_aspect=min_aspect)
    )
    if bottom == top or right == left:
        return image
    out = image.copy()
    out[top:bottom, left:right] = rng.standard_normal((bottom - top, right - left, c)).astype(np.float32)
    return out


__all__ = [
    "resize",
    "sample_crop_box",
    "inception_crop",
    "pad_and_crop",
    "affine",
    "random_affine",
    "flip",
    "color_jitter",
    "sample_color_jitter",
    "apply_color_jitter",
    "random_erasing",
    "sample_erasing_box",
    "adjust_contrast",
    "adjust_saturation",
    "adjust_hue",
    "blend",
]
