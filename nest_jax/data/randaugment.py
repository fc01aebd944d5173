"""RandAugment (Cubuk et al. 2020) in TF image ops, on float32 [0, 1] images (H, W, C).

Follows the official NesT / TF-TPU version: `layers` ops drawn uniformly from the list below,
each applied with probability `prob`, magnitude level ~ N(magnitude, magnitude_std) clipped to
[0, 10] and redrawn per layer. Level → argument maps are the official ones, except posterize,
which keeps 8 − ⌊4·level⌋ bits (the TF original keeps ⌊4·level⌋, i.e. *no* bits at level 0).
Empty pixels after a geometric op are filled with grey 0.5 (official: 128).
"""
from __future__ import annotations

import functools
import math

from nest_jax.data._tf import tf

OPS = ("identity", "autocontrast", "equalize", "rotate", "solarize", "color", "posterize",
       "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y")

_TRANSLATE_PX = {224: 100, 128: 40, 96: 30, 32: 10}  # official table; else 0.3 × size


def _blend(degenerate, image, factor):
    """factor 0 → degenerate, 1 → image, > 1 extrapolates (then clipped), as PIL.ImageEnhance."""
    return tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 1.0)


def _gray(image):
    return image if image.shape[-1] == 1 else tf.image.rgb_to_grayscale(image)


def _affine(image, transform):
    """transform: 8 floats mapping output (x, y) to input coords (tf ImageProjectiveTransform)."""
    h, w = image.shape[0], image.shape[1]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=tf.cast(tf.reshape(transform, [1, 8]), tf.float32),
        output_shape=tf.constant([h, w], tf.int32), fill_value=0.5,
        interpolation="NEAREST", fill_mode="CONSTANT")
    return out[0]


def autocontrast(image):
    lo = tf.reduce_min(image, axis=(0, 1), keepdims=True)
    hi = tf.reduce_max(image, axis=(0, 1), keepdims=True)
    scaled = (image - lo) / tf.maximum(hi - lo, 1e-6)
    return tf.where(hi > lo, scaled, image)  # flat channels stay as they are


def equalize(image):
    """PIL ImageOps.equalize per channel, on the image quantized to 256 levels."""
    q = tf.cast(tf.round(image * 255.0), tf.int32)
    channels = []
    for c in range(image.shape[-1]):
        ch = q[..., c]
        hist = tf.math.bincount(tf.reshape(ch, [-1]), minlength=256, maxlength=256)
        last = tf.gather(hist, tf.reduce_max(ch))  # count of the highest occupied level
        step = (tf.reduce_sum(hist) - last) // 255
        lut = (tf.cumsum(hist) + step // 2) // tf.maximum(step, 1)
        lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
        channels.append(tf.where(step > 0, tf.gather(lut, ch), ch))
    return tf.cast(tf.stack(channels, -1), tf.float32) / 255.0


def sharpness(image, factor):
    k = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    c = image.shape[-1]
    kernel = tf.tile(k[:, :, None, None], [1, 1, c, 1])
    smooth = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "VALID")[0]
    smooth = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
    border = tf.pad(tf.zeros_like(smooth[1:-1, 1:-1]), [[1, 1], [1, 1], [0, 0]],
                    constant_values=1.0) > 0
    return _blend(tf.where(border, image, smooth), image, factor)  # borders stay unsmoothed


def apply_op(index, image, level, sign):
    """Applies OPS[index] at magnitude `level` ∈ [0, 1]; `sign` ±1 for the signed ops."""
    h, w = image.shape[0], image.shape[1]
    enhance = level * 1.8 + 0.1
    shear = sign * level * 0.3
    pixels = sign * level * _TRANSLATE_PX.get(w, int(0.3 * w))
    angle = sign * level * 30.0 * math.pi / 180.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    rot = [cos, -sin, ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / 2,
           sin, cos, ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / 2, 0.0, 0.0]
    quantum = 2.0 ** tf.floor(level * 4)  # posterize: drop ⌊4·level⌋ low bits of 8
    branches = [
        lambda: image,
        lambda: autocontrast(image),
        lambda: equalize(image),
        lambda: _affine(image, tf.stack(rot)),
        lambda: tf.where(image < level, image, 1.0 - image),  # solarize, threshold = level
        lambda: _blend(tf.broadcast_to(_gray(image), image.shape), image, enhance),  # color
        lambda: tf.floor(tf.round(image * 255.0) / quantum) * quantum / 255.0,  # posterize
        lambda: _blend(tf.fill(image.shape, tf.reduce_mean(_gray(image))), image, enhance),
        lambda: _blend(tf.zeros_like(image), image, enhance),  # brightness
        lambda: sharpness(image, enhance),
        lambda: _affine(image, tf.stack([1.0, shear, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])),
        lambda: _affine(image, tf.stack([1.0, 0.0, 0.0, shear, 1.0, 0.0, 0.0, 0.0])),
        lambda: _affine(image, tf.stack([1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0])),
        lambda: _affine(image, tf.stack([1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0])),
    ]
    return tf.ensure_shape(tf.switch_case(index, branches), image.shape)


def rand_augment(image: tf.Tensor, key, *, layers: int = 2, magnitude: float = 9.0,
                 magnitude_std: float = 0.5, prob: float = 0.5) -> tf.Tensor:
    """image: (H, W, C) float32 in [0, 1] → same shape, same range."""
    layer = _layer_fn(float(magnitude), float(magnitude_std), float(prob))
    for layer_key in tf.unstack(tf.random.experimental.stateless_split(key, layers)):
        image = layer(image, layer_key)
    return image


@functools.lru_cache(maxsize=None)
def _layer_fn(magnitude: float, magnitude_std: float, prob: float):
    # One tf.function per setting: its graph (14 branches) is traced once per image shape and
    # called by every layer, instead of being rebuilt per layer (tracing dominates start-up).
    @tf.function(autograph=False)
    def layer(image, key):
        k_op, k_level, k_sign, k_apply = tf.unstack(tf.random.experimental.stateless_split(key, 4))
        index = tf.random.stateless_uniform((), k_op, 0, len(OPS), dtype=tf.int32)
        level = tf.constant(magnitude, tf.float32)
        if magnitude_std > 0:
            level = tf.random.stateless_normal((), k_level, magnitude, magnitude_std)
        level = tf.clip_by_value(level, 0.0, 10.0) / 10.0
        sign = tf.where(tf.random.stateless_uniform((), k_sign) < 0.5, -1.0, 1.0)
        augmented = apply_op(index, image, level, sign)
        return tf.where(tf.random.stateless_uniform((), k_apply) < prob, augmented, image)

    return layer
