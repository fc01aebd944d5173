"""The photometric half of the training chain as jitted, batched JAX ops (`dataset.augment_on="device"`).

With device augmentation the host decodes, crops, warps and flips (nest_jax.data.preprocess), and
sends the crop as uint8 (or float32 [0, 1] when the source or the warp is float) together with the
random choices of the later stages, drawn from the same per-example streams as the host chain
(preprocess.device_choices). The train step then applies, per example, RandAugment (Cubuk et al.
2020, §3), the SimCLR colour distortion (Chen et al. 2020, appendix A), normalization and random
erasing (Zhong et al. 2020). Most ops are the host's own code in randaugment.py / augment.py run
with `xp=jax.numpy`; the rest compute the same function as their NumPy twin. Only the erasing
noise is drawn on the device (from the step's key), so the training distribution is the host chain's.

Every op is computed for every example and the chosen one selected (`jnp.select`): no branch
depends on data, so the step has no `conditional` and nothing waits for the host.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from nest_jax.data import augment, randaugment
from nest_jax.data.preprocess import mean_std

_OP = {name: i for i, name in enumerate(randaugment.OPS)}


@dataclasses.dataclass(frozen=True)
class DeviceAugment:
    """The static settings of the device stages, from a dataset config (`from_config`)."""

    randaugment_layers: int
    color_jitter: float
    random_erasing: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_config(cls, ds_cfg) -> DeviceAugment:
        aug = ds_cfg.augment
        mean, std = mean_std(ds_cfg)
        return cls(
            randaugment_layers=int(aug.randaugment.layers),
            color_jitter=float(aug.color_jitter),
            random_erasing=float(aug.random_erasing),
            mean=tuple(mean),
            std=tuple(std),
        )

    def __call__(self, key: jax.Array, image: jax.Array, choices: dict) -> jax.Array:
        """image: (B, H, W, C) uint8 or float [0, 1]; choices: the batch's "augment" entry, the
        stacked host draws (preprocess.device_choices: "randaugment", "jitter", "erasing",
        each present when its stage is on) → (B, H, W, C) float32, normalized."""
        x = image.astype(jnp.float32)
        if image.dtype == jnp.uint8:
            x = x / jnp.float32(255.0)
        if self.randaugment_layers > 0:
            x = jax.vmap(rand_augment)(x, choices["randaugment"])
        if self.color_jitter > 0:
            x = jax.vmap(color_jitter)(x, choices["jitter"])
        x = (x - jnp.asarray(self.mean, jnp.float32)) / jnp.asarray(self.std, jnp.float32)
        if self.random_erasing > 0:
            x = random_erasing(key, x, choices["erasing"])
        return x


# ---- RandAugment, one image (H, W, C) float32 [0, 1] ----


def _transform(op: jax.Array, level: jax.Array, sign: jax.Array, h: int, w: int) -> jax.Array:
    """The output→input affine map of a geometric op (identity for the others). → (6,)"""
    angle = sign * level * jnp.float32(30.0 * math.pi / 180.0)
    rotate = jnp.stack(randaugment.rotation(angle, h, w, xp=jnp))
    shear = sign * level * jnp.float32(0.3)
    pixels = sign * level * jnp.float32(randaugment.translate_pixels(w))
    one, zero = jnp.float32(1.0), jnp.float32(0.0)
    table = {
        "rotate": rotate,
        "shear_x": jnp.stack([one, shear, zero, zero, one, zero]),
        "shear_y": jnp.stack([one, zero, zero, shear, one, zero]),
        "translate_x": jnp.stack([one, zero, pixels, zero, one, zero]),
        "translate_y": jnp.stack([one, zero, zero, zero, one, pixels]),
    }
    identity = jnp.asarray([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], jnp.float32)
    return jnp.select([op == _OP[name] for name in table], list(table.values()), identity)


def _equalize_channel(q: jax.Array) -> jax.Array:
    """q: (N,) int32 levels 0–255 → equalized levels (PIL ImageOps.equalize)."""
    hist = jnp.zeros(256, jnp.int32).at[q].add(1)
    step = (q.shape[0] - hist[q.max()]) // 255
    lut = (jnp.cumsum(hist) + step // 2) // jnp.maximum(step, 1)
    lut = jnp.clip(jnp.concatenate([jnp.zeros(1, jnp.int32), lut[:-1]]), 0, 255)
    return jnp.where(step == 0, q, lut[q])


def equalize(image: jax.Array) -> jax.Array:
    h, w, c = image.shape
    q = jnp.round(image * 255.0).astype(jnp.int32).reshape(h * w, c)
    return jax.vmap(_equalize_channel, 1, 1)(q).reshape(h, w, c).astype(jnp.float32) / jnp.float32(255.0)


def apply_op(op: jax.Array, image: jax.Array, level: jax.Array, sign: jax.Array) -> jax.Array:
    """RandAugment op number `op` (index into randaugment.OPS) at `level` ∈ [0, 1], `sign` ±1."""
    h, w, _ = image.shape
    enhance = level * jnp.float32(1.8) + jnp.float32(0.1)
    g = randaugment.gray(image, jnp)
    # The four blends differ only in what they blend with.
    degenerate = jnp.select(
        [op == _OP["color"], op == _OP["contrast"], op == _OP["brightness"]],
        [jnp.broadcast_to(g, image.shape), jnp.broadcast_to(g.mean(), image.shape), jnp.zeros_like(image)],
        randaugment.smooth(image, jnp),
    )
    pixel_ops = {
        "autocontrast": randaugment.autocontrast(image, jnp),
        "equalize": equalize(image),
        "solarize": jnp.where(image < level, image, 1.0 - image),
        "posterize": randaugment.posterize(image, level, jnp),
    }
    blends = ("color", "contrast", "brightness", "sharpness")
    conditions = [op == _OP[name] for name in pixel_ops] + [jnp.isin(op, jnp.asarray([_OP[n] for n in blends]))]
    return jnp.select(
        conditions + [op == _OP["identity"]],
        list(pixel_ops.values()) + [randaugment.blend(degenerate, image, enhance, jnp), image],
        randaugment.affine(image, _transform(op, level, sign, h, w), jnp),
    )


def rand_augment(image: jax.Array, choices: dict) -> jax.Array:
    """randaugment.apply_sampled for one image: choices {"op", "level", "sign", "apply"}, (layers,)."""
    for i in range(choices["op"].shape[0]):
        out = apply_op(choices["op"][i], image, choices["level"][i], choices["sign"][i])
        image = jnp.where(choices["apply"][i], out, image)
    return image


# ---- colour jitter, one image (H, W, C) float32 [0, 1] ----


def color_jitter(image: jax.Array, choices: dict) -> jax.Array:
    """augment.apply_color_jitter for one image: choices {"apply", "factors" (4,), "order" (4,), "grey"}."""
    brightness, contrast, saturation, hue = (choices["factors"][i] for i in range(4))
    rgb = image.shape[-1] == 3
    x = image
    for i in range(4):
        op = choices["order"][i]
        candidates = [x * brightness, augment.adjust_contrast(x, contrast, jnp)]
        if rgb:
            candidates += [augment.adjust_saturation(x, saturation, jnp), augment.adjust_hue(x, hue, jnp)]
        x = jnp.clip(jnp.select([op == k for k in range(len(candidates))], candidates, x), 0.0, 1.0)
    x = jnp.where(choices["apply"], x, image)
    if image.shape[-1] > 1:
        x = jnp.where(choices["grey"], jnp.broadcast_to(randaugment.gray(x, jnp), x.shape), x)
    return x


# ---- random erasing, a batch of normalized images ----


def random_erasing(key: jax.Array, images: jax.Array, boxes: jax.Array) -> jax.Array:
    """images (B, H, W, C); boxes (B, 4) int32 (top, bottom, left, right) from
    augment.sample_erasing_box → the boxes filled with N(0, 1) noise drawn from `key`."""
    _, h, w, _ = images.shape
    rows = jnp.arange(h)[None, :, None]
    cols = jnp.arange(w)[None, None, :]
    top, bottom, left, right = (boxes[:, i, None, None] for i in range(4))
    inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    noise = jax.random.normal(key, images.shape, jnp.float32)
    return jnp.where(inside[..., None], noise, images)
