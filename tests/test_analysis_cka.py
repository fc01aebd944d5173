"""CKA and minibatch CKA against plain NumPy float64 implementations written here, and the
invariances CKA is defined to have (Kornblith et al. 2019; Nguyen et al. 2021)."""

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from nest_jax.analysis.cka import MinibatchCKA, cka


# ---- NumPy float64 references (straight from the definitions) --------------------------------
def np_gram(x, kernel="linear", threshold=1.0):
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    k = x @ x.T
    if kernel == "linear":
        return k
    d2 = np.diag(k)[:, None] + np.diag(k)[None] - 2 * k
    return np.exp(-d2 / (2 * threshold**2 * np.median(d2)))


def np_hsic0(k, l):
    n = len(k)
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def np_hsic1(k, l):
    n = len(k)
    k, l = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
    one = np.ones(n)
    return (
        np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2)) - 2 / (n - 2) * one @ k @ l @ one
    ) / (n * (n - 3))


def np_cka(x, y, kernel="linear", unbiased=False, threshold=1.0):
    k, l = np_gram(x, kernel, threshold), np_gram(y, kernel, threshold)
    h = np_hsic1 if unbiased else np_hsic0
    return h(k, l) / np.sqrt(h(k, k) * h(l, l))


rng = np.random.default_rng(0)


@pytest.mark.parametrize("n,p", [(24, 40), (60, 8)])  # Gram form (n < p) and feature-space form (n > p)
def test_cka_matches_numpy_float64(n, p):
    x = rng.normal(size=(n, p)) + 3.0  # an offset: centring must be exact
    y = np.tanh(x @ rng.normal(size=(p, p + 3))) + 0.3 * rng.normal(size=(n, p + 3))
    for kernel in ("linear", "rbf"):
        for unbiased in (False, True):
            want = np_cka(x, y, kernel, unbiased, 0.7)
            # float32 (the default): rounding only; under x64 the same code agrees to float64 precision.
            got = cka(x, y, kernel=kernel, unbiased=unbiased, rbf_threshold=0.7)
            assert got == pytest.approx(want, abs=1e-4), (kernel, unbiased)
            with jax.enable_x64(True):
                got = cka(x, y, kernel=kernel, unbiased=unbiased, rbf_threshold=0.7)
                assert got == pytest.approx(want, abs=1e-11), (kernel, unbiased)


def test_cka_invariances():
    x = rng.normal(size=(50, 20))
    q, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    for unbiased in (False, True):
        assert cka(x, x, unbiased=unbiased) == pytest.approx(1.0, abs=1e-6)
        assert cka(x, x @ q, unbiased=unbiased) == pytest.approx(1.0, abs=1e-5)  # orthogonal
        assert cka(x, 7.5 * x, unbiased=unbiased) == pytest.approx(1.0, abs=1e-6)  # isotropic scaling
        assert cka(x, 7.5 * x @ q, kernel="rbf", unbiased=unbiased) == pytest.approx(1.0, abs=1e-4)
    # An arbitrary invertible map changes linear CKA (it is not invariant to it, by design).
    a = rng.normal(size=(20, 20)) @ np.diag(np.logspace(-2, 1, 20))
    assert abs(np.linalg.det(a)) > 0
    assert cka(x, x @ a) < 0.9


def test_debiased_cka_of_independent_gaussians_is_near_zero():
    x, y = rng.normal(size=(32, 256)), rng.normal(size=(32, 256))
    assert cka(x, y) > 0.8  # biased CKA is inflated by the high dimension
    assert abs(cka(x, y, unbiased=True)) < 0.05
    assert abs(cka(x, y, kernel="rbf", unbiased=True)) < 0.05


def test_unbiased_needs_four_examples():
    with pytest.raises(ValueError, match="at least 4"):
        cka(np.ones((3, 2)), np.ones((3, 2)), unbiased=True)
    with pytest.raises(ValueError, match="at least 4"):
        MinibatchCKA(1).update([np.ones((3, 2))])


