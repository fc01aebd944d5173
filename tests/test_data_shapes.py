"""The procedural shapes × textures world: deterministic per (seed, split, index), masks that are
the drawn object (checked against rasterizations written here), labels of both cues."""

import numpy as np
import pytest

from nest_jax.data.shapes import SHAPES, ShapesTexturesSource, shape_mask
from nest_jax.data.textures import PALETTE


def _source(**kw):
    args = dict(num_classes=20, image_size=48, num_train=60, num_test=40)
    return ShapesTexturesSource(**{**args, **kw})


def test_examples_are_a_pure_function_of_seed_split_and_index():
    src = _source(clutter=4, rotation=True, min_scale=0.15)
    later = src.get("train", 37)
    for i in (3, 0, 59):  # other draws in between change nothing (random access)
        src.get("train", i)
    again = ShapesTexturesSource(**{**dict(num_classes=20, image_size=48, num_train=60, num_test=40), "clutter": 4,
                                    "rotation": True, "min_scale": 0.15}).get("train", 37)  # fmt: skip
    for key in ("image", "mask", "label", "texture_label"):
        np.testing.assert_array_equal(later[key], again[key])
    other_seed = _source(clutter=4, rotation=True, min_scale=0.15, seed=1).get("train", 37)
    assert not np.array_equal(later["image"], other_seed["image"])
    assert not np.array_equal(later["image"], src.get("test", 37)["image"])
    assert src.get("train", 10**0)["image"].shape == (48, 48, 3)
    with pytest.raises(IndexError):
        src.get("train", 60)


def test_circle_mask_equals_an_independent_rasterization():
    src = _source(num_classes=4, min_scale=0.1, max_scale=0.4)
    for index in range(0, 40, 4):  # class 0: circles
        lay, ex = src.layout("train", index), src.get("train", index)
        assert lay["shape"] == "circle" and ex["label"] == 0
        i, j = np.meshgrid(np.arange(48) + 0.5, np.arange(48) + 0.5, indexing="ij")
        want = (i - lay["cy"]) ** 2 + (j - lay["cx"]) ** 2 <= lay["r"] ** 2
        np.testing.assert_array_equal(ex["mask"], want)


def test_rotated_square_mask_equals_a_point_in_polygon_test():
    src = _source(num_classes=4, rotation=True)
    for index in range(1, 40, 4):  # class 1: squares, rotated
        lay, mask = src.layout("train", index), src.get("train", index)["mask"]
        # corners of the square (half side 0.8 r) in the image, from the angle: shape coordinates
        # (u, v) = R(angle) (dy, dx) map back through the transpose
        a, h = lay["angle"], 0.8 * lay["r"]
        c, s = np.cos(a), np.sin(a)
        corners = [
            (lay["cy"] + c * u + s * v, lay["cx"] - s * u + c * v) for u, v in ((-h, -h), (-h, h), (h, h), (h, -h))
        ]
        i, j = np.meshgrid(np.arange(48) + 0.5, np.arange(48) + 0.5, indexing="ij")
        cross = [
            (q[0] - p[0]) * (j - p[1]) - (q[1] - p[1]) * (i - p[0]) for p, q in zip(corners, corners[1:] + corners[:1])
        ]
        inside = np.all([x >= -1e-9 for x in cross], 0) | np.all([x <= 1e-9 for x in cross], 0)
        assert np.mean(mask != inside) < 0.002  # pixel centres on an edge may go either way
        assert 0 < mask.sum() < 48 * 48


def test_object_pixels_differ_from_the_background_statistics():
    """Plain background: grey noise (sd 0.06) around 0.5; every texture colour is ≥ 0.2 from grey in
    some channel, so the mask is exactly where the image leaves the background's distribution."""
    src = _source()
    for index in range(20):  # every shape and texture once
        ex = src.get("train", index)
        dev = np.abs(ex["image"].astype(np.float64) / 255 - 0.5).max(-1)
        assert dev[ex["mask"]].min() >= 0.195
        assert np.mean(dev[~ex["mask"]] >= 0.195) < 0.01  # a 3.25-sd tail: 0.12 % expected
        img = ex["image"][~ex["mask"]].astype(int)
        assert np.all(img[:, 0] == img[:, 1]) and np.all(img[:, 1] == img[:, 2])  # grey outside


def _texture_colours(t):
    """The colour pair of texture t, written from the palette rule in `nest_jax.data.textures`."""
    c1, c2 = (PALETTE[t], PALETTE[(3 * t + 5) % 10]) if t < 10 else (PALETTE[(t + 3) % 10], PALETTE[(7 * t + 2) % 10])
    return np.round(np.asarray([c1, np.asarray(c2) * 0.5 + 0.25]) * 255)


def test_cue_conflict_images_carry_the_shape_label_and_the_other_texture():
    src = _source(variant="cue_conflict", clutter=3, rotation=True)
    a = src.arrays("test", masks=True)
    np.testing.assert_array_equal(a["label"], np.arange(40) % 20)
    assert np.all(a["texture_label"] != a["label"]) and a["texture_label"].max() < 20
    assert len(set(a["texture_label"].tolist())) > 10
    for img, mask, t in zip(a["image"], a["mask"], a["texture_label"]):
        inside = img[mask].astype(float)  # the object's pixels are the texture label's two colours
        dist = np.abs(inside[:, None, :] - _texture_colours(int(t))[None]).max(-1).min(1)
        assert dist.max() <= 1.0
    nat = _source(variant="natural").arrays("train", 20)
    np.testing.assert_array_equal(nat["texture_label"], nat["label"])
    sty = _source(variant="stylized", num_train=400).arrays("train")
    assert np.mean(sty["texture_label"] == sty["label"]) < 0.2  # re-drawn at random (chance: 1/20)


def test_clutter_keeps_the_layout_and_draws_distractors_outside_the_mask():
    plain, busy = _source(), _source(clutter=6)
    for index in range(5):
        np.testing.assert_array_equal(plain.get("train", index)["mask"], busy.get("train", index)["mask"])
        bg = busy.get("train", index)["image"][~busy.get("train", index)["mask"]].astype(int)
        assert np.mean(np.abs(bg[:, 0] - bg[:, 1]) + np.abs(bg[:, 1] - bg[:, 2]) > 0) > 0.5  # coloured clutter


def test_twenty_distinct_shapes():
    """No two shapes coincide: at the same centre and scale every pair differs in > 10 % of its union
    (the closest, hexagon and pentagon, 0.85 IoU; circle and hexagon 0.84)."""
    masks = np.stack([shape_mask(k, 64, 32.0, 32.0, 24.0) for k in SHAPES])
    inter = (masks[:, None] & masks[None]).sum((-1, -2))
    union = (masks[:, None] | masks[None]).sum((-1, -2))
    iou = inter / union
    np.fill_diagonal(iou, 0)
    assert len(SHAPES) == 20 and iou.max() < 0.9 and masks.sum((1, 2)).min() > 200


def test_the_config_section_builds_the_world():
    from nest_jax.data import get_source
    from nest_jax.train.config_base import base_config

    c = base_config()
    c.dataset.name, c.dataset.image_size = "shapes", 40
    c.dataset.shapes.update(dict(clutter=2, rotation=True, num_classes=16, min_scale=0.2))
    src = get_source(c.dataset)
    assert (src.clutter, src.rotation, src.num_classes, src.image_size, src.scale[0]) == (2, True, 16, 40, 0.2)
