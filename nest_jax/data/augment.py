"""Per-example training augmentations on float32 [0, 1] images (H, W, C), all stateless.

Each function takes an explicit key (shape (2,)): the same key gives the same output.
"""
from __future__ import annotations

import math

from nest_jax.data._tf import tf


def _split(key, n: int):
    return tf.unstack(tf.random.experimental.stateless_split(key, n))


def _uniform(key, minval=0.0, maxval=1.0, shape=()):
    return tf.random.stateless_uniform(shape, seed=key, minval=minval, maxval=maxval)


def inception_crop(image: tf.Tensor, key, *, size: int, min_area: float = 0.08,
                   method: str = "bilinear") -> tf.Tensor:
    """Inception-style random-resized crop: area ∈ [min_area, 1] of the image, aspect ratio
    ∈ [3/4, 4/3], resized to size × size. After 10 failed draws the whole image is used
    (tf.image's fallback), as in the official NesT and big_vision pipelines.
    image: (H, W, C) → (size, size, C)."""
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.zeros([1, 0, 4], tf.float32), seed=key,
        min_object_covered=0.0, aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(min_area, 1.0), max_attempts=10, use_image_if_no_bounding_boxes=True)
    crop = tf.slice(image, begin, crop_size)
    out = tf.image.resize(crop, (size, size), method=method, antialias=True)
    return tf.clip_by_value(out, 0.0, 1.0)


def pad_and_crop(image: tf.Tensor, key, *, padding: int = 2) -> tf.Tensor:
    """CIFAR crop (REFERENCE §8): zero-pad `padding` pixels per side (32 → 36), random crop back."""
    h, w, c = image.shape
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
    return tf.image.stateless_random_crop(padded, (h, w, c), seed=key)


def _grayscale(image: tf.Tensor) -> tf.Tensor:
    if image.shape[-1] == 1:
        return image
    return tf.tile(tf.image.rgb_to_grayscale(image), [1, 1, image.shape[-1]])


def color_jitter(image: tf.Tensor, key, *, strength: float) -> tf.Tensor:
    """SimCLR colour distortion of strength s: with prob 0.8 brightness (×U[1-0.8s, 1+0.8s]),
    contrast (0.8s), saturation (0.8s) and hue (0.2s) in random order; then grey with prob 0.2.
    Saturation and hue are skipped for one-channel images."""
    k_apply, k_order, k_b, k_c, k_s, k_h, k_gray = _split(key, 7)
    s = float(strength)
    rgb = image.shape[-1] == 3

    def brightness(x):
        return x * _uniform(k_b, max(0.0, 1 - 0.8 * s), 1 + 0.8 * s)

    def contrast(x):
        return tf.image.adjust_contrast(x, _uniform(k_c, max(0.0, 1 - 0.8 * s), 1 + 0.8 * s))

    def saturation(x):
        if not rgb:
            return x
        return tf.image.adjust_saturation(x, _uniform(k_s, max(0.0, 1 - 0.8 * s), 1 + 0.8 * s))

    def hue(x):
        if not rgb:
            return x
        return tf.image.adjust_hue(x, _uniform(k_h, -0.2 * s, 0.2 * s))

    ops = [brightness, contrast, saturation, hue]
    order = tf.argsort(_uniform(k_order, shape=(4,)))
    jittered = image
    for i in range(4):
        branches = [lambda f=f: tf.clip_by_value(f(jittered), 0.0, 1.0) for f in ops]
        jittered = tf.switch_case(order[i], branches)
    image = tf.where(_uniform(k_apply) < 0.8, jittered, image)
    return tf.where(_uniform(k_gray) < 0.2, _grayscale(image), image)


def random_erasing(image: tf.Tensor, key, *, prob: float, min_area: float = 0.02,
                   max_area: float = 1 / 3, min_aspect: float = 0.3) -> tf.Tensor:
    """Random erasing on a *normalized* image (official NesT's simplified form, no redraws): with
    probability `prob` a box of area U[min_area, max_area] of the image and log-uniform aspect
    ratio in [min_aspect, 1/min_aspect], centred uniformly (the part outside the image is
    dropped), is replaced by per-pixel N(0, 1) noise. image: (H, W, C) → same."""
    k_area, k_aspect, k_y, k_x, k_noise, k_apply = _split(key, 6)
    h, w, _ = image.shape
    area = _uniform(k_area, min_area, max_area)
    aspect = tf.exp(_uniform(k_aspect, math.log(min_aspect), -math.log(min_aspect)))
    half_h = h * tf.sqrt(area * aspect) / 2
    half_w = w * tf.sqrt(area / aspect) / 2
    cy, cx = _uniform(k_y) * h, _uniform(k_x) * w
    rows = tf.range(h, dtype=tf.float32)
    cols = tf.range(w, dtype=tf.float32)
    in_rows = (rows > cy - half_h) & (rows < cy + half_h)
    in_cols = (cols > cx - half_w) & (cols < cx + half_w)
    box = (in_rows[:, None] & in_cols[None, :])[:, :, None]
    noise = tf.random.stateless_normal(image.shape, seed=k_noise, dtype=image.dtype)
    erased = tf.where(box, noise, image)
    return tf.where(_uniform(k_apply) < prob, erased, image)
