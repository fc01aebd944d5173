"""Every model family honours nnx's `model.train()` / `model.eval()` and returns one array (or
(array, intermediates) with `capture`), in either mode (nest_jax.models.intermediates)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nest_jax.models import create_model

# name -> (overrides, input shape): tiny members of each family, with dropout where it has any.
CLASSIFIERS = {
    "vit_tiny_patch16_224": (dict(img_size=16, patch_size=8, depth=1, drop_rate=0.5), (2, 16, 16, 3)),
    "deit_tiny_distilled_shape_patch16_224": (dict(img_size=16, patch_size=8, depth=1, drop_rate=0.5), (2, 16, 16, 3)),
    "nest_tiny_cifar": (
        dict(img_size=8, dims=(8, 8), depths=(1, 1), heads=(1, 1), block_size=2, patch_size=2, drop_rate=0.5),
        (2, 8, 8, 3),
    ),
    "resnet50": (dict(layers=(1, 1), widths=(32, 64)), (4, 16, 16, 3)),
}
GANS = {
    "nest_gan_32": (dict(latent_dim=8, patch_size=4, dims=(16, 8), depths=(1, 1), heads=(1, 1)), (2, 8)),
    "vit_generator_32": (dict(latent_dim=8, dim=16, depth=1, num_heads=2, patch_size=8), (2, 8)),
    "sagan_generator_32": (dict(latent_dim=8, widths=(8, 8, 8, 8)), (2, 8)),
    "sagan_discriminator_32": (dict(widths=(8, 8), down=(True, False)), (2, 32, 32, 3)),
}


def _build(name, spec):
    overrides, shape = spec
    model = create_model(name, num_classes=5 if name in CLASSIFIERS else 1, rngs=nnx.Rngs(0), **overrides)
    return model, jax.random.normal(jax.random.key(1), shape)


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_classifier_modes_and_one_return_shape(name):
    model, x = _build(name, CLASSIFIERS[name])
    built = model(x)  # built in eval mode
    assert isinstance(built, jax.Array) and built.shape == (x.shape[0], 5)
    model.train()
    noisy = model(x)
    assert isinstance(noisy, jax.Array) and noisy.shape == built.shape  # no dict of heads in training
    assert np.abs(np.asarray(noisy) - np.asarray(built)).max() > 1e-4  # dropout noise / batch statistics
    explicit = model(x, train=False)  # an explicit train= wins over the mode
    model.eval()
    first, second = model(x), model(x)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(second))
    np.testing.assert_array_equal(np.asarray(explicit), np.asarray(first))
    if name == "resnet50":  # train() moved the running statistics: eval now reads them
        assert np.abs(np.asarray(first) - np.asarray(built)).max() > 1e-4
        np.testing.assert_allclose(np.asarray(first[:1]), np.asarray(model(x[:1])), atol=1e-5)  # per sample
    else:
        np.testing.assert_array_equal(np.asarray(first), np.asarray(built))
    out, recorded = model(x, capture="pre_logits")
    np.testing.assert_array_equal(np.asarray(out), np.asarray(first))
    assert set(recorded) == {"pre_logits"}


def test_multi_head_deit_heads_are_an_intermediate_and_the_output_is_their_mean():
    name = "deit_tiny_distilled_shape_patch16_224"
    overrides = dict(CLASSIFIERS[name][0], drop_rate=0.0)  # no dropout: train and eval agree
    model, x = _build(name, (overrides, CLASSIFIERS[name][1]))
    for train in (False, True):
        out, recorded = model(x, train=train, capture="heads")
        heads = recorded["heads"]
        assert sorted(heads) == ["cls", "dist", "shape"]
        mean = (np.asarray(heads["cls"], np.float64) + heads["dist"] + heads["shape"]) / 3
        np.testing.assert_allclose(np.asarray(out), mean, atol=1e-6)
        assert np.abs(np.asarray(heads["cls"]) - np.asarray(heads["dist"])).max() > 1e-3  # distinct heads


@pytest.mark.parametrize("name", sorted(GANS))
def test_gan_models_follow_the_mode_and_capture_features(name):
    model, x = _build(name, GANS[name])
    built = model(x)
    assert isinstance(built, jax.Array)
    model.train()
    trained = model(x)
    model.eval()
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(model(x, train=False)))
    if name.startswith("sagan_generator"):  # BatchNorm: batch statistics in train mode
        assert np.abs(np.asarray(trained) - np.asarray(built)).max() > 1e-4
    out, recorded = model(x, capture="features")
    np.testing.assert_array_equal(np.asarray(out), np.asarray(model(x)))
    assert len(recorded["features"]) >= 1 and all(f.ndim == 4 for f in recorded["features"])


def test_mode_survives_split_merge_and_jit():
    model, x = _build("vit_tiny_patch16_224", CLASSIFIERS["vit_tiny_patch16_224"])
    model.train()
    graphdef, state = nnx.split(model)
    a = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, x)
    model.eval()
    graphdef, state = nnx.split(model)
    b = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, x)
    np.testing.assert_allclose(np.asarray(b), np.asarray(model(x)), atol=1e-5)  # jit vs eager rounding
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-4
    assert jnp.isfinite(a).all()
