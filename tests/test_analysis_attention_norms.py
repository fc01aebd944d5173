"""Mean attention distance, ratio of norms and the skip-removal option, against hand values and
NumPy float64 loops written here."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nest_jax.analysis.attention_distance import layer_geometry, mean_attention_distance, model_attention_distances
from nest_jax.analysis.norm_ratio import norm_ratios
from nest_jax.analysis.representations import forward_fn
from nest_jax.models import create_model
from nest_jax.models.layers import TransformerLayer

rng = np.random.default_rng(0)


def test_uniform_attention_on_14x14_grid_of_16px_patches_is_116_49_px():
    n = 196
    uniform = np.full((1, 1, n, n), 1.0 / n)
    assert mean_attention_distance(uniform, (14, 14), 16)[0] == pytest.approx(116.49, abs=0.005)
    identity = np.eye(n)[None, None]
    assert mean_attention_distance(identity, (14, 14), 16)[0] == pytest.approx(0.0, abs=1e-6)


def np_distance(w, grid, patch, prefix, renormalize):
    """Per-query loop: Σ_k A[q, k]·‖c(q) − c(k)‖, mean over queries, images (float64)."""
    h, wd = grid
    centres = [(i * patch, j * patch) for i in range(h) for j in range(wd)]
    b, heads = w.shape[:2]
    out = np.zeros(heads)
    for hd in range(heads):
        tot = 0.0
        for img in range(b):
            for q in range(h * wd):
                row = w[img, hd, prefix + q, prefix:].astype(np.float64)
                if renormalize:
                    row = row / row.sum()
                tot += sum(
                    row[k] * np.hypot(centres[q][0] - centres[k][0], centres[q][1] - centres[k][1])
                    for k in range(h * wd)
                )
        out[hd] = tot / (b * h * wd)
    return out


@pytest.mark.parametrize("renormalize", [False, True])
def test_attention_distance_with_prefix_tokens_matches_numpy(renormalize):
    logits = rng.normal(size=(2, 3, 2 + 12, 2 + 12)) * 2
    w = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    got = mean_attention_distance(w, (3, 4), 8, num_prefix=2, renormalize=renormalize)
    np.testing.assert_allclose(got, np_distance(w, (3, 4), 8, 2, renormalize), rtol=1e-5)


def test_nest_distances_are_within_block_in_input_pixels():
    model = create_model(
        "nest_tiny_cifar",
        num_classes=10,
        img_size=16,
        rngs=nnx.Rngs(0),
        patch_size=2,
        block_size=4,
        dims=(8, 16),
        heads=(2, 2),
        depths=(1, 1),
    )
    geo = layer_geometry(model.config)
    assert geo == [((4, 4), 2.0), ((4, 4), 4.0)]  # patch 2 px, 4×4 blocks; level 1 tokens 4 px apart
    _, inter = forward_fn(model, "attention")(rng.normal(size=(2, 16, 16, 3)).astype(np.float32))
    d = model_attention_distances(inter["attention"], model.config)
    # level l: every block of the level, per head, in pixels of the 16-px input
    for lvl, w in enumerate(inter["attention"]):
        w = np.asarray(w)  # (B, T, h, 16, 16)
        flat = w.reshape(-1, *w.shape[2:]).transpose(1, 0, 2, 3)  # (h, B·T, 16, 16)
        want = np_distance(flat.transpose(1, 0, 2, 3), (4, 4), 2.0 * 2**lvl, 0, False)
        np.testing.assert_allclose(np.asarray(d[lvl]).mean(0), want, rtol=1e-5)


def test_norm_ratios_on_a_layer_with_a_known_zero_branch():
    layer = TransformerLayer(8, 2, 16, rngs=nnx.Rngs(0))
    layer.mlp.fc2.kernel[...] = jnp.zeros_like(layer.mlp.fc2.kernel[...])  # MLP branch ≡ 0
    x = jnp.asarray(rng.normal(size=(3, 1 + 6, 8)) + 1.0, jnp.float32)
    from nest_jax.models.intermediates import Recorder

    rec = Recorder("residuals")
    y = layer(x, rec=rec)
    inter = rec.values
    np.testing.assert_allclose(inter["mlp_in"][0], y, atol=1e-6)  # zero branch: the layer is z + attn(z)
    r = norm_ratios(inter, "vit", prefix=1, token_names=("cls",))
    assert np.isinf(r["mlp/cls"]).all() and np.isinf(r["mlp/spatial"]).all()
    z, f = np.asarray(x, np.float64), np.asarray(inter["attn_branch"][0], np.float64)
    nz, nf = np.linalg.norm(z, axis=-1), np.linalg.norm(f, axis=-1)
    assert r["attn/cls"][0] == pytest.approx(nz[:, 0].mean() / nf[:, 0].mean(), rel=1e-5)
    assert r["attn/spatial"][0] == pytest.approx(nz[:, 1:].mean() / nf[:, 1:].mean(), rel=1e-5)


def test_resnet_norm_ratios_from_block_residuals():
    model = create_model(
        "resnet50", num_classes=10, img_size=32, rngs=nnx.Rngs(0), layers=(1, 1), widths=(32, 64), zero_init_last=True
    )
    _, inter = forward_fn(model, ("layers", "residuals"))(rng.normal(size=(2, 32, 32, 3)).astype(np.float32))
    assert len(inter["layers"]) == len(inter["block_in"]) == 2
    r = norm_ratios(inter, "resnet")
    assert np.isinf(r["block/spatial"]).all()  # zero-initialized last norm: every branch is exactly 0
    model.stages[1][0].norm3.scale[...] = jnp.full_like(model.stages[1][0].norm3.scale[...], 0.5)
    _, inter = forward_fn(model, ("layers", "residuals"))(rng.normal(size=(2, 32, 32, 3)).astype(np.float32))
    r = norm_ratios(inter, "resnet")
    z, f = (np.asarray(inter[k][1], np.float64) for k in ("block_in", "block_branch"))
    want = np.linalg.norm(z, axis=-1).mean() / np.linalg.norm(f, axis=-1).mean()
    assert r["block/spatial"][1] == pytest.approx(want, rel=1e-5)
    np.testing.assert_allclose(inter["layers"][1], np.maximum(z + f, 0), atol=1e-5)  # v1: ReLU(z + f(z))


def test_skip_removed_layers_drop_the_residual_sum():
    kw = dict(num_classes=10, img_size=16, patch_size=4, dim=16, depth=2, num_heads=2, mlp_dim=32)
    normal = create_model("vit_tiny_patch16_224", rngs=nnx.Rngs(0), **kw)
    ablated = create_model("vit_tiny_patch16_224", rngs=nnx.Rngs(0), skip_removed=(0,), **kw)
    x = jnp.asarray(rng.normal(size=(2, 16, 16, 3)), jnp.float32)
    _, a = forward_fn(ablated, ("layers", "residuals"))(x)
    _, b = forward_fn(normal, ("layers", "residuals"))(x)
    np.testing.assert_allclose(a["mlp_in"][0], a["attn_branch"][0], atol=1e-6)  # z ← f(z), no skip
    np.testing.assert_allclose(a["layers"][0], a["mlp_branch"][0], atol=1e-6)
    np.testing.assert_allclose(a["layers"][1], a["mlp_in"][1] + a["mlp_branch"][1], atol=1e-6)  # layer 1 kept
    np.testing.assert_allclose(b["layers"][0], b["mlp_in"][0] + b["mlp_branch"][0], atol=1e-6)
    with pytest.raises(ValueError, match="skip_removed"):
        create_model("vit_tiny_patch16_224", rngs=nnx.Rngs(0), skip_removed=(5,), **kw)
