"""dataset.jpeg_draft: an image-folder JPEG decoded at 1/2, 1/4 or 1/8 scale when the sampled
inception crop keeps the output resolution there. Checked against the full decode of the same file:
the same crop box from the same random stream, bit-identical output when no reduction applies, and
nearly the same pixels when one does (only the resampling differs)."""

import numpy as np
import pytest
from PIL import Image

from nest_jax.data import augment, image_folder
from nest_jax.data.preprocess import train_fn
from nest_jax.train.config_base import base_config


@pytest.fixture(scope="module")
def jpeg(tmp_path_factory):
    """A smooth 400×300 photograph stand-in (low-frequency colour waves), JPEG quality 95."""
    y, x = np.mgrid[0:300, 0:400] / 300.0
    rgb = np.stack([np.sin(3 * x + 1), np.cos(4 * y), np.sin(2 * x + 3 * y)], -1)
    path = tmp_path_factory.mktemp("draft") / "photo.jpg"
    Image.fromarray(np.uint8(127.5 + 120 * rgb)).save(path, quality=95)
    return str(path)


def both(path, seed, size):
    full = augment.inception_crop(
        image_folder.decode(path, 10**9), np.random.default_rng(seed), size=size, min_area=0.05
    )
    encoded = image_folder.EncodedImage(path, 10**9)
    drafted = encoded.inception_crop(np.random.default_rng(seed), size=size, min_area=0.05, method="bilinear")
    top, left, ch, cw = augment.sample_crop_box(np.random.default_rng(seed), 300, 400, min_area=0.05)
    return full, drafted, min(ch, cw)


def test_reduced_decode_gives_nearly_the_full_decodes_crop(jpeg):
    reduced, differs = 0, 0
    for seed in range(24):
        full, drafted, side = both(jpeg, seed, 32)
        assert drafted.shape == full.shape == (32, 32, 3) and drafted.dtype == np.uint8
        diff = np.abs(drafted.astype(float) - full.astype(float)).mean()
        if side >= 2 * 32:  # the decoder reduced by at least 1/2
            reduced += 1
            differs += diff > 0
            assert diff < 2.0, (seed, side, diff)  # the same region; a different antialiasing path
        else:
            assert diff == 0.0, (seed, side)
    assert reduced >= 12  # most crops of a 300-px image keep 64 px at 32 px output
    assert differs == reduced  # the decoder really reduced (a full decode would be identical)


def test_no_reduction_is_bit_identical(jpeg):
    for seed in range(6):
        full, drafted, side = both(jpeg, seed, 224)  # no crop of this image keeps 448 px
        assert side < 448
        np.testing.assert_array_equal(drafted, full)


def test_training_chain_takes_encoded_records(jpeg):
    cfg = base_config().dataset
    cfg.image_size = 32
    cfg.augment.inception_crop = True
    f = train_fn(cfg)
    encoded = image_folder.EncodedImage(jpeg, 10**9)
    got = f(encoded, (0, 0, 5))
    want = f(np.asarray(encoded), (0, 0, 5))  # np.asarray decodes whole: today's path
    assert got.shape == want.shape == (32, 32, 3)
    assert np.abs(got - want).mean() < 0.05  # normalized units; the same crop, flip and augmentation
    records = image_folder.FileRecords([jpeg], np.zeros(1, np.int32), 10**9, encoded=True)
    assert isinstance(records[0]["image"], image_folder.EncodedImage)
