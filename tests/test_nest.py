"""NesT structure: parameter counts, blockify order, TF-SAME pooling, sizes, intermediates and taps,
official-tree round trip and layout, position-embedding resize."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nest_jax.convert.nest import load_official_nest, params_to_official_nest, resize_nest_pos_embed
from nest_jax.models import create_model
from nest_jax.models.blocks import BlockAggregation, blockify, deblockify, max_pool_3x3_s2
from nest_jax.models.nest import Nest, NestConfig

# docs/models.md: (variant, classes) -> exact parameter count.
PARAM_COUNTS = {
    ("nest_tiny", 1000): 17_057_608,
    ("nest_small", 1000): 38_351_176,
    ("nest_base", 1000): 67_723_368,
    ("nest_tiny_cifar", 10): 6_006_730,
    ("nest_small_cifar", 10): 22_849_930,
    ("nest_base_cifar", 10): 89_050_378,
    ("nest_tiny_cifar", 100): 6_024_100,
    ("nest_small_cifar", 100): 22_884_580,
    ("nest_base_cifar", 100): 89_119_588,
}
SMALL = dict(
    img_size=16, patch_size=1, block_size=4, dims=(16, 24, 32), heads=(2, 3, 4), depths=(1, 1, 1), num_classes=5
)


@functools.cache
def _abstract_split(config: NestConfig):
    return nnx.split(nnx.eval_shape(lambda: Nest(config, rngs=nnx.Rngs(0))))


def random_model(config: NestConfig, seed: int = 0) -> Nest:
    """A model with random parameters filled in NumPy (random init compiles one program per shape: slow)."""
    graphdef, state = _abstract_split(config)
    rng = np.random.default_rng(seed)

    def fill(s):
        if jax.dtypes.issubdtype(s.dtype, jax.dtypes.prng_key):  # dropout / drop-path streams
            return jax.random.key(seed)
        if not jnp.issubdtype(s.dtype, jnp.floating):
            return jnp.zeros(s.shape, s.dtype)
        return jnp.asarray(rng.normal(0, 0.1, s.shape).astype(s.dtype))

    state = jax.tree.map(fill, state)
    return nnx.merge(graphdef, state)


def n_params(model) -> int:
    return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))


@functools.cache
def abstract(name: str, classes: int = 1000, **kw) -> Nest:
    return nnx.eval_shape(lambda: create_model(name, num_classes=classes, rngs=nnx.Rngs(0), **kw))


@pytest.mark.parametrize("name,classes", sorted(PARAM_COUNTS))
def test_nest_param_counts(name, classes):
    assert n_params(abstract(name, classes)) == PARAM_COUNTS[name, classes]


def test_variant_structure_and_cifar_default_size():
    tiny = abstract("nest_tiny")
    assert tiny.config.levels == 3 and tiny.config.blocks_per_level == ((4, 4), (2, 2), (1, 1))
    assert [lv.pos_embed.shape for lv in tiny.levels] == [(1, 16, 196, 96), (1, 4, 196, 192), (1, 1, 196, 384)]
    assert tiny.levels[0].pool is None and tiny.levels[1].pool.conv.kernel.shape == (3, 3, 96, 192)
    # Drop path: linspace(0, 0.2) over all 12 layers, across levels.
    rates = [layer.drop_path.rate for lv in tiny.levels for layer in lv.layers]
    np.testing.assert_allclose(rates, np.linspace(0, 0.2, 12))
    cifar = abstract("nest_tiny_cifar", 10)
    assert cifar.config.img_size == 32 and cifar.config.levels == 4 and cifar.config.attention == "multi_query"
    assert cifar.levels[0].layers[0].attn.kv.shape == (192, 2, 1, 64)  # one shared K/V head
    mh = abstract("nest_tiny_cifar", 10, attention="multi_head", depths=(1,) * 4)
    assert mh.levels[0].layers[0].attn.qkv.shape == (192, 3, 3, 64)
    # Another resolution keeps the block count and grows the blocks (official fine-tuning).
    big = abstract("nest_tiny", img_size=448, depths=(1, 1, 1))
    assert big.config.block_size == 28 and big.config.blocks_per_level[0] == (4, 4)


def test_impossible_image_size_lists_sizes_that_work():
    with pytest.raises(ValueError, match=r"Sizes that work: 224 with block_size=14.*multiple of 16"):
        NestConfig(img_size=200)
    with pytest.raises(ValueError, match=r"Sizes that work: 16 with block_size=4"):
        NestConfig(**{**SMALL, "img_size": 24})
    with pytest.raises(ValueError, match="208"):  # a working size near the request is offered
        create_model("nest_tiny", img_size=200, rngs=nnx.Rngs(0))


def test_blockify_raster_order_and_inverse():
    # 4×4 map of pixel ids, blocks 2×2: block 0 = top-left [0,1,4,5], block 1 = top-right [2,3,6,7], …
    img = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    blocks = np.asarray(blockify(jnp.asarray(img), 2))[0, :, :, 0]
    np.testing.assert_array_equal(blocks, [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]])
    x = np.random.default_rng(0).normal(size=(2, 12, 12, 3)).astype(np.float32)
    np.testing.assert_array_equal(deblockify(blockify(jnp.asarray(x), 3), 4), x)


def test_tf_same_pool_pads_bottom_right_only():
    """4×4 input, 3×3 windows, stride 2. TF SAME pads (0, 1): windows cover rows/cols {0,1,2} and
    {2,3,pad}. Symmetric pads (1, 1): windows cover {pad,0,1} and {1,2,3}."""

    def pool(spike_at, padding):
        x = np.zeros((1, 4, 4, 1), np.float32)
        x[0, spike_at, spike_at, 0] = 3.0
        return np.asarray(max_pool_3x3_s2(jnp.asarray(x), padding))[0, :, :, 0]

    np.testing.assert_array_equal(pool(2, "tf_same"), [[3, 3], [3, 3]])  # index 2 is in both windows
    np.testing.assert_array_equal(pool(2, "symmetric"), [[0, 0], [0, 3]])
    np.testing.assert_array_equal(pool(1, "tf_same"), [[3, 0], [0, 0]])
    np.testing.assert_array_equal(pool(1, "symmetric"), [[3, 3], [3, 3]])  # index 1 is in both windows
    # The padding value is −inf, never 0: an all-negative map pools to its own values.
    assert float(max_pool_3x3_s2(-jnp.ones((1, 4, 4, 1)), "tf_same").max()) == -1.0
    assert float(max_pool_3x3_s2(-jnp.ones((1, 4, 4, 1)), "symmetric").max()) == -1.0


def test_block_aggregation_shapes():
    agg = nnx.eval_shape(lambda: BlockAggregation(16, 24, rngs=nnx.Rngs(0)))
    out = nnx.eval_shape(lambda m, x: m(x), agg, jax.ShapeDtypeStruct((2, 8, 8, 16), jnp.float32))
    assert out.shape == (2, 4, 4, 24)
    with pytest.raises(ValueError, match="even"):
        nnx.eval_shape(lambda m, x: m(x), agg, jax.ShapeDtypeStruct((2, 7, 7, 16), jnp.float32))


def test_capture_shapes_and_taps_give_feature_gradients():
    model = random_model(NestConfig(**SMALL))
    c = model.config
    graphdef, state = nnx.split(model)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 16, 16, 3)), jnp.float32)
    zeros = [jnp.zeros((2, h, w, d)) for (h, w), d in zip(c.feature_sizes, c.dims)]

    @jax.jit
    def run(state, taps):  # the pure-function use of the taps a GradCAT analysis makes
        def logit(taps):
            logits, inter = nnx.merge(graphdef, state)(x, capture="all", taps=taps)
            return logits[:, 3].sum(), (logits, inter)

        grads, (logits, inter) = jax.grad(logit, has_aux=True)(taps)
        model = nnx.merge(graphdef, state)
        top = inter["features"][-1]  # ∂logit/∂(top map) of the head alone: LN -> mean -> Dense
        head = jax.grad(lambda f: model.head(model.norm(f).mean(axis=(1, 2)))[:, 3].sum())(top)
        return logits, inter, grads, model(x), head

    logits, inter, grads, plain, head = run(state, zeros)
    assert logits.shape == (2, 5) and inter["pre_logits"].shape == (2, 32)
    assert [f.shape for f in inter["features"]] == [(2, 16, 16, 16), (2, 8, 8, 24), (2, 4, 4, 32)]
    assert [a.shape for a in inter["attention"]] == [(2, 16, 2, 16, 16), (2, 4, 3, 16, 16), (2, 1, 4, 16, 16)]
    assert inter["layers"][1].shape == (2, 4, 16, 24) and len(inter["attn_branch"]) == 3
    np.testing.assert_allclose(plain, logits, atol=1e-5)  # zero taps change nothing
    np.testing.assert_allclose(inter["features"][0], deblockify(inter["layers"][0], 4), atol=1e-6)
    # ∂logit/∂(top map) through the taps equals the gradient of the head alone.
    np.testing.assert_allclose(grads[-1], head, atol=1e-5)
    assert all(g.shape == z.shape and float(jnp.abs(g).max()) > 0 for g, z in zip(grads, zeros))


def _official_attention(p: dict, x: np.ndarray, multi_query: bool) -> np.ndarray:
    """The official MultiHeadAttention / MultiQueryAttention (libml/self_attention.py) in NumPy float64."""
    q = np.einsum("nc,chd->hnd", x, p["DenseGeneral_0"]["kernel"]) + p["DenseGeneral_0"]["bias"][:, None]
    d = q.shape[-1]
    if multi_query:
        kv = x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]  # (N, 2d) = [k | v], shared by heads
        k, v = kv[None, :, :d], kv[None, :, d:]
    else:
        kv = np.einsum("nc,chd->hnd", x, p["DenseGeneral_1"]["kernel"]) + p["DenseGeneral_1"]["bias"][:, None]
        k, v = kv[..., :d], kv[..., d:]
    logits = np.einsum("hld,hmd->hlm", q / np.sqrt(d), np.broadcast_to(k, q.shape))
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    out = np.einsum("hlm,hmd->hld", w, np.broadcast_to(v, q.shape))
    return np.einsum("hld,hdf->lf", out, p["proj_kernel"]) + p["bias"]


@pytest.mark.parametrize("attention", ["multi_head", "multi_query"])
def test_official_tree_round_trip_and_layout(attention):
    cfg = NestConfig(**{**SMALL, "attention": attention})
    model = random_model(cfg, seed=2)
    tree = params_to_official_nest(model)
    name = "MultiQueryAttention_0" if attention == "multi_query" else "MultiHeadAttention_0"
    assert sorted(tree) == sorted(
        ["PatchEmbedding_0", "LayerNorm_0", "Dense_0"]
        + [f"PositionEmbedding_{i}" for i in range(3)]
        + [f"EncoderNDBlock_{k}" for k in range(3)]
        + [f"ConvPool_{i}" for i in range(2)]
    )
    attn = tree["EncoderNDBlock_1"][name]  # level 1: C=24, 3 heads of 8
    assert attn["DenseGeneral_0"]["kernel"].shape == (24, 3, 8) and attn["proj_kernel"].shape == (3, 8, 24)
    kv_shape = attn["Dense_0"]["kernel"].shape if attention == "multi_query" else attn["DenseGeneral_1"]["kernel"].shape
    assert kv_shape == ((24, 16) if attention == "multi_query" else (24, 3, 16))
    # Our attention on the layout-converted weights = the official attention math on the tree.
    x = np.random.default_rng(3).normal(size=(16, 24))
    ours = nnx.jit(lambda a, x: a(x)[0])(model.levels[1].layers[0].attn, jnp.asarray(x, jnp.float32)[None])
    ref = _official_attention(jax.tree.map(np.float64, attn), x, attention == "multi_query")
    np.testing.assert_allclose(np.asarray(ours[0]), ref, atol=2e-5)
    # Export -> flat '/'-keyed (as from .npz) -> load into a fresh model -> same logits.
    flat = {"/".join(k.key for k in path): v for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
    fresh = random_model(cfg, seed=9)
    load_official_nest(fresh, flat)
    img = jnp.asarray(np.random.default_rng(4).normal(size=(1, 16, 16, 3)), jnp.float32)
    fwd = nnx.jit(lambda m, x: m(x))
    np.testing.assert_allclose(fwd(fresh, img), fwd(model, img), atol=1e-6)
    load_official_nest(fresh, {"params": tree})  # a clu checkpoint's `params` root is accepted
    with pytest.raises(ValueError, match=r"shape mismatch for 'levels/0/pos_embed'"):
        bad = {**flat, "PositionEmbedding_0/pos_embedding": np.zeros((1, 16, 9, 16), np.float32)}
        load_official_nest(fresh, bad)
    other = NestConfig(**{**SMALL, "attention": "multi_head" if attention == "multi_query" else "multi_query"})
    with pytest.raises(ValueError, match=f"uses {attention} attention"):
        load_official_nest(nnx.eval_shape(lambda: Nest(other, rngs=nnx.Rngs(0))), flat)


def test_resize_nest_pos_embed_per_block_and_global():
    rng = np.random.default_rng(5)
    pos = rng.normal(size=(1, 4, 9, 8)).astype(np.float32)  # 2×2 blocks of 3×3 tokens
    np.testing.assert_allclose(resize_nest_pos_embed(pos, 2, 3), pos, atol=1e-6)  # same size: identity
    # Per block: a block that is constant stays constant; the block count stays.
    const = np.broadcast_to(rng.normal(size=(1, 4, 1, 8)), (1, 4, 9, 8)).astype(np.float32)
    out = resize_nest_pos_embed(const, 2, 6)
    assert out.shape == (1, 4, 36, 8)
    np.testing.assert_allclose(out, np.broadcast_to(const[:, :, :1], out.shape), atol=1e-6)
    # Global: the whole 6×6 map is resized, so tokens near block borders mix neighbouring blocks.
    glob = resize_nest_pos_embed(const, 2, 6, mode="global")
    assert glob.shape == (1, 4, 36, 8) and not np.allclose(glob, out, atol=1e-3)
    assert resize_nest_pos_embed(pos, 4, 3, mode="global").shape == (1, 16, 9, 8)
    with pytest.raises(ValueError, match="keeps the block grid"):
        resize_nest_pos_embed(pos, 4, 3)
