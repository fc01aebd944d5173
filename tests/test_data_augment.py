"""Training augmentations in NumPy/PIL, checked three ways: against the outputs of the TensorFlow
versions they replace (tests/data/tf_reference.npz, see make_tf_reference.py), against independent
formulations (PIL.ImageOps / ImageEnhance, colorsys, per-pixel loops written here), and by the
properties of the random ops (crop area and aspect, erasing box and noise, CIFAR crop offsets)."""

import colorsys
import math
import os

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from nest_jax.data import augment, preprocess, randaugment
from tests._data_cfg import dataset_config

REF = np.load(os.path.join(os.path.dirname(__file__), "data", "tf_reference.npz"), allow_pickle=False)
IMAGE = REF["image"]  # (20, 24, 3) float32, multiples of 1/255
U8 = np.round(IMAGE * 255).astype(np.uint8)
PIL_IMAGE = Image.fromarray(U8)


def _rng(i):
    return np.random.default_rng([7, i])


# ---- the ports reproduce the TensorFlow ops ----


@pytest.mark.parametrize("op", randaugment.OPS)
def test_randaugment_op_matches_tensorflow_reference(op):
    for key in REF.files:
        if key.startswith(f"op/{op}/"):
            _, _, level, sign = key.split("/")
            out = randaugment.apply_op(op, IMAGE, float(level), float(sign))
            assert out.shape == IMAGE.shape and out.dtype == np.float32
            assert out.min() >= 0.0 and out.max() <= 1.0
            # Same formulas in float32: differences are summation-order rounding (< 1e-4 of a
            # level); geometric ops sample the same pixels exactly.
            np.testing.assert_allclose(out, REF[key], atol=1e-6, err_msg=key)


def test_colour_adjustments_match_tensorflow_reference():
    for f in (0.3, 1.7):
        np.testing.assert_allclose(augment.adjust_contrast(IMAGE, f), REF[f"contrast/{f}"], atol=1e-5)
        np.testing.assert_allclose(augment.adjust_saturation(IMAGE, f), REF[f"saturation/{f}"], atol=1e-5)
    for d in (-0.2, 0.05):
        np.testing.assert_allclose(augment.adjust_hue(IMAGE, d), REF[f"hue/{d}"], atol=1e-5)
    np.testing.assert_allclose(randaugment.gray(IMAGE), REF["grayscale"], atol=1e-6)


@pytest.mark.parametrize("mode", ["resize_crop", "resize"])
@pytest.mark.parametrize("method", ["bilinear", "bicubic"])
def test_eval_view_matches_tensorflow_reference(mode, method):
    cfg = dataset_config(
        "x",
        image_size=16,
        num_channels=3,
        normalize="imagenet",
        eval_resize=mode,
        crop_fraction=0.875,
        resize_method=method,
    )
    ref, std = REF[f"eval/{mode}/{method}"], np.array([0.229, 0.224, 0.225])
    # Float input: PIL's and TF's antialiased resampling kernels agree to < 1e-4 of a level.
    float_out = preprocess.eval_image(REF["eval_input"], cfg)
    np.testing.assert_allclose(float_out * std * 255, ref * std * 255, atol=1e-3)
    # uint8 input (decoded files) is resampled in 8 bits: at most one level of rounding.
    u8 = np.round(REF["eval_input"] * 255).astype(np.uint8)
    u8_out = preprocess.eval_image(u8, cfg)
    assert np.abs((u8_out - ref) * std * 255).max() <= 1.0


# ---- each RandAugment op against an independent formulation ----


def _levels(image):
    return np.round(np.asarray(image, np.float64) * 255)


def _pil(pil_image):
    return np.asarray(pil_image, np.float64)


def test_histogram_ops_equal_pil_imageops():
    np.testing.assert_array_equal(_levels(randaugment.equalize(IMAGE)), _pil(ImageOps.equalize(PIL_IMAGE)))
    for t in (0, 100, 200):  # solarize at threshold level t/255 inverts pixels ≥ t
        out = randaugment.apply_op("solarize", IMAGE, t / 255, 1.0)
        np.testing.assert_array_equal(_levels(out), _pil(ImageOps.solarize(PIL_IMAGE, t)))
    for level, bits in ((0.0, 8), (0.3, 7), (0.5, 6), (1.0, 4)):  # keeps 8 − ⌊4·level⌋ bits
        out = randaugment.apply_op("posterize", IMAGE, level, 1.0)
        np.testing.assert_array_equal(_levels(out), _pil(ImageOps.posterize(PIL_IMAGE, bits)))
    # PIL's autocontrast works through an 8-bit lookup table: within one level.
    auto = _levels(randaugment.apply_op("autocontrast", IMAGE, 0.5, 1.0))
    assert np.abs(auto - _pil(ImageOps.autocontrast(PIL_IMAGE))).max() <= 1


