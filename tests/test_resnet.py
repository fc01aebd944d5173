"""ResNet building blocks and models: weight standardization and padding against NumPy float64,
BatchNorm semantics (PyTorch momentum, per-sample eval), zero-init identity blocks, intermediates,
the hybrid's BiT stem shapes, logical partition names. Small widths keep it fast."""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nest_jax.models import create_model
from nest_jax.models.resnet import WS_EPS, BiTStem, Bottleneck, Conv, Parts

SMALL = dict(layers=(1, 1, 1, 1), widths=(128, 128, 256, 256))


def conv_numpy(x, w, stride, pads):
    """Direct float64 convolution. x: (B, H, W, Ci), w: (k, k, Ci, Co), pads: ((top, bottom), (left, right))."""
    x = np.pad(x.astype(np.float64), ((0, 0), *pads, (0, 0)))
    k = w.shape[0]
    ho, wo = (x.shape[1] - k) // stride + 1, (x.shape[2] - k) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, w.shape[3]))
    for i in range(ho):
        for j in range(wo):
            patch = x[:, i * stride : i * stride + k, j * stride : j * stride + k, :]
            out[:, i, j] = np.einsum("bhwc,hwco->bo", patch, w)
    return out


@pytest.mark.parametrize(
    "padding,size,pads",
    [
        ("torch", 7, ((1, 1), (1, 1))),  # PyTorch padding=1
        ("same", 8, ((0, 1), (0, 1))),
    ],
)  # TF SAME: bottom/right
def test_weight_standardized_conv_matches_numpy(padding, size, pads):
    conv = Conv(3, 4, 3, stride=2, padding=padding, standardize=True, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 3, 4)) * 0.3 + rng.normal(size=4)  # per-filter offsets
    conv.kernel[...] = jnp.asarray(w, jnp.float32)
    x = rng.normal(size=(2, size, size, 3))
    w64 = w.astype(np.float64)
    mean = w64.mean(axis=(0, 1, 2), keepdims=True)
    ws = (w64 - mean) / np.sqrt(w64.var(axis=(0, 1, 2), keepdims=True) + WS_EPS)
    want = conv_numpy(x, ws, 2, pads)
    got = np.asarray(conv(jnp.asarray(x, jnp.float32)))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    # Standardization removes any per-filter affine change of the kernel.
    conv.kernel[...] = jnp.asarray(w * 3.0 + 1.5, jnp.float32)
    np.testing.assert_allclose(np.asarray(conv(jnp.asarray(x, jnp.float32))), want, atol=1e-4, rtol=1e-4)


