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


def test_run_linear_probe_matches_scikit_learns_logistic_regression_on_the_same_features():
    """The probe's AdamW training against an independent solver: scikit-learn's L2 logistic
    regression fitted on the features `extract_features` gives for the same frozen DeiT. Images of
    4 classes differ in their mean colour, so the frozen features separate them (through noise that keeps both solvers below 100%)."""
    from sklearn.linear_model import LogisticRegression

    m = create_model(
        "deit_tiny_patch16_224", num_classes=4, img_size=16, patch_size=4, depth=2, dim=16, num_heads=2, mlp_dim=32
    )
    palette = np.array([[0.2, 0.2, 0.8], [0.8, 0.2, 0.2], [0.2, 0.8, 0.2], [0.7, 0.7, 0.2]], np.float32)

    def batches(n, seed):
        rng = np.random.default_rng(seed)
        y = np.arange(n) % 4
        x = np.clip(palette[y][:, None, None] + rng.normal(0, 0.6, (n, 16, 16, 3)), 0, 1).astype(np.float32)
        return [dict(image=x[i : i + 64], label=y[i : i + 64]) for i in range(0, n, 64)]

    train, test = batches(256, 0), batches(128, 1)
    norm = dict(mean=(0.5,) * 3, std=(0.25,) * 3)
    got = TR.run_linear_probe(m, train, test, num_classes=4, kinds=("cls", "pre_logits"), epochs=30, lr=1e-2, **norm)
    assert set(got["top1"]) == {"cls", "pre_logits"}
    for kind, acc in got["top1"].items():
        x, y = TR.extract_features(m, train, kind=kind, **norm)
        xt, yt = TR.extract_features(m, test, kind=kind, **norm)
        ref = LogisticRegression(max_iter=2000).fit(x, y).score(xt, yt)
        assert ref > 0.9, (kind, ref)  # the task is learnable from these features
        assert abs(acc - ref) <= 0.05, (kind, acc, ref)
