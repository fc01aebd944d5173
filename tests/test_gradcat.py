"""GradCAT on NesT: a hand-built model whose evidence sits in one known block at every level, the
traversal against a NumPy loop, scores against finite differences, nesting of the chosen boxes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nest_jax.analysis import gradcat, traverse
from nest_jax.convert import assign_params, param_shapes
from nest_jax.models import create_model

# Small widths/depths keep compilation short; the geometry (img, patch, block, levels) is the variant's.
CIFAR_SMALL = dict(dims=(8,) * 4, depths=(1,) * 4, heads=(1,) * 4)
EPS_INPUT = 1e-5


def evidence_model(cls: int):
    """nest_tiny_cifar geometry, weights built so the map of a one-pixel image is zero outside the
    pixel's footprint, and nonzero only along ONE token per level.

    Every residual branch is zero (layers are identities), position embeddings and biases are zero,
    aggregation convs are the identity at the kernel centre. Inputs are ~1e-5, where every
    LayerNorm (eps 1e-6) is linear: LN(v) ≈ (v - mean v)/1e-3, and the norm scales 1e-3 undo the
    gain. The network from any level's map to Y_c is then positively homogeneous (max-pool, linear
    maps), so Euler's identity gives Σ A·∂Y/∂A = Y_c - b_c > 0 on the footprint, while every other
    block has A = 0 exactly and scores 0.
    """
    model = create_model("nest_tiny_cifar", num_classes=10, rngs=nnx.Rngs(0), **CIFAR_SMALL)
    p = np.array([1, 1, 1, 1, -1, -1, -1, -1], np.float32)  # mean 0: survives LayerNorm centring
    arrays = {k: np.zeros(s, np.float32) for k, s in param_shapes(model).items()}
    for k in arrays:
        if k.endswith("norm1/scale") or k.endswith("norm2/scale"):
            arrays[k][:] = 1.0
        elif k.endswith("pool/norm/scale") or k == "norm/scale":
            arrays[k][:] = 1e-3
        elif k.endswith("pool/conv/kernel"):
            arrays[k][1, 1] = np.eye(8)
    arrays["patch_embed/proj/kernel"][0, 0, 0] = p
    arrays["head/kernel"][:, cls] = p
    assign_params(model, arrays)
    return model


def one_pixel_image(y: int, x: int):
    img = np.zeros((1, 32, 32, 3), np.float32)
    img[0, y, x] = EPS_INPUT
    return jnp.asarray(img)


# Pixels (4r+3, 4c+3) with r, c odd: a 3×3 stride-2 TF-SAME max-pool sends such a token to ONE
# token of the next level, again of that form, so the footprint never straddles two blocks.
@pytest.mark.parametrize("pixel, path", [((23, 15), [2, 1, 3]), ((7, 31), [1, 1, 3])])
@pytest.mark.parametrize("source", ["child", "parent"])
def test_gradcat_follows_evidence_in_one_block_per_level(pixel, path, source):
    cls = 3
    model = evidence_model(cls)
    r = gradcat(model, one_pixel_image(*pixel), source=source)  # target=None: the predicted class
    assert int(r.target[0]) == cls
    np.testing.assert_array_equal(np.asarray(r.path[0]), path)
    # Expected box at each level: the block (edge 32/2^k px) that contains the pixel.
    y, x = pixel
    for k, box in enumerate(np.asarray(r.boxes[0])):
        edge = 32 // 2**k
        assert tuple(box) == ((y // edge) * edge, (x // edge) * edge, (y // edge + 1) * edge, (x // edge + 1) * edge)
    # Only the chosen block of every level below the top scores; all others are exactly 0.
    for lvl in range(3):
        s = np.asarray(r.scores[lvl][0])
        row, col = np.asarray(r.nodes[0, 3 - lvl])
        assert s[row, col] > 0
        assert np.count_nonzero(s) == 1


def test_traverse_matches_numpy_tree_walk():
    rng = np.random.default_rng(0)
    steps = [rng.normal(size=(5, 2 ** (k + 1), 2 ** (k + 1))).astype(np.float32) for k in range(3)]
    path, nodes = traverse([jnp.asarray(s) for s in steps])
    for b in range(5):
        r = c = 0
        for k, s in enumerate(steps):
            kids = [s[b, 2 * r + i // 2, 2 * c + i % 2] for i in range(4)]
            best = int(np.argmax(kids))
            r, c = 2 * r + best // 2, 2 * c + best % 2
            assert int(path[b, k]) == best
            assert tuple(np.asarray(nodes[b, k + 1])) == (r, c)


@pytest.fixture(scope="module")
def random_cifar():
    return create_model("nest_tiny_cifar", num_classes=10, rngs=nnx.Rngs(1), **CIFAR_SMALL)


def test_gradcat_scores_match_finite_differences(random_cifar):
    """s_l(block) = d/dα Y_c(A_l + α·A_l·1_block) at α = 0, by central differences in float32."""
    model = random_cifar
    x = jax.random.normal(jax.random.key(2), (1, 32, 32, 3))
    r = gradcat(model, x, target=jnp.array([4]))
    _, inter = model(x, capture=("features",))
    feats = inter["features"]
    b = model.config.block_size
    forward = nnx.jit(lambda m, taps: m(x, taps=taps)[0, 4])

    def logit(level, row, col, alpha):
        taps = [jnp.zeros_like(f) for f in feats]
        mask = jnp.zeros(feats[level].shape[1:3]).at[row * b : (row + 1) * b, col * b : (col + 1) * b].set(1.0)
        taps[level] = alpha * feats[level] * mask[None, :, :, None]
        return float(forward(model, taps))

    for level, (row, col) in [(0, (5, 2)), (1, (1, 3)), (2, (1, 0))]:
        h = 1e-3  # small: a larger step crosses max-pool kinks (1e-2 is off by 17% at level 0)
        fd = (logit(level, row, col, h) - logit(level, row, col, -h)) / (2 * h)
        got = float(r.scores[level][0, row, col])
        np.testing.assert_allclose(got, fd, rtol=2e-2, atol=2e-6)


def test_top_level_raw_score_vanishes_by_layernorm_invariance(random_cifar):
    """Y reads the top map only through a per-token LayerNorm, invariant to scaling a token."""
    r = gradcat(random_cifar, jax.random.normal(jax.random.key(3), (2, 32, 32, 3)))
    top = float(jnp.abs(r.scores[-1]).max())
    below = float(jnp.abs(r.scores[-2]).max())
    assert top < 1e-3 * below


def test_gradcat_boxes_nest_on_nest_tiny_and_run_under_plain_jit():
    """nest_tiny geometry (224 px, patch 4, blocks 14×14, 16→4→1): each chosen box holds the next."""
    model = create_model(
        "nest_tiny", num_classes=5, rngs=nnx.Rngs(0), dims=(12, 24, 48), depths=(1, 1, 1), heads=(1, 2, 4)
    )
    x = jax.random.normal(jax.random.key(4), (2, 224, 224, 3))
    r = gradcat(model, x, target=jnp.array([0, 3]))
    assert [s.shape for s in r.scores] == [(2, 4, 4), (2, 2, 2), (2, 1, 1)]
    boxes = np.asarray(r.boxes)
    for b in range(2):
        np.testing.assert_array_equal(boxes[b, 0], [0, 0, 224, 224])
        for k in range(2):
            outer, inner = boxes[b, k], boxes[b, k + 1]
            assert outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]
            assert inner[2] - inner[0] == (outer[2] - outer[0]) // 2
    # the same computation as a pure function of (graphdef, state, images) under jax.jit
    graphdef, state = nnx.split(model)
    pure = jax.jit(lambda st, im: gradcat(nnx.merge(graphdef, st), im, target=jnp.array([0, 3])).path)
    np.testing.assert_array_equal(np.asarray(pure(state, x)), np.asarray(r.path))
