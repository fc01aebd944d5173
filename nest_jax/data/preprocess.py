"""Per-example preprocessing: pixels → float, channels, eval resize/crop, normalize, train chain.

Images inside the pipeline are float32 in [0, 1], (H, W, C), until `normalize`. Every random
choice takes an explicit stateless key (a (2,) int tensor), so an example's augmentation is a pure
function of (seed, epoch, position) — see train_stream.py.
"""
from __future__ import annotations

from typing import Callable

from nest_jax.data import augment, randaugment
from nest_jax.data._tf import tf

# (mean, std) per channel in [0, 1] units.
NORMALIZATION = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # timm IMAGENET_DEFAULT_*
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # → [-1, 1]
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),  # official NesT
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),  # official NesT
    # sklearn digits: mean/std of v/16 over all 1,797 original 8×8 images (grey, so all channels).
    "digits": ((0.3053, 0.3053, 0.3053), (0.3760, 0.3760, 0.3760)),
}

Key = tf.Tensor  # stateless seed, shape (2,)


def mean_std(ds_cfg) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) for `ds_cfg.normalize`; "cifar" picks CIFAR-100 figures for cifar100."""
    kind = ds_cfg.normalize
    if kind == "cifar":
        kind = "cifar100" if "cifar100" in ds_cfg.name else "cifar10"
    if kind not in NORMALIZATION:
        raise ValueError(f"normalize={ds_cfg.normalize!r}; expected one of "
                         f"{sorted(set(NORMALIZATION) | {'cifar'})}")
    mean, std = NORMALIZATION[kind]
    c = ds_cfg.num_channels
    return mean[:c], std[:c]  # grey images: the first (equal) channel statistics


def normalize(image: tf.Tensor, ds_cfg) -> tf.Tensor:
    mean, std = mean_std(ds_cfg)
    return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def to_float(image: tf.Tensor, num_channels: int) -> tf.Tensor:
    """uint8 (or float in [0, 1]) (H, W, c) → float32 [0, 1] with `num_channels` channels."""
    if image.dtype == tf.uint8:
        image = tf.cast(image, tf.float32) / 255.0
    image = tf.cast(image, tf.float32)
    c = image.shape[-1]
    if c == num_channels:
        return image
    if c == 1:
        return tf.tile(image, [1, 1, num_channels])  # grey replicated, e.g. digits as RGB
    if num_channels == 1:
        return tf.image.rgb_to_grayscale(image[..., :3])
    return image[..., :num_channels]  # e.g. RGBA → RGB


def resize(image: tf.Tensor, size, method: str) -> tf.Tensor:
    # antialias: downscaling (e.g. ImageNet eval 500 px → 256) should not alias; upscaling is
    # unaffected. Clip because bicubic overshoots [0, 1].
    out = tf.image.resize(image, size, method=method, antialias=True)
    return tf.clip_by_value(out, 0.0, 1.0)


def eval_image(image: tf.Tensor, ds_cfg) -> tf.Tensor:
    """Eval view: "resize_crop" (shorter side → size / crop_fraction, centre crop), "resize"
    (direct to size × size) or "none" (already size; centre crop/zero pad guards odd inputs)."""
    size = ds_cfg.image_size
    method = ds_cfg.get("resize_method", "bilinear")
    image = to_float(image, ds_cfg.num_channels)
    mode = ds_cfg.get("eval_resize", "resize_crop")
    if mode == "resize_crop":
        short = round(size / ds_cfg.get("crop_fraction", 0.875))  # 224 → 256 as in both recipes
        h, w = tf.shape(image)[0], tf.shape(image)[1]
        scale = tf.cast(short, tf.float32) / tf.cast(tf.minimum(h, w), tf.float32)
        new_hw = tf.cast(tf.round(tf.cast(tf.stack([h, w]), tf.float32) * scale), tf.int32)
        image = resize(image, tf.maximum(new_hw, short), method)
        image = tf.image.resize_with_crop_or_pad(image, size, size)
    elif mode == "resize":
        image = resize(image, (size, size), method)
    elif mode == "none":
        image = tf.image.resize_with_crop_or_pad(image, size, size)
    else:
        raise ValueError(f"eval_resize={mode!r}; expected resize_crop, resize or none")
    image = tf.ensure_shape(image, (size, size, ds_cfg.num_channels))
    return normalize(image, ds_cfg)


def train_fn(ds_cfg) -> Callable[[tf.Tensor, Key], tf.Tensor]:
    """The training chain (REFERENCE §8): crop → flip → RandAugment → colour jitter → normalize →
    random erasing. Returns f(image, key) -> (size, size, C) float32, normalized."""
    size = ds_cfg.image_size
    aug = ds_cfg.augment
    method = ds_cfg.get("resize_method", "bilinear")
    ra = aug.get("randaugment", None)
    ra_layers = int(ra.layers) if ra is not None else 0

    def f(image: tf.Tensor, key: Key) -> tf.Tensor:
        keys = tf.random.experimental.stateless_split(key, 6)
        image = to_float(image, ds_cfg.num_channels)
        if aug.get("inception_crop", False):
            image = augment.inception_crop(image, keys[0], size=size,
                                           min_area=aug.get("min_area", 0.08), method=method)
        else:
            if aug.get("cifar_crop", False):
                image = augment.pad_and_crop(resize_if_needed(image, size, method), keys[0],
                                             padding=aug.get("crop_padding", 2))
            image = resize_if_needed(image, size, method)
        if aug.get("flip", False):
            image = tf.image.stateless_random_flip_left_right(image, keys[1])
        if ra_layers > 0:
            image = randaugment.rand_augment(
                image, keys[2], layers=ra_layers, magnitude=ra.get("magnitude", 9.0),
                magnitude_std=ra.get("magnitude_std", 0.5), prob=ra.get("prob", 0.5))
        if aug.get("color_jitter", 0.0) > 0:
            image = augment.color_jitter(image, keys[3], strength=aug.color_jitter)
        image = normalize(image, ds_cfg)
        if aug.get("random_erasing", 0.0) > 0:
            image = augment.random_erasing(image, keys[4], prob=aug.random_erasing)
        return tf.ensure_shape(image, (size, size, ds_cfg.num_channels))

    return f


def resize_if_needed(image: tf.Tensor, size: int, method: str) -> tf.Tensor:
    """Direct resize to size × size unless already there (CIFAR at 32 stays untouched)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return resize(image, (size, size), method)
