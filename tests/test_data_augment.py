"""Training augmentations: RandAugment ranges, inception-crop area, random erasing, CIFAR crop."""
import numpy as np
import pytest

from nest_jax.data import augment, randaugment
from nest_jax.data._tf import tf

RNG = np.random.default_rng(0)
IMAGE = tf.constant(RNG.integers(0, 256, (16, 16, 3)) / 255.0, tf.float32)


def _key(i):
    return tf.constant([7, i], tf.int64)


@pytest.mark.parametrize("op", range(len(randaugment.OPS)))
def test_randaugment_op_keeps_shape_and_range(op):
    for level in (0.0, 0.5, 1.0):
        for sign in (-1.0, 1.0):
            out = randaugment.apply_op(tf.constant(op), IMAGE, tf.constant(level),
                                       tf.constant(sign)).numpy()
            assert out.shape == (16, 16, 3) and np.isfinite(out).all()
            assert out.min() >= 0.0 and out.max() <= 1.0


def test_randaugment_ops_hand_values():
    x = IMAGE.numpy()
    op = {name: i for i, name in enumerate(randaugment.OPS)}

    def run(name, level, sign=1.0):
        return randaugment.apply_op(tf.constant(op[name]), IMAGE, tf.constant(level),
                                    tf.constant(sign)).numpy()

    np.testing.assert_array_equal(run("identity", 0.7), x)
    np.testing.assert_allclose(run("solarize", 0.0), 1.0 - x, atol=1e-6)  # threshold 0: all
    np.testing.assert_allclose(run("brightness", 0.0), 0.1 * x, atol=1e-6)  # factor 0.1
    np.testing.assert_allclose(run("posterize", 1.0) * 255, np.floor(np.round(x * 255) / 16) * 16,
                               atol=1e-3)  # 4 low bits dropped
    shifted = run("translate_x", 0.3, -1.0)  # 16 px wide → 0.3 × 4 px = 1 px (official table)
    assert shifted.shape == x.shape and not np.array_equal(shifted, x)
    auto = run("autocontrast", 0.0)
    np.testing.assert_allclose(auto.min((0, 1)), 0.0, atol=1e-6)
    np.testing.assert_allclose(auto.max((0, 1)), 1.0, atol=1e-6)


def test_rand_augment_probability_zero_is_identity_and_one_changes():
    same = randaugment.rand_augment(IMAGE, _key(0), layers=2, magnitude=9, prob=0.0)
    np.testing.assert_array_equal(same.numpy(), IMAGE.numpy())
    changed = [not np.array_equal(randaugment.rand_augment(IMAGE, _key(i), layers=2, magnitude=9,
                                                           prob=1.0).numpy(), IMAGE.numpy())
               for i in range(6)]
    assert sum(changed) >= 4  # only "identity" (1 of 14, twice) leaves it unchanged


def _coordinate_image(size=64):
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return tf.constant(np.stack([rows, cols, rows * 0], -1) / 255.0, tf.float32)


@pytest.mark.parametrize("min_area", [0.05, 0.5])
def test_inception_crop_respects_minimum_area_and_aspect(min_area):
    image = _coordinate_image(64)
    areas = []
    for i in range(60):
        out = augment.inception_crop(image, _key(i), size=64, min_area=min_area,
                                     method="nearest").numpy()
        assert out.shape == (64, 64, 3)
        # Nearest upsampling keeps every source row/column: extents give the crop box.
        rows = np.round(out[..., 0] * 255)
        cols = np.round(out[..., 1] * 255)
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        areas.append(h * w / 64**2)
        assert 3 / 4 - 0.1 <= w / h <= 4 / 3 + 0.1 or h * w == 64**2
    assert min(areas) >= min_area - 0.01
    assert max(areas) <= 1.0
    if min_area == 0.05:
        assert min(areas) < 0.3  # the lower range is actually reached, not just large crops


def test_random_erasing_probability_zero_and_one():
    zeros = tf.zeros((32, 32, 3))
    for i in range(8):
        np.testing.assert_array_equal(augment.random_erasing(zeros, _key(i), prob=0.0).numpy(), 0)
    fractions = []
    for i in range(20):
        out = augment.random_erasing(zeros, _key(i), prob=1.0).numpy()
        changed = (out != 0).any(-1)
        fractions.append(changed.mean())
        # One rectangle: the mask is the outer product of its row and column projections.
        np.testing.assert_array_equal(changed, changed.any(1)[:, None] & changed.any(0)[None, :])
    assert max(fractions) <= 1 / 3 + 0.05 and sum(f > 0 for f in fractions) >= 15
    big = augment.random_erasing(zeros, _key(3), prob=1.0, min_area=0.3, max_area=0.33).numpy()
    noise = big[(big != 0).any(-1)]
    assert abs(noise.std() - 1.0) < 0.2 and abs(noise.mean()) < 0.2  # N(0, 1) fill


def test_cifar_pad_and_crop_is_a_shifted_window():
    image = _coordinate_image(32) + 1 / 255  # no zero pixels inside, so padding is visible
    padded = np.pad(image.numpy(), [(2, 2), (2, 2), (0, 0)])
    offsets = set()
    for i in range(12):
        out = augment.pad_and_crop(image, _key(i), padding=2).numpy()
        matches = [(dy, dx) for dy in range(5) for dx in range(5)
                   if np.array_equal(out, padded[dy:dy + 32, dx:dx + 32])]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 3


def test_color_jitter_keeps_range_and_is_deterministic():
    a = augment.color_jitter(IMAGE, _key(1), strength=0.5).numpy()
    b = augment.color_jitter(IMAGE, _key(1), strength=0.5).numpy()
    np.testing.assert_array_equal(a, b)
    assert a.shape == (16, 16, 3) and a.min() >= 0.0 and a.max() <= 1.0
