"""Per-example preprocessing in NumPy/PIL: pixels → float, channels, eval resize/crop, normalize,
and the training chain.

Decoded images arrive as uint8 (H, W, c) (files, tfds) or float32 [0, 1] (digits). Crops and
resizes keep the dtype; everything after them works on float32 [0, 1] (H, W, C) until
`normalize`. Every random choice of the training chain comes from a `np.random.Generator` seeded
by (seed, epoch, position, stage), so an example's augmentation is a pure function of those —
see train_stream.py.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from nest_jax.data import augment, randaugment

# (mean, std) per channel in [0, 1] units.
NORMALIZATION = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # timm IMAGENET_DEFAULT_*
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # → [-1, 1]
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),  # official NesT
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),  # official NesT
    # sklearn digits: mean/std of v/16 over all 1,797 original 8×8 images (grey, so all channels).
    "digits": ((0.3053, 0.3053, 0.3053), (0.3760, 0.3760, 0.3760)),
}

# Stages of the training chain, each with its own random stream: switching one augmentation on
# or off never changes the random numbers another one draws.
CROP, FLIP, RANDAUGMENT, JITTER, ERASING, AFFINE = range(6)


def mean_std(ds_cfg) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) for `ds_cfg.normalize`; "cifar" picks CIFAR-100 figures for cifar100."""
    kind = ds_cfg.normalize
    if kind == "cifar":
        kind = "cifar100" if "cifar100" in ds_cfg.name else "cifar10"
    if kind not in NORMALIZATION:
        raise ValueError(f"normalize={ds_cfg.normalize!r}; expected one of {sorted(set(NORMALIZATION) | {'cifar'})}")
    mean, std = NORMALIZATION[kind]
    c = ds_cfg.num_channels
    return mean[:c], std[:c]  # grey images: the first (equal) channel statistics


