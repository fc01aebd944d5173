"""Optimizer chain of `config.optimizer` against independent references: torch.optim.SGD (Nesterov,
coupled decay), a NumPy LAMB, gradient accumulation = one step on the mean gradient, clipping and
layer-wise lr decay by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import torch

from nest_jax.train.config_base import base_config
from nest_jax.train.optim import make_optimizer

RNG = np.random.default_rng(0)
PARAMS = {
    "layers": {"0": {"w": RNG.normal(size=(4, 3)), "bias": RNG.normal(size=(3,))}},
    "head": {"kernel": RNG.normal(size=(3, 2))},
}
GRADS = [jax.tree.map(lambda p: RNG.normal(size=p.shape), PARAMS) for _ in range(4)]


def _opt(**kw):
    opt = base_config().optimizer
    opt.update(dict(name="adamw", lr=0.1, weight_decay=0.0, wd_mask="all", schedule="constant"))
    opt.update(kw)
    return opt


def _run(opt, grads):
    params = jax.tree.map(jnp.asarray, PARAMS)
    tx = make_optimizer(opt, params, schedule=lambda step: opt.lr)
    state = tx.init(params)
    for g in grads:
        updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
    return params


def _leaves(tree):
    return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]


def test_sgd_nesterov_with_decay_matches_torch():
    opt = _opt(name="sgd", momentum=0.9, nesterov=True, weight_decay=0.01)
    ours = _run(opt, GRADS)
    ref = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in jax.tree.leaves(PARAMS)]
    sgd = torch.optim.SGD(ref, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    for g in GRADS:
        for p, gl in zip(ref, jax.tree.leaves(g)):
            p.grad = torch.tensor(gl, dtype=torch.float64)
        sgd.step()
    for a, b in zip(_leaves(ours), ref):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_lamb_matches_numpy():
    b1, b2, eps, wd, lr = 0.9, 0.999, 1e-6, 0.01, 0.1
    ours = _run(_opt(name="lamb", weight_decay=wd, eps=eps), GRADS)
    params = _leaves(PARAMS)
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for t, g in enumerate(GRADS, start=1):
        for i, gi in enumerate(jax.tree.leaves(g)):
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi**2
            r = (m[i] / (1 - b1**t)) / (np.sqrt(v[i] / (1 - b2**t)) + eps) + wd * params[i]
            pn, rn = np.linalg.norm(params[i]), np.linalg.norm(r)
            trust = pn / rn if pn > 0 and rn > 0 else 1.0
            params[i] = params[i] - lr * trust * r
    for a, b in zip(_leaves(ours), params):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_gradient_accumulation_equals_one_step_on_the_mean_gradient():
    mean = jax.tree.map(lambda *g: sum(g) / len(g), *GRADS)
    accumulated = _run(_opt(accum_steps=4, weight_decay=0.05), GRADS)
    single = _run(_opt(weight_decay=0.05), [mean])
    for a, b in zip(_leaves(accumulated), _leaves(single)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Between updates the parameters do not move.
    partial = _run(_opt(accum_steps=4), GRADS[:3])
    for a, b in zip(_leaves(partial), _leaves(PARAMS)):
        np.testing.assert_array_equal(a, b.astype(np.float32))


def test_clipping_and_layer_decay_scale_sgd_updates():
    g = GRADS[0]
    norm = np.sqrt(sum(np.sum(x**2) for x in jax.tree.leaves(g)))
    clipped = _run(_opt(name="sgd", momentum=0.0, clip_norm=0.5), [g])
    for a, p, gl in zip(_leaves(clipped), _leaves(PARAMS), jax.tree.leaves(g)):
        np.testing.assert_allclose(a, p - 0.1 * gl * 0.5 / norm, rtol=1e-5, atol=1e-6)
    # One transformer layer: ids layers/0 -> 1, head -> 2; factor = decay ** (count - 1 - id), count 3.
    decayed = _run(_opt(name="sgd", momentum=0.0, layer_decay=0.5), [g])
    factors = {"head": 1.0, "layers": 0.5}
    for (path, a), p, gl in zip(jax.tree_util.tree_flatten_with_path(decayed)[0], _leaves(PARAMS), jax.tree.leaves(g)):
        f = factors[path[0].key]
        np.testing.assert_allclose(np.asarray(a), p - 0.1 * f * gl, rtol=1e-5, atol=1e-6)


def test_bf16_first_moment_keeps_second_moment_float32_and_tracks_float32():
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), PARAMS)
    states = {}
    for mu in (None, "bfloat16"):
        opt = _opt(mu_dtype=mu)
        tx = make_optimizer(opt, params, schedule=lambda step: opt.lr)
        state, p = tx.init(params), params
        for g in GRADS:
            updates, state = tx.update(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), g), state, p)
            p = jax.tree.map(lambda a, u: a + u, p, updates)
        states[mu] = (state, p)
    adam = states["bfloat16"][0][0][0]  # chain -> adamw chain -> ScaleByAdamState
    assert {x.dtype for x in jax.tree.leaves(adam.mu)} == {jnp.dtype(jnp.bfloat16)}
    assert {x.dtype for x in jax.tree.leaves(adam.nu)} == {jnp.dtype(jnp.float32)}
    # bf16 rounding of the first moment (relative 2^-8) moves four lr-0.1 steps by well under 1e-2.
    for a, b in zip(_leaves(states["bfloat16"][1]), _leaves(states[None][1])):
        np.testing.assert_allclose(a, b, atol=1e-2)
    with np.testing.assert_raises(ValueError):
        make_optimizer(_opt(mu_dtype="float16"), params, schedule=lambda step: 0.1)