@pytest.mark.parametrize(
    "op,enhancer",
    [
        ("color", ImageEnhance.Color),
        ("contrast", ImageEnhance.Contrast),
        ("brightness", ImageEnhance.Brightness),
        ("sharpness", ImageEnhance.Sharpness),
    ],
)
def test_enhance_ops_equal_pil_imageenhance(op, enhancer):
    for level in (0.0, 0.5, 1.0):
        factor = 0.1 + 1.8 * level  # the official level → factor map
        out = _levels(randaugment.apply_op(op, IMAGE, level, 1.0))
        # PIL computes in 8-bit integers (its grey for color/contrast is integer luma, its
        # contrast mean rounded): one level of rounding apart.
        assert np.abs(out - _pil(enhancer(PIL_IMAGE).enhance(factor))).max() <= 1, (op, level)


def test_rotation_equals_pil_rotate_and_translation_pil_affine():
    for level in (0.5, 1.0):
        for sign in (-1.0, 1.0):
            out = randaugment.apply_op("rotate", IMAGE, level, sign)
            expected = PIL_IMAGE.rotate(sign * level * 30, resample=Image.NEAREST, fillcolor=(128, 128, 128))
            np.testing.assert_array_equal(_levels(out), _pil(expected))
            pixels = sign * level * int(0.3 * 24)  # width 24 is not in the table: 0.3 × size
            if pixels == round(pixels):  # whole-pixel shifts: no rounding convention involved
                out = randaugment.apply_op("translate_x", IMAGE, level, sign)
                expected = PIL_IMAGE.transform(
                    PIL_IMAGE.size, Image.AFFINE, (1, 0, pixels, 0, 1, 0), Image.NEAREST, fillcolor=(128, 128, 128)
                )
                np.testing.assert_array_equal(_levels(out), _pil(expected))


def test_shear_and_translate_equal_a_per_pixel_loop():
    """out(x, y) = in(round(x + s·y), y) for shear_x, grey 0.5 outside, std::round rounding."""
    h, w, _ = IMAGE.shape
    for op in ("shear_x", "shear_y", "translate_y"):
        for level, sign in ((0.5, -1.0), (1.0, 1.0)):
            s, px = sign * level * 0.3, sign * level * int(0.3 * w)
            expected = np.full_like(IMAGE, 0.5)
            for y in range(h):
                for x in range(w):
                    sx, sy = {"shear_x": (x + s * y, y), "shear_y": (x, y + s * x), "translate_y": (x, y + px)}[op]
                    sx, sy = (int(math.copysign(math.floor(abs(v) + 0.5), v)) for v in (sx, sy))
                    if 0 <= sx < w and 0 <= sy < h:
                        expected[y, x] = IMAGE[sy, sx]
            np.testing.assert_array_equal(randaugment.apply_op(op, IMAGE, level, sign), expected)


def test_rand_augment_probability_zero_is_identity_and_one_changes():
    same = randaugment.rand_augment(IMAGE, _rng(0), layers=2, magnitude=9, prob=0.0)
    np.testing.assert_array_equal(same, IMAGE)
    changed = [
        not np.array_equal(randaugment.rand_augment(IMAGE, _rng(i), layers=2, magnitude=9, prob=1.0), IMAGE)
        for i in range(8)
    ]
    assert sum(changed) >= 6  # only "identity" (1 of 14, twice) leaves it unchanged
    a = randaugment.rand_augment(IMAGE, _rng(3), layers=2, prob=0.5)
    np.testing.assert_array_equal(a, randaugment.rand_augment(IMAGE, _rng(3), layers=2, prob=0.5))


# ---- colour jitter: each adjustment changes what it should ----


def test_colour_adjustments_have_their_measurable_effects():
    std = IMAGE.std(axis=(0, 1))
    np.testing.assert_allclose(augment.adjust_contrast(IMAGE, 0.5).std(axis=(0, 1)), 0.5 * std, rtol=1e-5)
    np.testing.assert_allclose(
        augment.adjust_contrast(IMAGE, 0.5).mean(axis=(0, 1)), IMAGE.mean(axis=(0, 1)), atol=1e-5
    )
    for y, x in ((0, 0), (7, 11), (19, 23)):  # colorsys: the standard library's HSV
        h, s, v = colorsys.rgb_to_hsv(*IMAGE[y, x].astype(np.float64))
        sat = colorsys.rgb_to_hsv(*augment.adjust_saturation(IMAGE, 0.6)[y, x].astype(np.float64))
        np.testing.assert_allclose(sat, (h, 0.6 * s, v), atol=1e-5)
        hue = colorsys.rgb_to_hsv(*augment.adjust_hue(IMAGE, 0.1)[y, x].astype(np.float64))
        np.testing.assert_allclose(hue, ((h + 0.1) % 1.0, s, v), atol=1e-5)