def filled_model(name: str, **kw) -> nnx.Module:
    """A model with NumPy-random weights (seeded by parameter path, so two models that share paths
    share values) and BatchNorm statistics (0, 1): no random-init programs to compile."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: create_model(name, rngs=nnx.Rngs(0), **kw)))

    def fill(path, x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.key(0)
        key = "/".join(
            str(getattr(p, "key", getattr(p, "idx", ""))) for p in path if not isinstance(p, jax.tree_util.GetAttrKey)
        )  # drop the Variable's `.value`
        rng = np.random.default_rng(zlib.crc32(key.encode()))
        if key.endswith("/var"):
            value = np.ones(x.shape)
        elif key.endswith("/mean") or not np.issubdtype(x.dtype, np.floating):
            value = np.zeros(x.shape)
        elif key.endswith("/scale"):
            value = 1.0 + 0.1 * rng.normal(size=x.shape)
        elif key.endswith("/bias"):
            value = 0.1 * rng.normal(size=x.shape)
        else:  # kernels: He-normal over the fan-in
            value = rng.normal(size=x.shape) * np.sqrt(2.0 / np.prod(x.shape[:-1]))
        return jnp.asarray(value, x.dtype)

    return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(fill, state))


def test_zero_init_last_bottleneck_starts_as_identity():
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 16)).astype(np.float32)

    @jax.jit  # init and forward in one program: eager init compiles one program per shape
    def run(x):
        block = Bottleneck(16, 16, 1, Parts(), zero_init_last=True, rngs=nnx.Rngs(0))
        return block(x, train=True)

    # The residual branch ends in a zero-scale BatchNorm: y = ReLU(x + 0).
    np.testing.assert_allclose(np.asarray(run(x)), np.maximum(x, 0), atol=1e-6)


@pytest.mark.parametrize("name", ["resnet50", "resnetv2_50x1_bit"])
def test_resnet_intermediates_features_and_pre_logits(name):
    model = filled_model(name, num_classes=5, **SMALL)
    x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
    headless = filled_model(name, num_classes=0, **SMALL)  # same backbone values (seeded by path)

    @nnx.jit
    def run(model, headless, x):
        return model(x, capture=["features", "pre_logits"]), model(x), headless(x)

    (logits, rec), plain, features = run(model, headless, x)
    assert [f.shape for f in rec["features"]] == [(2, 16, 16, 128), (2, 8, 8, 128), (2, 4, 4, 256), (2, 2, 2, 256)]
    np.testing.assert_allclose(
        np.asarray(rec["pre_logits"]), np.asarray(rec["features"][-1].mean(axis=(1, 2))), atol=1e-6
    )
    kernel, bias = np.asarray(model.head.kernel[...]), np.asarray(model.head.bias[...])
    np.testing.assert_allclose(np.asarray(logits), np.asarray(rec["pre_logits"]) @ kernel + bias, atol=1e-5)
    np.testing.assert_allclose(np.asarray(plain), np.asarray(logits), atol=1e-6)  # capture changes nothing
    np.testing.assert_allclose(np.asarray(features), np.asarray(rec["pre_logits"]), atol=1e-6)


def test_batchnorm_running_stats_follow_pytorch_momentum_and_eval_is_per_sample():
    model = filled_model("resnet50", num_classes=5, **SMALL)
    x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))

    @nnx.jit
    def run(model, x):
        alone, in_batch = model(x[:1]), model(x)[:1]
        conv_out = model.stem.conv(x)
        train_out = model(x, train=True)  # batch statistics; updates the running ones
        return alone, in_batch, model(x), train_out, conv_out, model.stem.norm.mean[...]

    alone, in_batch, eval_out, train_out, conv_out, running_mean = map(np.asarray, run(model, x))
    np.testing.assert_allclose(alone, in_batch, rtol=1e-5, atol=1e-5)  # eval: running statistics, per sample
    assert np.abs(train_out - eval_out).max() > 1e-3  # train: batch statistics, not (0, 1)
    # PyTorch momentum 0.1: running = 0.9 · running + 0.1 · batch statistic (running mean starts at 0).
    np.testing.assert_allclose(running_mean, 0.1 * conv_out.mean(axis=(0, 1, 2)), atol=1e-5)


def test_bit_stem_output_is_stride_16_with_1024_channels():
    stem = nnx.eval_shape(lambda: BiTStem(3, rngs=nnx.Rngs(0)))
    assert stem.out_chans == 1024
    assert len(stem.stages) == 3 and [len(s) for s in stem.stages] == [3, 4, 9]
    graphdef, state = nnx.split(stem)
    out = jax.eval_shape(
        lambda s, x: nnx.merge(graphdef, s)(x), state, jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
    )
    assert out.shape == (2, 14, 14, 1024)


def test_resnet_parameters_carry_logical_partition_names():
    model = nnx.eval_shape(lambda: create_model("resnet50", rngs=nnx.Rngs(0)))
    names = lambda v: v.get_metadata()["out_sharding"]  # noqa: E731
    assert names(model.stem.conv.kernel) == (None, None, "conv_in", "conv_out")
    assert names(model.stages[1][0].downsample.conv.kernel) == (None, None, "conv_in", "conv_out")
    assert names(model.stages[0][0].norm1.scale) == ("conv_out",)
    assert names(model.head.kernel) == ("embed", "classes")
    assert names(model.head.bias) == ("classes",)
