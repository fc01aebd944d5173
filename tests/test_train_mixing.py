"""Mixup / CutMix targets: rows sum to 1, CutMix λ equals the pasted area, NesT mixup λ ≥ ½."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from nest_jax.train import mixing
from nest_jax.train.mixing import mix_batch

B, H, W, K = 8, 16, 12, 10


def _batch():
    # Example i is the constant image i + 1 with label i: pixels reveal where each came from.
    images = jnp.broadcast_to(jnp.arange(1.0, B + 1)[:, None, None, None], (B, H, W, 3))
    return images, jnp.arange(B)


@functools.cache
def _mixer(**kw):
    """One compiled function per setting, vmapped over keys: compiling dominates these tests."""
    fn = functools.partial(mix_batch, num_classes=K, **kw)
    return jax.jit(jax.vmap(fn, in_axes=(0, None, None)))


def _mix_many(seeds, **kw):
    images, labels = _batch()
    keys = jax.vmap(jax.random.key)(jnp.asarray(seeds))
    out, targets = _mixer(**kw)(keys, images, labels)
    return np.asarray(out), np.asarray(targets, np.float64)


def _mix(seed, **kw):
    out, targets = _mix_many([seed], **kw)
    return out[0], targets[0]


@pytest.mark.parametrize("sampling", ["nest", "beta"])
def test_targets_sum_to_one_with_label_smoothing(sampling):
    images, many = _mix_many(range(8), mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, sampling=sampling)
    cutmixed = [np.allclose(x, np.round(x)) for x in images]
    assert any(cutmixed) and not all(cutmixed)  # both branches were exercised
    assert many.shape == (8, B, K)
    np.testing.assert_allclose(many.sum(-1), 1.0, atol=1e-6)
    assert many.min() >= 0.1 / K - 1e-7  # smoothing mass survives mixing


def test_label_smoothing_alone_matches_hand_values():
    _, targets = _mix(0, label_smoothing=0.1)
    expected = np.full((B, K), 0.01)
    expected[np.arange(B), np.arange(B)] = 0.91
    np.testing.assert_allclose(targets, expected, atol=1e-7)


@pytest.mark.parametrize("sampling", ["nest", "beta"])
def test_cutmix_target_weight_equals_own_pixel_share(sampling):
    for images, targets in zip(*_mix_many(range(6), cutmix_alpha=1.0, sampling=sampling)):
        own_share = (images[..., 0] == np.arange(1, B + 1)[:, None, None]).mean(axis=(1, 2))
        np.testing.assert_allclose(targets[np.arange(B), np.arange(B)], own_share, atol=1e-6)
        partner = B - 1 - np.arange(B)  # both samplings pair CutMix with the reversed batch
        np.testing.assert_allclose(targets[np.arange(B), partner], 1 - own_share, atol=1e-6)
        # Only own and partner pixels appear: the box is one rectangle of the partner image.
        assert set(np.unique(images[0, ..., 0])) <= {1.0, float(B)}


def test_nest_cutmix_keeps_at_most_half_of_the_own_image():
    _, targets = _mix_many(range(6), cutmix_alpha=1.0, sampling="nest")
    assert np.max(targets[:, np.arange(B), np.arange(B)]) <= 0.5 + 1e-6


def test_nest_mixup_weight_is_at_least_half_and_matches_pixels():
    for images, targets in zip(*_mix_many(range(6), mixup_alpha=0.8, sampling="nest")):
        lam = targets[np.arange(B), np.arange(B)]
        assert lam.min() >= 0.5 - 1e-6
        # Pixel value = λ·(i+1) + (1−λ)·(partner+1) with the partner read off the targets.
        partner = np.where(np.isclose(lam, 1.0), np.arange(B), np.argmax(targets - np.eye(B, K) * 2, axis=1))
        expected = lam * (np.arange(B) + 1) + (1 - lam) * (partner + 1)
        np.testing.assert_allclose(images[:, 0, 0, 0], expected, rtol=1e-5)


def test_beta_mixup_uses_one_weight_and_the_flipped_batch():
    images, targets = _mix(3, mixup_alpha=0.8, sampling="beta")
    lam = targets[0, 0]
    np.testing.assert_allclose(targets.diagonal(), lam, atol=1e-6)
    expected = lam * (np.arange(B) + 1) + (1 - lam) * (B - np.arange(B))
    np.testing.assert_allclose(images[:, 0, 0, 0], expected, rtol=1e-5)


def test_switch_prob_picks_cutmix_or_mixup():
    def kinds(p):
        many, _ = _mix_many(range(4), mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=p)
        return {"cutmix" if np.allclose(x, np.round(x)) else "mixup" for x in many}

    assert kinds(1.0) == {"cutmix"}
    assert kinds(0.0) == {"mixup"}


@pytest.mark.parametrize("sampling", ["nest", "beta"])
def test_select_between_branches_equals_the_conditional(sampling):
    """The switch computes both branches and selects; a `lax.cond` on the same key is the reference."""
    from nest_jax.train import mixing

    mixup, cutmix = mixing._SAMPLERS[sampling]
    images, labels = _batch()
    targets = mixing.smooth_one_hot(labels, K, 0.1)

    @jax.jit
    def with_cond(key):
        k_switch, k_mix = jax.random.split(key)
        return jax.lax.cond(
            jax.random.uniform(k_switch) < 0.5,
            lambda: cutmix(k_mix, images, targets, 1.0),
            lambda: mixup(k_mix, images, targets, 0.8),
        )

    seen = set()
    for seed in range(6):
        key = jax.random.key(seed)
        got = jax.jit(
            functools.partial(
                mix_batch, num_classes=K, mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, sampling=sampling
            )
        )(key, images, labels)
        want = with_cond(key)
        np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
        np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))
        seen.add(bool(np.allclose(got[0], np.round(got[0]))))
    assert seen == {True, False}  # both branches were selected at least once


def _draws(fn, n=20_000):
    keys = jax.random.split(jax.random.key(0), n)
    return np.asarray(jax.jit(jax.vmap(fn))(keys), np.float64)


@pytest.mark.parametrize("alpha", [0.1, 0.8, 1.0, 5.0])
def test_loop_free_gamma_follows_the_gamma_distribution(alpha):
    """Kolmogorov–Smirnov against SciPy's Gamma(α) CDF on 20,000 draws (fixed keys): a wrong
    acceptance test, squeeze constant or α < 1 boost moves the CDF by more than KS's ~1.4% here."""
    g = np.exp(_draws(lambda k: mixing.log_gamma(k, alpha)))
    assert scipy.stats.kstest(g, scipy.stats.gamma(alpha).cdf).pvalue > 1e-3


@pytest.mark.parametrize("alpha", [0.8, 1.0, 2.0])
def test_loop_free_beta_follows_the_beta_distribution(alpha):
    """DeiT's mixup (0.8) and CutMix (1.0) weights against SciPy's Beta(α, α) CDF. (For α ≲ 0.2 a
    float32 λ rounds a few percent of the mass to exactly 0 or 1, for jax.random.beta too.)"""
    lam = _draws(lambda k: mixing.beta(k, alpha))
    assert scipy.stats.kstest(lam, scipy.stats.beta(alpha, alpha).cdf).pvalue > 1e-3