def normalize(image: np.ndarray, ds_cfg) -> np.ndarray:
    mean, std = mean_std(ds_cfg)
    return ((image - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).astype(np.float32, copy=False)


def to_float(image: np.ndarray, num_channels: int) -> np.ndarray:
    """uint8 (or float in [0, 1]) (H, W, c) → float32 [0, 1] with `num_channels` channels."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / np.float32(255.0)
    image = image.astype(np.float32, copy=False)
    c = image.shape[-1]
    if c == num_channels:
        return image
    if c == 1:
        return np.repeat(image, num_channels, axis=-1)  # grey replicated, e.g. digits as RGB
    if num_channels == 1:
        return randaugment.gray(image[..., :3])
    return image[..., :num_channels]  # e.g. RGBA → RGB


def crop_or_pad(image: np.ndarray, size: int) -> np.ndarray:
    """Centre crop and/or zero pad to size × size (offsets ⌊(H − size)/2⌋, as
    tf.image.resize_with_crop_or_pad)."""
    h, w = image.shape[:2]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    image = image[top : top + size, left : left + size]
    h, w = image.shape[:2]
    pad_t, pad_l = (size - h) // 2, (size - w) // 2
    if h == size and w == size:
        return image
    return np.pad(image, [(pad_t, size - h - pad_t), (pad_l, size - w - pad_l), (0, 0)])


def eval_image(image: np.ndarray, ds_cfg) -> np.ndarray:
    """Eval view: "resize_crop" (shorter side → size / crop_fraction, centre crop), "resize"
    (direct to size × size) or "none" (already size; centre crop/zero pad guards odd inputs).
    image: (H, W, c) uint8 or float → (size, size, C) float32, normalized."""
    size = int(ds_cfg.image_size)
    method = ds_cfg.resize_method
    mode = ds_cfg.eval_resize
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if mode == "resize_crop":
        short = round(size / ds_cfg.crop_fraction)  # 224 → 256 as in both recipes
        h, w = image.shape[:2]
        scale = short / min(h, w)
        new_hw = (max(round(h * scale), short), max(round(w * scale), short))
        image = crop_or_pad(augment.resize(image, new_hw, method), size)
    elif mode == "resize":
        image = augment.resize(image, (size, size), method)
    elif mode == "none":
        image = crop_or_pad(image, size)
    else:
        raise ValueError(f"eval_resize={mode!r}; expected resize_crop, resize or none")
    return normalize(to_float(image, ds_cfg.num_channels), ds_cfg)


def example_rng(seed: int, epoch: int, position: int, stage: int) -> np.random.Generator:
    """The random stream of one augmentation stage of one example (PCG64 seeded by the tuple)."""
    return np.random.default_rng([seed, epoch, position, stage])


def device_choices(ds_cfg, erasing: bool = True) -> Callable[[Callable[[int], np.random.Generator]], dict]:
    """The sampler of one image's random choices for the stages `augment_on="device"` runs in the
    train step (nest_jax.data.device_augment): f(rng) with `rng(stage)` the stage's generator,
    → {"randaugment", "jitter", "erasing"}, each present when its stage is on (erasing=False: never
    "erasing"). The host chain applies the same draws itself. The config is read once, here."""
    aug = ds_cfg.augment
    ra = aug.randaugment
    size, layers = int(ds_cfg.image_size), int(ra.layers)
    ra_args = dict(magnitude=float(ra.magnitude), magnitude_std=float(ra.magnitude_std), prob=float(ra.prob))
    jitter, erasing = float(aug.color_jitter), float(aug.random_erasing) if erasing else 0.0

    def sample(rng: Callable[[int], np.random.Generator]) -> dict:
        out = {}
        if layers > 0:
            out["randaugment"] = randaugment.sample(rng(RANDAUGMENT), layers=layers, **ra_args)
        if jitter > 0:
            out["jitter"] = augment.sample_color_jitter(rng(JITTER), strength=jitter)
        if erasing > 0:
            out["erasing"] = augment.sample_erasing_box(rng(ERASING), size, size, prob=erasing)
        return out

    return sample


def to_channels(image: np.ndarray, num_channels: int) -> np.ndarray:
    """`to_float`, except that uint8 stays uint8 where no arithmetic is needed (the device
    augmentation's input: a quarter of the bytes)."""
    c = image.shape[-1]
    if image.dtype != np.uint8 or (c > 1 and num_channels == 1):  # grey from colour is arithmetic
        return to_float(image, num_channels)
    if c == num_channels:
        return image
    return np.repeat(image, num_channels, -1) if c == 1 else image[..., :num_channels]


def train_fn(ds_cfg) -> Callable[[np.ndarray, tuple[int, int, int]], np.ndarray | dict]:
    """The training chain: crop → affine (rotate/scale/shift) → flip → RandAugment → colour
    jitter → normalize → random erasing. Returns f(image, (seed, epoch, position)) -> (size, size, C)
    float32, normalized. With `augment_on="device"` the chain stops after the flip and f returns
    {"image": (size, size, C) uint8 or float32 [0, 1], "augment": the later stages' choices}."""
    size = int(ds_cfg.image_size)
    channels = int(ds_cfg.num_channels)
    aug = ds_cfg.augment
    method = ds_cfg.resize_method
    inception, cifar = bool(aug.inception_crop), bool(aug.cifar_crop)
    min_area, padding = float(aug.min_area), int(aug.crop_padding)
    flip, erasing = bool(aug.flip), float(aug.random_erasing)
    aff = dict(degrees=float(aug.affine.degrees), translate=float(aug.affine.translate), scale=float(aug.affine.scale))
    if aff["scale"] < 1.0 or aff["degrees"] < 0 or aff["translate"] < 0:
        raise ValueError(f"augment.affine={aff}: degrees and translate must be ≥ 0 and scale ≥ 1 (the largest zoom)")
    use_affine = aff["degrees"] > 0 or aff["translate"] > 0 or aff["scale"] > 1.0
    device = ds_cfg.augment_on == "device"
    # RandAugment and jitter draw through the device chain's sampler; on the host, erasing draws
    # its box and then its noise from one stream (augment.random_erasing).
    later = device_choices(ds_cfg, erasing=device)

    def f(image: np.ndarray, where: tuple[int, int, int]) -> np.ndarray:
        def rng(stage):
            return example_rng(*where, stage)

        encoded = inception and hasattr(image, "inception_crop")  # a file not decoded yet (dataset.jpeg_draft)
        if encoded:  # the same crop box from the same stream, decoding only the scale it needs
            image = image.inception_crop(rng(CROP), size=size, min_area=min_area, method=method)
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[..., None]
        if inception and not encoded:
            image = augment.inception_crop(image, rng(CROP), size=size, min_area=min_area, method=method)
        elif not inception:
            image = augment.resize(image, (size, size), method)  # no-op when already there
            if cifar:
                image = augment.pad_and_crop(image, rng(CROP), padding=padding)
        image = to_channels(image, channels) if device and not use_affine else to_float(image, channels)
        if use_affine:
            image = augment.random_affine(image, rng(AFFINE), **aff)
        if flip:
            image = augment.flip(image, rng(FLIP))
        drawn = later(rng)
        if device:
            return {"image": np.ascontiguousarray(image), "augment": drawn}
        if "randaugment" in drawn:
            image = randaugment.apply_sampled(image, drawn["randaugment"])
        if "jitter" in drawn:
            image = augment.apply_color_jitter(image, drawn["jitter"])
        image = normalize(image, ds_cfg)
        if erasing > 0:
            image = augment.random_erasing(image, rng(ERASING), prob=erasing)
        return np.ascontiguousarray(image, np.float32)

    return f