def test_color_jitter_strength_zero_is_identity_or_grey_and_strength_changes_statistics():
    for i in range(10):  # s = 0: every factor is 1, so only the 20% greyscale changes pixels
        out = augment.color_jitter(IMAGE, _rng(i), strength=0.0)
        grey = np.broadcast_to(randaugment.gray(IMAGE), IMAGE.shape)
        assert np.allclose(out, IMAGE, atol=1e-6) or np.allclose(out, grey, atol=1e-6)
    outs = [augment.color_jitter(IMAGE, _rng(i), strength=1.0) for i in range(40)]
    assert all(o.shape == IMAGE.shape and o.min() >= 0 and o.max() <= 1 for o in outs)
    means = np.array([o.mean() for o in outs])
    assert means.std() > 0.02  # brightness/contrast move the mean from image to image
    greys = sum(np.allclose(o[..., 0], o[..., 1]) and np.allclose(o[..., 1], o[..., 2]) for o in outs)
    assert 2 <= greys <= 18  # greyscale with probability 0.2 (40 draws)
    np.testing.assert_array_equal(
        augment.color_jitter(IMAGE, _rng(5), strength=0.5), augment.color_jitter(IMAGE, _rng(5), strength=0.5)
    )


# ---- random crops, erasing ----


def _coordinate_image(size=64):
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return (np.stack([rows, cols, rows * 0], -1) / 255.0).astype(np.float32)


@pytest.mark.parametrize("min_area", [0.05, 0.5])
def test_inception_crop_respects_minimum_area_and_aspect(min_area):
    image = _coordinate_image(64)
    areas = []
    for i in range(60):
        out = augment.inception_crop(image, _rng(i), size=64, min_area=min_area, method="nearest")
        assert out.shape == (64, 64, 3)
        # Nearest upsampling keeps every source row/column: extents give the crop box.
        rows, cols = np.round(out[..., 0] * 255), np.round(out[..., 1] * 255)
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        areas.append(h * w / 64**2)
        assert 3 / 4 - 0.1 <= w / h <= 4 / 3 + 0.1 or h * w == 64**2
    assert min(areas) >= min_area - 0.03
    assert max(areas) <= 1.0
    if min_area == 0.05:
        assert min(areas) < 0.3  # the lower range is actually reached, not just large crops


def test_inception_crop_falls_back_to_the_whole_image():
    # A 1 × 64 strip: no crop of aspect ∈ [3/4, 4/3] and area ≥ 0.9 fits, so after 10 draws the
    # whole image is used.
    assert augment.sample_crop_box(_rng(0), 1, 64, min_area=0.9) == (0, 0, 1, 64)


def test_random_erasing_probability_zero_and_one():
    zeros = np.zeros((32, 32, 3), np.float32)
    for i in range(8):
        np.testing.assert_array_equal(augment.random_erasing(zeros, _rng(i), prob=0.0), 0)
    fractions = []
    for i in range(20):
        changed = (augment.random_erasing(zeros, _rng(i), prob=1.0) != 0).any(-1)
        fractions.append(changed.mean())
        # One rectangle: the mask is the outer product of its row and column projections.
        np.testing.assert_array_equal(changed, changed.any(1)[:, None] & changed.any(0)[None, :])
    assert max(fractions) <= 1 / 3 + 0.05 and sum(f > 0 for f in fractions) >= 15
    big = augment.random_erasing(zeros, _rng(3), prob=1.0, min_area=0.3, max_area=0.33)
    noise = big[(big != 0).any(-1)]
    assert abs(noise.std() - 1.0) < 0.2 and abs(noise.mean()) < 0.2  # N(0, 1) fill


def test_cifar_pad_and_crop_is_a_shifted_window():
    image = _coordinate_image(32) + 1 / 255  # no zero pixels inside, so padding is visible
    padded = np.pad(image, [(2, 2), (2, 2), (0, 0)])
    offsets = set()
    for i in range(12):
        out = augment.pad_and_crop(image, _rng(i), padding=2)
        matches = [
            (dy, dx) for dy in range(5) for dx in range(5) if np.array_equal(out, padded[dy : dy + 32, dx : dx + 32])
        ]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 3


