"""Generators and discriminators of the GAN family: shapes and range at every size, the block
de-aggregation as the exact inverse of block aggregation by space-to-depth, the 4-ary block tree,
spectral normalization against an SVD, and the NesT generator's parameter count by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nest_jax.models import create_model, list_models
from nest_jax.models.blocks import blockify, deblockify
from nest_jax.models.nest_gan import BlockDeaggregation, depth_to_space, space_to_depth
from nest_jax.models.spectral_norm import spectral_sigma

TINY = dict(
    nest_gan_32=dict(dims=(16, 8, 8, 8), depths=(1, 1, 1, 1), heads=(1, 1, 1, 1)),
    nest_gan_64=dict(dims=(16, 8, 8, 8, 8), depths=(1, 1, 1, 1, 1), heads=(1, 1, 1, 1, 1)),
    nest_gan_128=dict(dims=(16, 8, 8, 8, 8), depths=(1, 1, 1, 1, 1), heads=(1, 1, 1, 1, 1)),
    sagan_generator_32=dict(widths=(8, 8, 8, 8)),
    sagan_generator_64=dict(widths=(8, 8, 8, 8, 8)),
    vit_generator_32=dict(dim=16, depth=1, num_heads=2, patch_size=4),
    vit_generator_64=dict(dim=16, depth=1, num_heads=2, patch_size=8),
)


def _params(m):
    return sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.Param)))


@pytest.mark.parametrize("name", sorted(TINY))
def test_generator_shapes_and_range(name):
    assert name in list_models("*")
    size = int(name.split("_")[-1])
    g = create_model(name, rngs=nnx.Rngs(0), latent_dim=8, out_chans=3, **TINY[name])
    z = 3.0 * jax.random.normal(jax.random.key(0), (2, 8))
    y = g(z)
    assert y.shape == (2, size, size, 3)
    assert bool(jnp.all(jnp.abs(y) <= 1.0)) and float(jnp.std(y)) > 0  # tanh range, not constant
    assert not np.allclose(np.asarray(y[0]), np.asarray(y[1]))  # depends on z


@pytest.mark.parametrize("kind", ["pixel_shuffle", "nearest_conv", "transposed_conv"])
def test_deaggregation_variants_give_children_blocks(kind):
    """Each parent block only influences its own 2×2 child blocks (pixel shuffle, nearest + 3×3 conv
    and transposed conv 4×4 reach at most one token over the block edge: checked exactly for pixel
    shuffle, approximately for the others by where the change concentrates)."""
    deagg = BlockDeaggregation(6, 5, kind=kind, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (1, 4, 16, 6))  # 2×2 grid of 4×4-token blocks
    y = deagg(x, 2)
    assert y.shape == (1, 16, 16, 5)
    dx = x.at[:, 3].add(1.0)  # perturb parent block (1, 1)
    change = np.abs(np.asarray(deagg(dx, 2) - y)).sum(axis=(0, 2, 3))  # per child block (4×4 grid)
    children = [10, 11, 14, 15]  # child blocks (2..3, 2..3) of the 4×4 child grid, raster order
    if kind == "pixel_shuffle":
        assert set(np.nonzero(change)[0]) == set(children)
    else:
        assert change[children].sum() > 0.8 * change.sum()


def test_depth_to_space_matches_a_loop():
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 2 * 2 * 5)).astype(np.float32)
    y = np.asarray(depth_to_space(jnp.asarray(x), 2))
    ref = np.zeros((2, 6, 8, 5), np.float32)
    for h in range(3):
        for w in range(4):
            for i in range(2):
                for j in range(2):
                    ref[:, 2 * h + i, 2 * w + j] = x[:, h, w, (i * 2 + j) * 5 : (i * 2 + j + 1) * 5]
    np.testing.assert_array_equal(y, ref)
    np.testing.assert_array_equal(np.asarray(space_to_depth(jnp.asarray(y), 2)), x)


def test_deaggregation_is_the_exact_inverse_of_blockify_and_space_to_depth():
    """Aggregation by space-to-depth: deblockify (grid 2g) → space-to-depth → blockify; the
    parameter-free pixel-shuffle de-aggregation undoes it bit for bit, and the converse."""
    b, g, blk, c = 2, 2, 4, 3
    x = jax.random.normal(jax.random.key(0), (b, (2 * g) ** 2, blk * blk, c))
    aggregated = blockify(space_to_depth(deblockify(x, 2 * g), 2), blk)
    assert aggregated.shape == (b, g * g, blk * blk, 4 * c)
    deagg = BlockDeaggregation(4 * c, c, project=False, rngs=nnx.Rngs(0))
    assert _params(deagg) == 0
    np.testing.assert_array_equal(np.asarray(deagg(aggregated, g)), np.asarray(x))
    parents = jax.random.normal(jax.random.key(1), (b, g * g, blk * blk, 4 * c))
    back = blockify(space_to_depth(deblockify(deagg(parents, g), 2 * g), 2), blk)
    np.testing.assert_array_equal(np.asarray(back), np.asarray(parents))


def test_nest_generator_parameter_count_by_hand():
    dims, depths, latent, n, out, p = (32, 16, 8), (2, 1, 1), 10, 16, 3, 2
    g = create_model(
        "nest_gan_32",
        rngs=nnx.Rngs(0),
        img_size=32,
        latent_dim=latent,
        out_chans=out,
        patch_size=p,
        block_size=4,
        dims=dims,
        depths=depths,
        heads=(2, 1, 1),
    )
    layer = lambda c: 4 * c + (3 * c * c + 3 * c) + (c * c + c) + (c * 4 * c + 4 * c) + (4 * c * c + c)  # noqa: E731
    expect = latent * n * dims[0] + n * dims[0]  # stem to one 4×4 block
    expect += sum((4**i) * n * d for i, d in enumerate(dims))  # per-level position embeddings
    expect += sum(k * layer(d) for k, d in zip(depths, dims))
    expect += sum(a * 4 * b + 4 * b for a, b in zip(dims[:-1], dims[1:]))  # 1×1 projections
    expect += 2 * dims[-1] + dims[-1] * p * p * out + p * p * out  # norm, RGB head
    assert _params(g) == expect


def test_spectral_norm_matches_the_largest_singular_value():
    w = jax.random.normal(jax.random.key(0), (36, 8))
    u = jax.random.normal(jax.random.key(1), (8,))
    for _ in range(50):
        sigma, u = spectral_sigma(w, u, update=True)
    top = np.linalg.svd(np.asarray(w, np.float64), compute_uv=False)[0]
    assert abs(float(sigma) - top) < 1e-4 * top
    # The discriminator's power iterates are state, advanced only in training mode.
    d = create_model(
        "sagan_discriminator_32",
        num_classes=1,
        img_size=16,
        widths=(8, 8),
        down=(True, False),
        in_chans=3,
        rngs=nnx.Rngs(0),
    )
    u0 = np.asarray(d.blocks[1].conv1.u[...])
    x = jnp.ones((2, 16, 16, 3))
    d(x, train=False)
    np.testing.assert_array_equal(np.asarray(d.blocks[1].conv1.u[...]), u0)
    assert d(x, train=True).shape == (2, 1)
    assert not np.array_equal(np.asarray(d.blocks[1].conv1.u[...]), u0)


def test_nest_discriminator_is_the_classifier_with_one_output():
    d = create_model(
        "nest_tiny_cifar",
        num_classes=1,
        img_size=32,
        in_chans=1,
        patch_size=4,
        block_size=4,
        dims=(16, 16),
        depths=(1, 1),
        heads=(1, 1),
        rngs=nnx.Rngs(0),
    )
    assert d(jnp.zeros((3, 32, 32, 1))).shape == (3, 1)
