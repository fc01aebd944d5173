"""Models as pure functions (jit / grad / vmap) and inside Linen via the NNX→Linen bridge."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

from nest_jax.models import create_model
from nest_jax.models.functional import as_linen, linen_params_from_nnx, pure

TINY = dict(img_size=32, patch_size=8, depth=2)


def tiny_vit(seed: int = 0, **kw) -> nnx.Module:
    return create_model("vit_tiny_patch16_224", num_classes=10, rngs=nnx.Rngs(seed), **{**TINY, **kw})


@pytest.fixture(scope="module")
def images():
    return jax.random.normal(jax.random.key(42), (4, 32, 32, 3))


@pytest.fixture(scope="module")
def vit(images):
    """(model, apply, params, eager logits): the eager forward is slow on CPU, so it runs once."""
    model = tiny_vit()
    apply, params, _ = pure(model)
    return model, apply, params, model(images)


def test_pure_apply_under_jit_matches_eager_model(vit, images):
    _, apply, params, eager = vit
    np.testing.assert_allclose(jax.jit(apply)(params, images), eager, atol=1e-5, rtol=1e-5)


def test_pure_apply_forwards_capture_kwargs(vit, images):
    _, apply, params, _ = vit
    _, inter = jax.jit(lambda p, x: apply(p, x, capture="attention"))(params, images)
    assert len(inter["attention"]) == 2 and inter["attention"][0].shape == (4, 3, 17, 17)


def test_pure_grad_matches_central_finite_difference(vit, images):
    _, apply, params, _ = vit
    target = jax.random.normal(jax.random.key(1), (4, 10))

    def loss(p):
        return jnp.mean((apply(p, images) - target) ** 2)

    grads = jax.jit(jax.grad(loss))(params)
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
    # One entry of a first-layer weight: its effect passes through attention, MLP and both norms.
    index = (5, 7)
    analytic = float(grads["layers"][0]["mlp"]["fc1"]["kernel"][index])
    eps = 1e-2
    w = params["layers"][0]["mlp"]["fc1"]["kernel"][...]

    def loss_at(delta):
        shifted = jax.tree.map(lambda a: a, params)
        shifted["layers"][0]["mlp"]["fc1"]["kernel"].set_value(w.at[index].add(delta))
        return float(jax.jit(loss)(shifted))

    numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    assert abs(analytic) > 1e-5  # the check below would be vacuous on a dead weight
    assert analytic == pytest.approx(numeric, rel=2e-2, abs=1e-6)


def test_pure_vmap_over_parameter_sets_matches_each_stateful_model(vit, images):
    _, apply, _, _ = vit
    models = [tiny_vit(seed) for seed in range(3)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *[nnx.state(m, nnx.Param) for m in models])
    batched = jax.jit(jax.vmap(apply, in_axes=(0, None)))(stacked, images)
    forward = nnx.jit(lambda m, x: m(x))
    for i, m in enumerate(models):  # the reference is each stateful NNX model's own forward
        np.testing.assert_allclose(batched[i], forward(m, images), atol=1e-5, rtol=1e-5)


def test_pure_vmap_over_inputs_matches_loop(vit, images):
    _, apply, params, eager = vit
    groups = images.reshape(2, 2, 32, 32, 3)  # 2 groups of 2 images
    batched = jax.jit(jax.vmap(apply, in_axes=(None, 0)))(params, groups)
    for i in range(2):  # images are independent, so group i is rows 2i, 2i+1 of the eager batch
        np.testing.assert_allclose(batched[i], eager[2 * i : 2 * i + 2], atol=1e-5, rtol=1e-5)


def test_pure_train_mode_matches_the_stateful_model_and_threads_its_rng(images):
    model = tiny_vit(drop_path_rate=0.5)
    apply, params, state = pure(model)
    step = jax.jit(lambda p, s, x: apply(p, x, state=s, train=True))
    out1, state1 = step(params, state, images)
    out2, _ = step(params, state1, images)
    # The stateful model, called twice in train mode, draws the same stochastic-depth masks from
    # its own RNG stream and advances it the same way.
    forward = nnx.jit(lambda m, x: m(x, train=True))
    np.testing.assert_allclose(out1, forward(model, images), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(out2, forward(model, images), atol=1e-5, rtol=1e-5)
    assert not np.allclose(out1, out2)  # the masks really changed between steps
    # Eval ignores the RNG: the logits of the stateful model in eval mode.
    np.testing.assert_allclose(
        jax.jit(apply)(params, images, state=state1), nnx.jit(lambda m, x: m(x))(model, images), atol=1e-5, rtol=1e-5
    )


class ConvBN(nnx.Module):
    """Conv -> BatchNorm -> Dropout -> mean: the state a ResNet stem carries (batch stats, RNG)."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(3, 8, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(8, momentum=0.9, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x, *, train: bool = False):
        y = self.bn(self.conv(x), use_running_average=not train)
        return self.drop(y, deterministic=not train).mean(axis=(1, 2))


def test_pure_train_mode_returns_updated_batchnorm_statistics(images):
    model = ConvBN(rngs=nnx.Rngs(0))
    apply, params, state = pure(model)
    _, new_state = jax.jit(lambda p, s, x: apply(p, x, state=s, train=True))(params, state, images)
    conv = np.asarray(model.conv(images), np.float64)
    # Running mean starts at 0: after one step it is (1 - momentum) * batch mean (NumPy, float64).
    np.testing.assert_allclose(new_state["bn"]["mean"][...], 0.1 * conv.mean(axis=(0, 1, 2)), atol=1e-6)
    np.testing.assert_allclose(new_state["bn"]["var"][...], 0.9 + 0.1 * conv.var(axis=(0, 1, 2)), rtol=1e-5)
    # Eval with the new statistics normalizes with them, not with the batch's own.
    nnx.update(model, new_state)
    np.testing.assert_allclose(jax.jit(apply)(params, images, state=new_state), model(images), atol=1e-6)


class LinenClassifier(nn.Module):
    """A Linen model with a nest_jax ViT trunk (feature extractor) and a Linen head."""

    @nn.compact
    def __call__(self, x):
        features = as_linen("vit_tiny_patch16_224", num_classes=0, **TINY)(x)
        return nn.Dense(5)(features)


def test_as_linen_inside_linen_model_matches_nnx_model(images):
    variables = LinenClassifier().init(jax.random.key(0), images)
    trunk = create_model("vit_tiny_patch16_224", num_classes=0, rngs=nnx.Rngs(7), **TINY)
    params = dict(variables["params"])
    nnx_params = linen_params_from_nnx(trunk)
    assert jax.tree.structure(params["ToLinen_0"]) == jax.tree.structure(nnx_params)
    params["ToLinen_0"] = nnx_params  # the NNX model's weights, dropped into the Linen tree
    out = jax.jit(LinenClassifier().apply)({"params": params}, images)
    head = variables["params"]["Dense_0"]
    expected = trunk(images) @ head["kernel"] + head["bias"]
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)