def test_train_chain_grey_to_rgb_and_rgb_to_grey():
    cfg = dataset_config("x", image_size=8, num_channels=3, normalize="inception", resize_method="bilinear")
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8, 1)
    out = preprocess.train_fn(cfg)(grey, (0, 0, 0))
    np.testing.assert_allclose(out, np.repeat(grey / 127.5 - 1, 3, -1), atol=1e-6)
    cfg.num_channels = 1
    out = preprocess.train_fn(cfg)(U8[:8, :8], (0, 0, 0))
    luma = U8[:8, :8].astype(np.float64) @ [0.2989, 0.587, 0.114]
    np.testing.assert_allclose(out[..., 0], luma / 127.5 - 1, atol=1e-5)


# ---- random affine (rotation / zoom / sub-pixel shift) ----


def test_affine_equals_scipy_affine_transform_and_exact_cases():
    """Against scipy.ndimage's bilinear warp with zero padding (an independent implementation),
    for several angles, zooms and fractional shifts; plus the cases with a known exact answer."""
    from scipy import ndimage

    image = IMAGE[:, :20]  # (20, 20, 3)
    c = np.array([9.5, 9.5])
    for angle, scale, shift in [(17.0, 1.13, (0.7, -1.3)), (-8.0, 0.9, (0.0, 2.5)), (180.0, 1.0, (-0.25, 0.25))]:
        rad = math.radians(angle)
        inverse = np.array([[math.cos(rad), math.sin(rad)], [-math.sin(rad), math.cos(rad)]]) / scale
        offset = c - inverse @ (c + np.array(shift))
        out = augment.affine(image, angle=angle, scale=scale, shift=shift)
        for ch in range(3):
            ref = ndimage.affine_transform(
                image[..., ch].astype(np.float64), inverse, offset=offset, order=1, mode="grid-constant", cval=0.0
            )
            np.testing.assert_allclose(out[..., ch], ref, atol=1e-6)
    np.testing.assert_array_equal(augment.affine(image), image)
    np.testing.assert_allclose(augment.affine(image, angle=90.0), np.rot90(image), atol=1e-6)  # counter-clockwise
    shifted = augment.affine(image, shift=(2.0, -3.0))  # two rows down, three columns left
    np.testing.assert_allclose(shifted[2:, :-3], image[:-2, 3:], atol=1e-7)
    assert not shifted[:2].any() and not shifted[:, -3:].any()  # zeros come in at the edges


def test_random_affine_draws_within_its_ranges_and_chain_uses_its_own_stream():
    """Shifts of a single bright pixel stay within ±translate·size; zero ranges are the identity;
    switching the affine stage on leaves the other stages' random numbers alone."""
    dot = np.zeros((21, 21, 1), np.float32)
    dot[10, 10] = 1.0
    centres = []
    for i in range(40):
        out = augment.random_affine(dot, _rng(i), translate=0.1)
        rows, cols = np.nonzero(out[..., 0] > 1e-6)
        w = out[rows, cols, 0]
        centres.append((np.sum(rows * w) / w.sum() - 10, np.sum(cols * w) / w.sum() - 10))
        np.testing.assert_allclose(w.sum(), 1.0, atol=1e-5)  # bilinear splat of a pure shift keeps mass
    centres = np.array(centres)
    assert np.abs(centres).max() <= 2.1 + 1e-6 and np.abs(centres).max() > 1.0
    assert len(np.unique(np.round(centres, 3))) > 30  # sub-pixel, not whole-pixel shifts
    np.testing.assert_array_equal(augment.random_affine(dot, _rng(0)), dot)

    base = dict(image_size=20, num_channels=3, normalize="inception", resize_method="bilinear")
    plain = dataset_config("x", **base, augment=dict(flip=True))
    warped = dataset_config("x", **base, augment=dict(flip=True, affine=dict(degrees=15.0, scale=1.2)))
    img = IMAGE[:, :20]
    a, b = preprocess.train_fn(plain)(img, (3, 1, 5)), preprocess.train_fn(warped)(img, (3, 1, 5))
    flipped = preprocess.example_rng(3, 1, 5, preprocess.FLIP).random() < 0.5
    rng = preprocess.example_rng(3, 1, 5, preprocess.AFFINE)
    expected = augment.random_affine(img, rng, degrees=15.0, scale=1.2)
    expected = expected[:, ::-1] if flipped else expected
    np.testing.assert_allclose(b, expected / 0.5 - 1, atol=1e-5)
    np.testing.assert_allclose(a, (img[:, ::-1] if flipped else img) / 0.5 - 1, atol=1e-5)
    with pytest.raises(ValueError, match="scale"):
        preprocess.train_fn(dataset_config("x", **base, augment=dict(affine=dict(scale=0.5))))
