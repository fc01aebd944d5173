"""Attention paths: the fused kernels (XLA's, and the padding + sequence-length logic cuDNN gets)
equal the explicit softmax attention and a float64 NumPy reference; the option is validated and
dispatched as documented."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nest_jax.models import create_model, layers
from nest_jax.models.layers import attention_path, fused_attention


def _np_attention(q, k, v):
    """q (B, N, h, d), k, v (B, N, g, d) in float64: softmax(q kᵀ/√d) v per head, K/V heads shared."""
    q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
    rep = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, rep, axis=2), np.repeat(v, rep, axis=2)
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", w, v)


@pytest.mark.parametrize("kv_heads", [4, 1])
def test_padded_fused_attention_with_lengths_matches_numpy(kv_heads):
    kq, kk, kv = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(kq, (2, 197, 4, 16))  # ViT-B/16's odd 1 + 14·14 tokens
    k = jax.random.normal(kk, (2, 197, kv_heads, 16))
    v = jax.random.normal(kv, (2, 197, kv_heads, 16))
    want = _np_attention(q, k, v)
    for multiple in (1, 2, 64):  # 197 -> 197, 198, 256
        got = jax.jit(lambda q, k, v, m=multiple: fused_attention(q, k, v, implementation="xla", seq_multiple=m))(
            q, k, v
        )
        assert got.shape == q.shape
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5, err_msg=str(multiple))

    # The padded rows and keys carry no gradient: the same gradient as without padding.
    def loss(q, k, v, m):
        return jnp.sum(fused_attention(q, k, v, implementation="xla", seq_multiple=m) ** 2)

    g1 = jax.jit(jax.grad(loss, argnums=(0, 1, 2)), static_argnums=3)(q, k, v, 1)
    g64 = jax.jit(jax.grad(loss, argnums=(0, 1, 2)), static_argnums=3)(q, k, v, 64)
    for a, b in zip(g1, g64):
        assert np.all(np.isfinite(np.asarray(b)))
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


MODELS = {
    # DeiT with cls + dist tokens: 2 + 4·4 = 18 tokens; padded to 24 below.
    "deit": lambda impl: create_model(
        "deit_tiny_distilled_patch16_224",
        num_classes=5,
        img_size=16,
        patch_size=4,
        depth=2,
        dim=32,
        num_heads=2,
        mlp_dim=64,
        attn_impl=impl,
        rngs=nnx.Rngs(0),
    ),
    # NesT blocks of 2×2 = 4 tokens with one shared K/V head (multi-query), and plain multi-head.
    "nest_mq": lambda impl: create_model(
        "nest_tiny_cifar",
        num_classes=5,
        img_size=8,
        block_size=2,
        dims=(16, 16, 16),
        depths=(1, 1, 1),
        heads=(2, 2, 2),
        attn_impl=impl,
        rngs=nnx.Rngs(0),
    ),
    "nest_mh": lambda impl: create_model(
        "nest_tiny_cifar",
        num_classes=5,
        img_size=8,
        block_size=2,
        dims=(16, 16, 16),
        depths=(1, 1, 1),
        heads=(2, 2, 2),
        attention="multi_head",
        attn_impl=impl,
        rngs=nnx.Rngs(0),
    ),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fused_paths_match_explicit_attention_in_models(name, monkeypatch):
    size = 16 if name == "deit" else 8
    images = jax.random.normal(jax.random.key(1), (2, size, size, 3))
    explicit = MODELS[name]("explicit")
    want = jax.jit(lambda m, x: m(x))(explicit, images)
    fused = MODELS[name]("xla")
    np.testing.assert_allclose(jax.jit(lambda m, x: m(x))(fused, images), want, atol=1e-5, rtol=1e-5)
    # The cuDNN padding rule, run through XLA's kernel: sequences padded to a multiple of 24
    # (18 -> 24 tokens for the DeiT, 4 -> 24 per NesT block), excluded by sequence lengths.
    monkeypatch.setitem(layers.SEQ_MULTIPLE, "xla", 24)
    padded = MODELS[name]("xla")
    np.testing.assert_allclose(jax.jit(lambda m, x: m(x))(padded, images), want, atol=1e-5, rtol=1e-5)


def test_attention_option_is_validated_and_dispatched():
    with pytest.raises(ValueError, match="attn_impl must be one of"):
        create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, attn_impl="flash")
    with pytest.raises(ValueError, match="attn_impl must be one of"):
        create_model("nest_tiny_cifar", attn_impl="cuda")
    bf16, f32 = jnp.bfloat16, jnp.float32
    assert attention_path("auto", dtype=bf16, head_dim=64, backend="gpu") == "cudnn"
    assert attention_path("auto", dtype=f32, head_dim=64, backend="gpu") == "xla"  # cuDNN flash: 16-bit only
    assert attention_path("auto", dtype=bf16, head_dim=12, backend="gpu") == "xla"  # head dim not a multiple of 8
    assert attention_path("auto", dtype=bf16, head_dim=64, backend="cpu") == "explicit"
    assert attention_path("auto", dtype=bf16, head_dim=64, backend="tpu") == "xla"
    assert attention_path("cudnn", dtype=bf16, head_dim=64, backend="cpu") == "xla"  # clean fallback
    assert attention_path("cudnn", dtype=bf16, head_dim=256, backend="gpu") == "xla"
    assert attention_path("xla", dtype=f32, head_dim=64, backend="cpu") == "xla"
    assert attention_path("explicit", dtype=bf16, head_dim=64, backend="gpu") == "explicit"
