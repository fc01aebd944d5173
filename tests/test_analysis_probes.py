"""Probes, position-embedding similarity and localization maps against NumPy float64 versions."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nest_jax.analysis.localization import LocalizationCKA, localization_score
from nest_jax.analysis.pos_embed_similarity import pos_embed_similarity
from nest_jax.analysis.probes import BIAS, logistic_probe, ridge_probe, token_probe
from nest_jax.models import create_model

rng = np.random.default_rng(0)


def np_ridge_predict(xtr, ytr, xte, classes, l2):
    mean, std = xtr.mean(0), xtr.std(0) + 1e-5
    f = lambda x: np.hstack([(x - mean) / std, np.full((len(x), 1), BIAS)])
    a, b = f(xtr.astype(np.float64)), f(xte.astype(np.float64))
    y = 2.0 * np.eye(classes)[ytr] - 1.0
    w = np.linalg.solve(a.T @ a + l2 * np.eye(a.shape[1]), a.T @ y)
    return np.argmax(b @ w, 1)


def _blobs(n, d, classes=4, noise=1.5):
    centres = rng.normal(size=(classes, d)) * 2
    y = rng.integers(0, classes, n)
    return (centres[y] + noise * rng.normal(size=(n, d))).astype(np.float32), y


@pytest.mark.parametrize("n,d", [(120, 10), (30, 50)])  # primal (n ≥ d) and dual (d > n) solves
def test_ridge_probe_matches_numpy_closed_form(n, d):
    x, y = _blobs(n + 60, d)
    got = float(ridge_probe(x[:n], y[:n], x[n:], y[n:], num_classes=4, l2=2.0))
    want = np.mean(np_ridge_predict(x[:n], y[:n], x[n:], 4, 2.0) == y[n:])
    assert got == pytest.approx(want, abs=1e-6)  # one flipped prediction would be 1/60


def test_logistic_probe_learns_separable_classes_and_chance_on_noise():
    x, y = _blobs(300, 8, noise=0.3)
    assert float(logistic_probe(x[:200], y[:200], x[200:], y[200:], num_classes=4, steps=100)) > 0.95
    noise = rng.normal(size=(300, 8)).astype(np.float32)
    assert float(logistic_probe(noise[:200], y[:200], noise[200:], y[200:], num_classes=4, steps=100)) < 0.45


def test_token_probe_matches_numpy_per_position():
    n, t, d = 40, 6, 5
    y = rng.integers(0, 3, n)
    tokens = rng.normal(size=(n, t, d)).astype(np.float32)
    tokens[:, :3, 0] += 3.0 * y[:, None]  # positions 0–2 carry the class, 3–5 do not
    got = np.asarray(token_probe(tokens[:20], y[:20], tokens[20:], y[20:], num_classes=3))
    pred = np_ridge_predict(tokens[:20].reshape(-1, d), np.repeat(y[:20], t), tokens[20:].reshape(-1, d), 3, 1.0)
    np.testing.assert_allclose(got, (pred.reshape(20, t) == y[20:, None]).mean(0), atol=1e-6)


def np_cos(table):
    t = table.reshape(-1, table.shape[-1]).astype(np.float64)
    return np.array([[a @ b / np.linalg.norm(a) / np.linalg.norm(b) for b in t] for a in t])


def test_pos_embed_similarity_vit_and_nest_levels():
    vit = create_model(
        "vit_tiny_patch16_224",
        num_classes=10,
        img_size=16,
        rngs=nnx.Rngs(0),
        patch_size=4,
        dim=8,
        depth=1,
        num_heads=2,
        mlp_dim=16,
    )
    (sim,) = pos_embed_similarity(vit)
    table = np.asarray(vit.pos_embed[...])[0, 1:]  # class-token slot dropped; 4×4 grid, raster order
    np.testing.assert_allclose(sim.reshape(16, 16), np_cos(table), atol=1e-6)
    nest = create_model(
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
    sims = pos_embed_similarity(nest)
    assert [s.shape for s in sims] == [(8, 8, 8, 8), (4, 4, 4, 4)]
    pe = np.asarray(nest.levels[0].pos_embed[...])[0]  # (T=4 blocks, N=16, C)
    # token (row, col) of the level's 8×8 map is block (row//4, col//4), in-block (row%4, col%4)
    grid = np.zeros((8, 8, 8))
    for r in range(8):
        for c in range(8):
            grid[r, c] = pe[(r // 4) * 2 + c // 4, (r % 4) * 4 + c % 4]
    np.testing.assert_allclose(sims[0].reshape(64, 64), np_cos(grid), atol=1e-6)


def test_localization_maps_peak_at_own_patch():
    n, gh, gw, d = 48, 3, 3, 6
    patches = rng.normal(size=(n, gh * gw, d)).astype(np.float32)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    final = (patches @ q + 0.3 * rng.normal(size=patches.shape)).astype(np.float32)  # each token ≈ own patch
    cls = np.zeros((n, 1, d), np.float32)
    inter = {"attn_in": [np.concatenate([cls, patches], 1)], "layers": [np.concatenate([cls, final], 1)]}
    loc = LocalizationCKA((gh, gw), num_prefix=1)
    loc.update({k: [jnp.asarray(a[:24]) for a in v] for k, v in inter.items()})
    loc.update({k: [jnp.asarray(a[24:]) for a in v] for k, v in inter.items()})
    maps = loc.result()
    assert maps.shape == (gh, gw, gh, gw)
    assert localization_score(maps) == 1.0
    assert maps[1, 1, 1, 1] > 0.8 and abs(maps[1, 1, 0, 0]) < 0.3
