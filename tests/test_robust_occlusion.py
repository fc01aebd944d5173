"""Occlusion, patch shuffle, token dropping and per-layer tokens: identities, exact counts, the
attention-mass partition against a NumPy float64 reference, last layer = the model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nest_jax.analysis import occlusion as O
from nest_jax.analysis import patch_shuffle as S
from nest_jax.analysis import per_block_tokens as T
from nest_jax.analysis.forward import logits_from_pixels
from nest_jax.errors import UserError
from nest_jax.models import create_model

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)


@pytest.fixture(scope="module")
def deit():
    return create_model(
        "deit_tiny_distilled_patch16_224",
        num_classes=4,
        img_size=32,
        patch_size=8,
        depth=3,
        dim=32,
        num_heads=2,
        mlp_dim=64,
    )


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((6, 32, 32, 3)).astype(np.float32)


def test_drop_ratio_zero_and_grid_1x1_are_the_identity(deit, images):
    x = jnp.asarray(images)
    clean = logits_from_pixels(deit, x, mean=MEAN, std=STD)
    occl = O.random_occlusion_logits(
        deit, x, jax.random.key(0), grid=(4, 4), num_drop=0, per_image=False, mean=MEAN, std=STD
    )
    shuf = S.shuffled_logits(deit, x, jax.random.key(0), grid=(1, 1), mean=MEAN, std=STD)
    np.testing.assert_array_equal(np.asarray(occl), np.asarray(clean))
    np.testing.assert_array_equal(np.asarray(shuf), np.asarray(clean))
    drop0 = S.token_drop_logits(
        deit, (x - jnp.asarray(MEAN)) / jnp.asarray(STD), jax.random.key(0), layer=1, num_keep=16
    )
    np.testing.assert_allclose(np.asarray(drop0), np.asarray(clean), atol=1e-5)  # only the order of tokens changes


def test_random_patchdrop_drops_exactly_the_specified_cells():
    # The paper's 14×14 grid: k·196 // 10 cells for k = 0..9.
    for k in range(10):
        n = O.num_dropped(k / 10, 196)
        assert n == k * 196 // 10
        m = np.asarray(O.random_drop_mask(jax.random.key(k), 5, (14, 14), n, per_image=True))
        assert (m.reshape(5, -1).sum(1) == n).all()
        if 0 < n < 196:
            assert len({m[i].tobytes() for i in range(5)}) > 1  # per image: different patterns
        shared = np.asarray(O.random_drop_mask(jax.random.key(k), 5, (14, 14), n, per_image=False))
        assert all((shared[i] == shared[0]).all() for i in range(5))  # per batch: one pattern
    x = np.random.default_rng(1).random((2, 28, 28, 3)).astype(np.float32) + 0.1
    mask = np.asarray(O.random_drop_mask(jax.random.key(3), 2, (14, 14), 98, per_image=True))
    y = np.asarray(O.drop_cells(jnp.asarray(x), jnp.asarray(mask)))
    pix = np.repeat(np.repeat(mask, 2, 1), 2, 2)[..., None]
    assert (y[np.broadcast_to(pix, y.shape)] == 0).all()  # dropped cells are black in [0, 1] space
    np.testing.assert_array_equal(y[~np.broadcast_to(pix, y.shape)], x[~np.broadcast_to(pix, x.shape)])


def _mass_set_reference(s: np.ndarray, lam: float) -> np.ndarray:
    """Smallest set of cells holding ≥ λ of the mass, float64: take cells by decreasing value."""
    p = s / s.sum()
    order = np.argsort(-p, kind="stable")
    chosen = np.zeros(len(p), bool)
    total = 0.0
    for i in order:
        if total >= lam - 1e-12:
            break
        chosen[i] = True
        total += p[i]
    return chosen


def test_salient_and_non_salient_masks_partition_the_attention_mass():
    sal = np.random.default_rng(2).random((3, 7, 7)) ** 3
    for lam in (0.1, 0.3, 0.5, 0.9, 1.0):
        fg = np.asarray(O.mass_mask(jnp.asarray(sal, jnp.float32), lam))
        for b in range(3):
            ref = _mass_set_reference(sal[b].ravel(), lam)
            np.testing.assert_array_equal(fg[b].ravel(), ref)
            p = sal[b].ravel() / sal[b].sum()
            assert p[fg[b].ravel()].sum() >= lam - 1e-6  # holds the top-λ of the mass …
            assert p[fg[b].ravel()].sum() - p[fg[b].ravel()].min() < lam + 1e-6  # … and is the smallest set
    # Salient drop removes exactly the cells non-salient drop keeps: together every cell, once.
    x = jnp.ones((3, 14, 14, 3))
    fg = O.mass_mask(jnp.asarray(sal, jnp.float32), 0.5)
    kept_salient = np.asarray(O.drop_cells(x, fg))[..., 0]
    kept_non_salient = np.asarray(O.drop_cells(x, ~fg))[..., 0]
    np.testing.assert_array_equal(kept_salient + kept_non_salient, np.ones((3, 14, 14)))


def test_cls_attention_is_the_captured_last_layer_row(deit, images):
    x = (jnp.asarray(images) - jnp.asarray(MEAN)) / jnp.asarray(STD)
    s = np.asarray(O.cls_attention(deit, x))
    _, inter = deit(x, capture=("attention",))
    row = np.asarray(inter["attention"][-1], np.float64)[:, :, 0, 2:].mean(1)
    np.testing.assert_allclose(s.reshape(6, -1), row / row.sum(-1, keepdims=True), atol=1e-6)


def test_patch_shuffle_permutes_cells_like_numpy():
    x = np.random.default_rng(3).random((2, 16, 16, 3)).astype(np.float32)
    perm = np.random.default_rng(4).permutation(8)
    y = np.asarray(S.shuffle_cells(jnp.asarray(x), (2, 4), jnp.asarray(perm)))
    cells = [x[:, r * 8 : (r + 1) * 8, c * 4 : (c + 1) * 4] for r in range(2) for c in range(4)]
    for i, src in enumerate(perm):
        r, c = divmod(i, 4)
        np.testing.assert_array_equal(y[:, r * 8 : (r + 1) * 8, c * 4 : (c + 1) * 4], cells[src])


def test_last_layer_tokens_reproduce_the_model(deit, images):
    labels = np.array(jnp.argmax(logits_from_pixels(deit, jnp.asarray(images), mean=MEAN, std=STD), -1))
    labels[:2] = (labels[:2] + 1) % 4  # two wrong: accuracy 4/6
    batches = [
        {"image": images[:4], "label": labels[:4]},
        {"image": images[4:], "label": labels[4:], "mask": np.asarray([1.0, 1.0])},
    ]
    out = T.run_per_block_tokens(deit, batches, mean=MEAN, std=STD)
    assert out["layers"] == 3
    assert abs(out["top1"]["inference"][-1] - 4 / 6) < 1e-9
    x = (jnp.asarray(images) - jnp.asarray(MEAN)) / jnp.asarray(STD)
    per = T.per_layer_logits(deit, x)
    both = deit(x, capture="heads")[1]["heads"]  # the heads' own logits
    np.testing.assert_allclose(np.asarray(per["cls"][-1]), np.asarray(both["cls"]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(per["dist"][-1]), np.asarray(both["dist"]), atol=1e-5)
    assert len(out["cosine"]["cls_dist"]) == 4  # input + 3 layers


def test_occlusion_curves_run_on_nest_and_resnet_grids(images):
    nest = create_model(
        "nest_tiny_cifar", num_classes=4, img_size=32, depths=(1, 1, 1, 1), dims=(16,) * 4, heads=(2,) * 4
    )
    b = [{"image": images, "label": np.zeros(6, np.int32)}]
    r = O.run_occlusion(nest, b, mean=MEAN, std=STD, ratios=(0.0, 0.5))
    assert r["grid"] == [4, 4] and r["dropped"] == [0, 8]
    assert len(S.run_patch_shuffle(nest, b, mean=MEAN, std=STD, grids=((1, 1), (4, 4)))["top1"]) == 2


def test_run_token_drop_after_the_last_layer_leaves_the_class_tokens_and_top1_alone(deit, images):
    """Tokens dropped after the last layer cannot reach the class and distillation tokens (the
    final norm is per token), so top-1 is the clean top-1 at every ratio, ratio 1.0 included (one
    patch token is always kept); ratio 0 keeps every token at every layer. The clean top-1 is
    computed here from the model's logits, independently of the sweep."""
    clean = np.argmax(np.asarray(logits_from_pixels(deit, jnp.asarray(images), mean=MEAN, std=STD)), -1)
    labels = np.concatenate([clean[:4], (clean[4:] + 1) % 4])  # the model is right on 4 of 6
    batches = [dict(image=images[:4], label=labels[:4]), dict(image=images[4:], label=labels[4:])]
    want = 4 / 6
    depth = len(deit.layers)
    out = S.run_token_drop(deit, batches, mean=MEAN, std=STD, ratios=(0.0, 0.5, 1.0), layers=[0, 1, depth])
    assert out["ratios"] == [0.0, 0.5, 1.0] and out["layers"] == [0, 1, depth]
    assert out["top1"][str(depth)] == [want, want, want]
    assert out["top1"]["0"][0] == want and out["top1"]["1"][0] == want
    with pytest.raises(UserError, match="token dropping needs a ViT/DeiT"):
        S.run_token_drop(create_model("nest_tiny", num_classes=4, img_size=32), batches, mean=MEAN, std=STD)
