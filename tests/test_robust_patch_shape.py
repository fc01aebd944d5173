"""Adversarial patch (identity, pasting, optimization), shape bias by hand, the ImageNet→16 mapping,
the cue-conflict folder loader and the procedural shapes × textures source."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from nest_jax.analysis import adversarial_patch as A
from nest_jax.analysis import shape_bias as SB
from nest_jax.analysis.forward import logits_from_pixels
from nest_jax.data.shapes import ShapesTexturesSource
from nest_jax.models import create_model

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


@pytest.fixture(scope="module")
def vit_and_batch():
    model = create_model(
        "vit_tiny_patch16_224", num_classes=3, img_size=16, patch_size=4, depth=1, dim=16, num_heads=2, mlp_dim=32
    )
    # Larger input and output weights than the initialization's, so the logits depend on the image.
    model.head.kernel[...] = model.head.kernel[...] * 100
    model.patch_embed.proj.kernel[...] = model.patch_embed.proj.kernel[...] * 10
    x = np.random.default_rng(0).random((12, 16, 16, 3)).astype(np.float32)
    labels = np.asarray(jnp.argmax(logits_from_pixels(model, jnp.asarray(x), mean=MEAN, std=STD), -1))
    return model, [{"image": x, "label": labels}]  # labels = predictions: every image is "correct"


def test_zero_area_patch_fools_nothing(vit_and_batch):
    model, batches = vit_and_batch
    patch, mask = jnp.zeros((0, 0, 3)), jnp.zeros((0, 0))
    assert A.fooling_rate(model, batches, patch, mask, mean=MEAN, std=STD)["fooling_rate"] == 0.0
    x = jnp.asarray(batches[0]["image"])
    same = A.paste(x, patch, mask, jnp.zeros((12, 2), jnp.int32), jnp.zeros((12,)))
    np.testing.assert_array_equal(np.asarray(same), np.asarray(x))


def test_unrotated_square_is_pasted_exactly_and_circle_covers_its_area():
    x = np.random.default_rng(1).random((2, 20, 20, 3)).astype(np.float32)
    patch = np.random.default_rng(2).random((5, 5, 3)).astype(np.float32)
    off = np.asarray([[3, 7], [15, 0]])
    y = np.asarray(A.paste(jnp.asarray(x), jnp.asarray(patch), jnp.ones((5, 5)), jnp.asarray(off), jnp.zeros(2)))
    ref = x.copy()
    for i, (r, c) in enumerate(off):
        ref[i, r : r + 5, c : c + 5] = patch
    np.testing.assert_allclose(y, ref, atol=1e-6)
    side = A.patch_side((224, 224), 0.05, "circle")
    assert abs(A.support_mask(side, "circle").sum() / (224 * 224) - 0.05) < 0.003
    assert A.patch_side((224, 224), 0.05, "square") == 50


def test_patch_optimization_increases_the_loss(vit_and_batch):
    model, batches = vit_and_batch
    x, y = jnp.asarray(batches[0]["image"]), jnp.asarray(batches[0]["label"])
    patch0, mask, _ = A.train_patch(model, batches, mean=MEAN, std=STD, fraction=0.25, steps=1, lr=0.0)
    patch, mask, _ = A.train_patch(model, batches, mean=MEAN, std=STD, fraction=0.25, steps=15, lr=0.1)
    key = jax.random.key(5)  # the same placements for both patches, unseen in training

    def ce(p):
        return -float(A.patch_loss(model, x, y, p, mask, key, rotate=False, mean=MEAN, std=STD, target=None))

    assert ce(patch) > 1.2 * ce(patch0)  # the true class's cross-entropy grows
    assert float(patch.min()) >= 0.0 and float(patch.max()) <= 1.0


def test_shape_bias_equals_the_hand_calculation():
    shape = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    texture = [1, 2, 3, 4, 5, 6, 7, 8, 9, 9]  # the last image has one class for both: dropped
    pred = [0, 1, 3, 4, 5, 0, 0, 7, 2, 9]
    # conflict images 0..8: shape hits at 0, 1, 7 (3); texture hits at 2, 3, 4 (3); 5, 6, 8 neither.
    r = SB.shape_bias(pred, shape, texture)
    assert (r["shape_hits"], r["texture_hits"], r["conflict_images"]) == (3, 3, 9)
    assert r["shape_bias"] == 0.5
    assert SB.shape_bias([0, 0, 1], [0, 0, 1], [1, 2, 0])["shape_bias"] == 1.0


def test_imagenet_to_16_is_the_mean_probability_over_each_category():
    probs = np.random.default_rng(3).dirichlet(np.ones(1000), size=4)
    got = np.asarray(SB.imagenet_to_16(jnp.asarray(probs, jnp.float32)))
    for j, c in enumerate(SB.CATEGORIES16):
        np.testing.assert_allclose(got[:, j], probs[:, SB.IMAGENET16_INDICES[c]].mean(1), rtol=1e-5)
    assert len(SB.IMAGENET16_INDICES["dog"]) == 117 - 8 and SB.IMAGENET16_INDICES["knife"] == [499]
    flat = sum(SB.IMAGENET16_INDICES.values(), [])
    assert len(flat) == len(set(flat)) and max(flat) < 1000  # categories do not overlap


def test_cue_conflict_folder_reads_the_standard_names(tmp_path):
    for name in ("airplane1-bicycle2.png", "cat3-cat3.png", "truck10-knife4.png"):
        folder = tmp_path / SB.parse_cue_conflict_name(name)[0]
        folder.mkdir(exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(folder / name)
    (tmp_path / "README.txt").write_text("not an image")
    b = next(SB.cue_conflict_folder(str(tmp_path), image_size=8))
    cat = SB.CATEGORIES16.index
    assert sorted(zip(b["label"].tolist(), b["texture_label"].tolist())) == sorted(
        [(cat("airplane"), cat("bicycle")), (cat("cat"), cat("cat")), (cat("truck"), cat("knife"))]
    )
    assert b["image"].shape == (3, 8, 8, 3) and abs(b["image"].max() - 200 / 255) < 1e-6


def test_shapes_source_variants():
    for variant in ("natural", "stylized", "cue_conflict"):
        src = ShapesTexturesSource(num_classes=6, image_size=24, variant=variant, num_train=120, num_test=30)
        a = src.arrays("train")
        assert a["image"].shape == (120, 24, 24, 3) and a["image"].dtype == np.uint8
        assert np.bincount(a["label"]).tolist() == [20] * 6
        same = (a["label"] == a["texture_label"]).mean()
        assert {"natural": same == 1.0, "stylized": 0.0 < same < 0.5, "cue_conflict": same == 0.0}[variant]
        e = src["test", 7]
        np.testing.assert_array_equal(e["image"], src.get("test", 7)["image"])  # a pure function of the index
        assert not np.array_equal(e["image"], src.get("train", 7)["image"])
    assert src.num_examples("test") == 30
