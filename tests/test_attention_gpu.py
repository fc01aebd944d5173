"""cuDNN flash attention on a GPU, against references that do not use it.

The padded cuDNN path (`attn_impl="cudnn"`, `fused_attention(implementation="cudnn")`) must give
the attention of a float64 NumPy reference in bf16, forward and gradients, alone and inside a ViT
and a NesT (multi-query and multi-head), and the compiled programs must really call cuDNN's fused
kernel (`__cudnn$fmha…` custom calls), so a silent fallback to XLA would fail here. The bf16 error
of the explicit softmax path is the yardstick: cuDNN may not be much worse than it.

These tests need a GPU and are skipped elsewhere (CI has none). Run them on a GPU machine with
`JAX_PLATFORMS=cuda XLA_FLAGS= python -m pytest -m gpu tests` (benchmarks/gpu_session.sh does).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nest_jax.models import create_model
from nest_jax.models.layers import SEQ_MULTIPLE, fused_attention
from tests.test_attention import _np_attention

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a GPU (JAX_PLATFORMS=cuda)"),
]
CUDNN_CALL = "__cudnn$fmha"


def _explicit(q, k, v):
    """The textbook softmax attention in the inputs' dtype (the yardstick for bf16 rounding)."""
    rep = q.shape[2] // k.shape[2]
    k, v = jnp.repeat(k, rep, axis=2), jnp.repeat(v, rep, axis=2)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(jnp.asarray(q.shape[-1], q.dtype))
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits.astype(jnp.float32), -1).astype(q.dtype), v)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _cudnn(q, k, v):
    return fused_attention(q, k, v, implementation="cudnn", seq_multiple=SEQ_MULTIPLE["cudnn"])


@pytest.mark.parametrize("kv_heads", [12, 1])
def test_cudnn_attention_matches_float64_forward_and_gradients(kv_heads):
    """ViT-B/16's 197 tokens (odd: padded to 198), 12 heads of 64, bf16."""
    kq, kk, kv, kw = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(kq, (4, 197, 12, 64), jnp.bfloat16)
    k = jax.random.normal(kk, (4, 197, kv_heads, 64), jnp.bfloat16)
    v = jax.random.normal(kv, (4, 197, kv_heads, 64), jnp.bfloat16)
    w = jax.random.normal(kw, q.shape, jnp.float32)

    lowered = jax.jit(_cudnn).lower(q, k, v).compile().as_text()
    assert CUDNN_CALL in lowered, "the cuDNN path compiled without cuDNN's fused attention"
    want = _np_attention(q, k, v)
    err_cudnn = _rel(jax.jit(_cudnn)(q, k, v), want)
    err_explicit = _rel(jax.jit(_explicit)(q, k, v), want)
    assert err_cudnn < 1e-2 and err_cudnn < 2 * err_explicit + 1e-3, (err_cudnn, err_explicit)

    def grads(f, dtype):
        loss = lambda q, k, v: jnp.sum(f(q, k, v).astype(jnp.float32) * w)  # noqa: E731
        return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*(t.astype(dtype) for t in (q, k, v)))

    reference = grads(_explicit, jnp.float32)  # float32 from the same bf16 inputs
    assert CUDNN_CALL in jax.jit(jax.grad(lambda q: jnp.sum(_cudnn(q, k, v)))).lower(q).compile().as_text()
    for name, g, g_explicit, g_ref in zip(
        "qkv", grads(_cudnn, jnp.bfloat16), grads(_explicit, jnp.bfloat16), reference
    ):
        assert np.all(np.isfinite(np.asarray(g, np.float32))), name
        err, yardstick = _rel(g, g_ref), _rel(g_explicit, g_ref)
        assert err < 2e-2 and err < 2 * yardstick + 1e-3, (name, err, yardstick)


_nest = functools.partial(
    create_model, "nest_tiny_cifar", num_classes=10, img_size=16, dims=(64, 64, 64), depths=(1, 1, 1), heads=(2, 2, 2)
)
MODELS = {
    # 1 + 8·8 = 65 tokens (odd: cuDNN pads to 66), 3 heads of 64.
    "vit": lambda **kw: create_model("vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=4, depth=2, **kw),
    # NesT (16 px, patch 1) blocks of 4·4 = 16 tokens, heads of 32; one shared K/V head (multi-query) or multi-head.
    "nest_mq": _nest,
    "nest_mh": lambda **kw: _nest(attention="multi_head", **kw),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_cudnn_models_match_explicit_attention_in_bf16(name):
    """The same weights through `attn_impl="cudnn"` and "explicit" (both bf16) against the float32
    explicit model: logits and the parameter gradients of a cross-entropy loss."""
    size = 32 if name == "vit" else 16
    images = jax.random.normal(jax.random.key(1), (8, size, size, 3))
    labels = jax.random.randint(jax.random.key(2), (8,), 0, 10)

    def build(impl, dtype):  # the same float32 parameters (same seed) whatever the compute dtype
        return MODELS[name](attn_impl=impl, dtype=dtype, rngs=nnx.Rngs(0))

    def loss_and_grads(model):
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def loss(p):
            logits = nnx.merge(graphdef, p, rest)(images).astype(jnp.float32)
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1)), logits

        f = jax.jit(jax.value_and_grad(loss, has_aux=True))
        text = f.lower(params).compile().as_text()
        (_, logits), grads = f(params)
        return logits, grads, text

    want_logits, want_grads, text = loss_and_grads(build("explicit", jnp.float32))
    assert CUDNN_CALL not in text
    got_logits, got_grads, text = loss_and_grads(build("cudnn", jnp.bfloat16))
    assert CUDNN_CALL in text, "attn_impl='cudnn' compiled without cuDNN's fused attention"
    bf16_logits, bf16_grads, _ = loss_and_grads(build("explicit", jnp.bfloat16))

    err, yardstick = _rel(got_logits, want_logits), _rel(bf16_logits, want_logits)
    assert err < 3e-2 and err < 2 * yardstick + 2e-3, (err, yardstick)
    flat = lambda t: np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(t)])  # noqa: E731
    err, yardstick = _rel(flat(got_grads), flat(want_grads)), _rel(flat(bf16_grads), flat(want_grads))
    assert err < 5e-2 and err < 2 * yardstick + 5e-3, (err, yardstick)