def np_minibatch(batches_x, batches_y):
    """Summed HSIC₁ terms over batches, then the CKA ratio (the Nguyen et al. estimator)."""
    lx, ly = len(batches_x[0]), len(batches_y[0])
    xy, xx, yy = np.zeros((lx, ly)), np.zeros(lx), np.zeros(ly)
    for fx, fy in zip(batches_x, batches_y):
        kx, ky = [np_gram(f) for f in fx], [np_gram(f) for f in fy]
        xy += np.array([[np_hsic1(a, b) for b in ky] for a in kx])
        xx += np.array([np_hsic1(a, a) for a in kx])
        yy += np.array([np_hsic1(b, b) for b in ky])
    return xy / np.sqrt(xx[:, None] * yy[None])


def _layers(n, dims=(6, 10, 5)):
    z = rng.normal(size=(n, 8))
    return [
        np.tanh(z @ rng.normal(size=(8, d)) * s) + 0.5 * rng.normal(size=(n, d)) for d, s in zip(dims, (0.5, 1.0, 2.0))
    ]


def test_minibatch_cka_matches_numpy_within_and_across_models():
    data_x = _layers(64)
    data_y = [np.abs(data_x[0]) @ rng.normal(size=(6, 4)), data_x[2] ** 2]
    bx = [[f[i : i + 16] for f in data_x] for i in range(0, 64, 16)]
    by = [[f[i : i + 16] for f in data_y] for i in range(0, 64, 16)]
    across, within = MinibatchCKA(3, 2), MinibatchCKA(3)
    for fx, fy in zip(bx, by):
        across.update(fx, fy)
        within.update(fx)
    np.testing.assert_allclose(across.result(), np_minibatch(bx, by), atol=2e-5)
    np.testing.assert_allclose(within.result(), np_minibatch(bx, bx), atol=2e-5)
    np.testing.assert_allclose(across.result("xx"), within.result(), atol=1e-6)  # same Grams, within blocks
    np.testing.assert_allclose(across.result("yy"), np_minibatch(by, by), atol=2e-5)
    np.testing.assert_allclose(np.diag(within.result()), 1.0, atol=1e-6)


def test_minibatch_cka_converges_to_full_data_unbiased_value():
    global rng
    rng = np.random.default_rng(1)
    n = 512
    data = _layers(n, dims=(12, 12))
    full = np_cka(data[0], data[1], unbiased=True)
    errors = []
    for b in (8, 32, 128, 512):
        errs = []
        for _ in range(4 if b < n else 1):  # mean absolute error over random batch partitions
            perm = rng.permutation(n)
            acc = MinibatchCKA(1, 1)
            for i in range(0, n, b):
                acc.update([data[0][perm[i : i + b]]], [data[1][perm[i : i + b]]])
            errs.append(abs(acc.result()[0, 0] - full))
        errors.append(np.mean(errs))
    assert errors[-1] < 1e-5  # one batch of everything is the full-data estimator
    assert errors[0] > errors[1] > errors[2] > errors[-1], errors
    assert errors[2] < 0.01


def test_minibatch_cka_batch_of_four_is_never_nan():
    acc = MinibatchCKA(3)
    for _ in range(25):
        x = rng.normal(size=(4, 5))
        acc.update([x, rng.normal(size=(4, 7)), np.ones((4, 3))])  # a constant layer: HSIC₁(K, K) = 0
    res = acc.result()
    assert np.isfinite(res).all()
    assert res[2].tolist() == [0.0, 0.0, 0.0] and res[:, 2].tolist() == [0.0, 0.0, 0.0]
    assert abs(res[0, 1]) < 0.2  # independent layers: near zero, possibly negative, never NaN


def test_minibatch_cka_sharded_equals_single_device():
    assert jax.device_count() == 8
    feats = _layers(32, dims=(4, 6))
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharded = [jax.device_put(f.astype(np.float32), NamedSharding(mesh, P("data"))) for f in feats]
    single = [jax.device_put(f.astype(np.float32), jax.devices()[0]) for f in feats]
    a, b = MinibatchCKA(2), MinibatchCKA(2)
    a.update(sharded)
    b.update(single)
    np.testing.assert_allclose(a.result(), b.result(), atol=1e-6)


def test_the_cka_module_is_reachable_from_the_package():
    """`nest_jax.analysis.cka` used to be the function `cka`, hiding the module (and MinibatchCKA)."""
    import nest_jax.analysis as analysis
    from nest_jax.analysis import cka as module

    assert module is analysis.cka and analysis.cka.MinibatchCKA is MinibatchCKA and analysis.cka.cka is cka
