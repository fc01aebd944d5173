"""Position-table resizing against scipy / torch / timm, and fitting weights to a new resolution and head."""

import logging

import numpy as np
import pytest
import scipy.ndimage
import torch
from flax import nnx
from timm.layers import resample_abs_pos_embed

from nest_jax.convert import Weights, adapt_params, load_into, param_shapes, resize_pos_embed
from nest_jax.convert.common import path_str
from nest_jax.convert.resize import METHODS, resize_grid
from nest_jax.errors import UserError

# (old grid, new grid): upsampling, downsampling, non-square both ways, a 1-cell output.
GRIDS = [((7, 7), (12, 12)), ((12, 12), (5, 5)), ((4, 6), (7, 3)), ((2, 3), (9, 8)), ((7, 7), (1, 1))]


def table(prefix, grid, dim=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((1, prefix + grid[0] * grid[1], dim)).astype(np.float32)


@pytest.mark.parametrize("prefix", [0, 1, 2])
@pytest.mark.parametrize("method", METHODS)
def test_resize_pos_embed_keeps_prefix_rows_and_is_identity_on_same_grid(prefix, method):
    pos = table(prefix, (4, 6))
    assert resize_pos_embed(pos, num_prefix=prefix, old_grid=(4, 6), new_grid=(4, 6), method=method) is pos
    if prefix == 1:  # square tables need no old_grid
        sq = table(1, (5, 5))
        assert resize_pos_embed(sq, num_prefix=1, new_grid=(5, 5), method=method) is sq
    out = resize_pos_embed(pos, num_prefix=prefix, old_grid=(4, 6), new_grid=(5, 3), method=method)
    assert out.shape == (1, prefix + 15, 5) and out.dtype == pos.dtype
    np.testing.assert_array_equal(out[:, :prefix], pos[:, :prefix])


@pytest.mark.parametrize("old,new", GRIDS)
def test_bicubic_matches_torch_interpolate(old, new):
    """DeiT's resize: F.interpolate(bicubic, align_corners=False). torch computes in float32: 1e-5 covers its round-off."""
    grid = table(0, old)[0].reshape(*old, 5)
    ref = (
        torch.nn.functional.interpolate(
            torch.from_numpy(grid).permute(2, 0, 1)[None], size=new, mode="bicubic", align_corners=False
        )[0]
        .permute(1, 2, 0)
        .numpy()
    )
    np.testing.assert_allclose(resize_grid(grid, new, "bicubic"), ref, atol=1e-5)


@pytest.mark.parametrize("old,new", GRIDS)
@pytest.mark.parametrize("prefix", [0, 2])
def test_bicubic_aa_matches_timm_resample_abs_pos_embed(old, new, prefix):
    """timm's default (antialiased bicubic), whole table with its prefix rows; float32 round-off again."""
    pos = table(prefix, old)
    ref = resample_abs_pos_embed(
        torch.from_numpy(pos), new_size=list(new), old_size=list(old), num_prefix_tokens=prefix
    ).numpy()
    ours = resize_pos_embed(pos, num_prefix=prefix, old_grid=old, new_grid=new, method="bicubic_aa")
    np.testing.assert_allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("old,new", GRIDS)
def test_linear_matches_scipy_zoom_order1(old, new):
    """The official ViT resize. Both sides compute in float64, so they agree to 1e-12."""
    grid = table(0, old)[0].reshape(*old, 5).astype(np.float64)
    ref = scipy.ndimage.zoom(grid, (new[0] / old[0], new[1] / old[1], 1), order=1)
    assert ref.shape[:2] == new
    np.testing.assert_allclose(resize_grid(grid, new, "linear"), ref, atol=1e-12)


def test_resize_pos_embed_needs_old_grid_when_not_square():
    with pytest.raises(ValueError, match="not a square grid"):
        resize_pos_embed(table(1, (4, 6)), num_prefix=1, new_grid=(5, 5))


def tiny(num_classes=10, img_size=32, tokens=("cls",), seed=0):
    from nest_jax.models import create_model

    return create_model(
        "vit_tiny_patch16_224",
        img_size=img_size,
        patch_size=8,
        depth=1,
        num_classes=num_classes,
        prefix_tokens=tokens,
        rngs=nnx.Rngs(seed),
    )


def flat(model):
    return {path_str(k): np.asarray(v[...]) for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def test_adapt_resizes_pos_embed_and_reinitializes_heads_whose_class_count_differs(caplog):
    tokens = ("cls", "dist")
    src = flat(tiny(num_classes=10, img_size=32, tokens=tokens, seed=0))  # grid 4x4
    dst = tiny(num_classes=7, img_size=48, tokens=tokens, seed=1)  # grid 6x6
    before = flat(dst)
    with caplog.at_level(logging.INFO, logger="nest_jax.convert.resize"):
        adapted = adapt_params(src, dst, resize_method="linear")
    assert not {"head/kernel", "head/bias", "head_dist/kernel", "head_dist/bias"} & adapted.keys()
    assert "re-initializing head_dist/kernel" in caplog.text and "resized pos_embed" in caplog.text
    np.testing.assert_array_equal(
        adapted["pos_embed"], resize_pos_embed(src["pos_embed"], num_prefix=2, new_grid=(6, 6), method="linear")
    )
    fresh = load_into(dst, Weights(src), resize_method="linear")
    assert sorted(fresh) == ["head/bias", "head/kernel", "head_dist/bias", "head_dist/kernel"]
    after = flat(dst)
    for k in after:
        expected = before[k] if k in fresh else adapted[k]
        np.testing.assert_array_equal(after[k], expected, err_msg=k)
    assert np.all(np.isfinite(np.asarray(dst(np.zeros((1, 48, 48, 3), np.float32)))))


def test_adapt_keeps_matching_heads_and_drops_heads_the_model_lacks():
    src = flat(tiny(num_classes=10))
    same = adapt_params(src, tiny(num_classes=10, seed=1))
    assert same.keys() == src.keys() and all(same[k] is src[k] for k in src)
    headless = adapt_params(src, tiny(num_classes=0, seed=1))
    assert headless.keys() == src.keys() - {"head/kernel", "head/bias"}
    assert set(param_shapes(tiny(num_classes=0))) == headless.keys()


def test_load_into_still_reports_real_mismatches():
    src = flat(tiny())
    src["layers/0/mlp/fc1/kernel"] = src["layers/0/mlp/fc1/kernel"][:, :10]
    with pytest.raises(UserError, match="shape mismatch for 'layers/0/mlp/fc1/kernel'"):
        load_into(tiny(seed=1), Weights(src))


def test_adapt_hands_nest_level_tables_to_the_nest_resizer():
    """NesT at twice the resolution: same block count, blocks 4x4 -> 8x8 (official per-block resize)."""
    from nest_jax.convert.nest import resize_nest_pos_embed
    from nest_jax.models import create_model

    kw = dict(dims=(16,) * 4, depths=(1,) * 4, heads=(2,) * 4, num_classes=3)
    # Shapes are all adapt_params needs: abstract models (no initialisation) keep this test cheap.
    src_shapes = param_shapes(nnx.eval_shape(lambda: create_model("nest_tiny_cifar", img_size=32, **kw)))
    dst = nnx.eval_shape(lambda: create_model("nest_tiny_cifar", img_size=64, **kw))
    rng = np.random.default_rng(0)
    src = {k: rng.standard_normal(s).astype(np.float32) for k, s in src_shapes.items()}
    adapted = adapt_params(src, dst)
    assert adapted.keys() == src.keys()
    for key, shape in param_shapes(dst).items():
        if not key.endswith("pos_embed"):
            assert adapted[key] is src[key]
            continue
        level = int(key.split("/")[1])
        assert adapted[key].shape == shape
        np.testing.assert_array_equal(adapted[key], resize_nest_pos_embed(src[key], 8 // 2**level, 8))
