"""Transfer evaluators recover a linearly separable synthetic task; ridge few-shot equals the primal
float64 solution; frozen features are the tokens the model computes; sharded == single device."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from nest_jax.analysis import corruptions as C
from nest_jax.analysis import occlusion as O
from nest_jax.analysis import per_block_tokens as T
from nest_jax.analysis import transfer as TR
from nest_jax.models import create_model


def separable(n: int, k: int = 4, d: int = 16, seed: int = 0):
    centres = np.random.default_rng(123).normal(0, 1, (k, d)) * 4  # one task; `seed` draws its samples
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    return (centres[y] + rng.normal(0, 1, (n, d))).astype(np.float32), y


def test_linear_probe_episodes_and_ridge_recover_a_separable_task():
    x, y = separable(600)
    xt, yt = separable(200, seed=1)
    assert TR.linear_accuracy(TR.train_linear(x, y, 4, epochs=10), xt, yt) > 0.97
    r = TR.ridge_few_shot(x, y, xt, yt, 4, shots=(1, 5), seeds=2)
    assert r["mean"]["5"] > 0.97 and r["mean"]["1"] > 0.8 and len(r["per_seed"]["1"]) == 2
    e = TR.episodes(x, y, n_way=3, k_shot=5, queries=10, num_episodes=20, steps=50)
    assert e["accuracy"] > 0.95


def test_ridge_dual_form_equals_the_primal_solution():
    rng = np.random.default_rng(2)
    x, xt = rng.normal(size=(12, 30)), rng.normal(size=(5, 30))
    y = np.eye(3)[rng.integers(0, 3, 12)]
    got = np.asarray(
        TR.ridge_fit_predict(
            jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), jnp.asarray(xt, jnp.float32), 7.0
        )
    )
    mu, sd = x.mean(0), x.std(0) + 1e-5
    a = np.c_[(x - mu) / sd, np.ones(12)]
    at = np.c_[(xt - mu) / sd, np.ones(5)]
    w = np.linalg.solve(a.T @ a + 7.0 * np.eye(31), a.T @ (2 * y - 1))  # primal, float64
    np.testing.assert_allclose(got, at @ w, rtol=1e-3, atol=1e-3)


def test_features_are_the_models_normalized_tokens():
    m = create_model(
        "deit_tiny_patch16_224", num_classes=3, img_size=16, patch_size=4, depth=4, dim=16, num_heads=2, mlp_dim=32
    )
    x = jax.random.normal(jax.random.key(0), (3, 16, 16, 3))
    _, inter = m(x, capture=("tokens", "layers"))
    np.testing.assert_allclose(
        np.asarray(TR.features_of(m, x, kind="cls")), np.asarray(inter["tokens"]["cls"]), atol=1e-6
    )
    ens = np.asarray(TR.features_of(m, x, kind="ensemble_patch"))
    assert ens.shape == (3, 5 * 16)
    np.testing.assert_allclose(ens[:, :16], np.asarray(m.norm(inter["layers"][0])[:, 0]), atol=1e-6)
    np.testing.assert_allclose(ens[:, 48:64], np.asarray(inter["tokens"]["cls"]), atol=1e-6)


def test_sharded_analyses_equal_single_device():
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    m = create_model(
        "deit_tiny_distilled_patch16_224",
        num_classes=4,
        img_size=16,
        patch_size=4,
        depth=2,
        dim=16,
        num_heads=2,
        mlp_dim=32,
    )
    x = jnp.asarray(np.random.default_rng(0).random((8, 16, 16, 3)), jnp.float32)
    xs = jax.device_put(x, NamedSharding(mesh, P("data")))
    assert len(xs.sharding.device_set) == 8
    kw = dict(grid=(4, 4), num_drop=6, per_image=True, mean=(0.5,) * 3, std=(0.25,) * 3)
    single = O.random_occlusion_logits(m, x, jax.random.key(1), **kw)
    sharded = O.random_occlusion_logits(m, xs, jax.random.key(1), **kw)
    np.testing.assert_allclose(np.asarray(sharded), np.asarray(single), atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(T.per_layer_logits(m, xs)["inference"]), np.asarray(T.per_layer_logits(m, x)["inference"]), atol=1e-5
    )
    for name in ("contrast", "defocus_blur"):  # batch statistics per image; reflect padding at shard edges
        np.testing.assert_allclose(
            np.asarray(C.corrupt(name, jax.random.key(0), xs, 3)),
            np.asarray(C.corrupt(name, jax.random.key(0), x, 3)),
            atol=1e-6,
        )
