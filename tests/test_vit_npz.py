"""Google ViT `.npz` import/export, checked against a NumPy float64 ViT that reads Google names itself."""

import math

import jax
import numpy as np
import pytest
from flax import nnx

from nest_jax.convert import load_vit_npz, params_to_vit_npz, vit_npz_to_params
from nest_jax.models import create_model

D, HEADS, MLP, PATCH, IMG, DEPTH, CLASSES = 192, 3, 768, 8, 32, 2, 10
# The sub-module names of one encoder block, written out here independently of the importer.
BLOCK_NAMES = {
    "prelinen": ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3"),
    "linen": ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0"),
}


def tiny_vit(seed=0, **kw):
    kw = {"img_size": IMG, "patch_size": PATCH, "depth": DEPTH, "num_classes": CLASSES, "gelu": "tanh", **kw}
    return create_model("vit_tiny_patch16_224", rngs=nnx.Rngs(seed), **kw)


def random_google_npz(scheme, seed=0, representation_size=None):
    """A random checkpoint laid out as Google's code stores it (kernels (in, out), conv HWIO)."""
    rng = np.random.default_rng(seed)
    r = lambda *shape, s=0.1: (s * rng.standard_normal(shape)).astype(np.float32)  # noqa: E731
    n, d = (IMG // PATCH) ** 2, D // HEADS
    w = {
        "embedding/kernel": r(PATCH, PATCH, 3, D, s=0.05),
        "embedding/bias": r(D),
        "cls": r(1, 1, D, s=0.5),
        "Transformer/posembed_input/pos_embedding": r(1, n + 1, D, s=0.5),
        "Transformer/encoder_norm/scale": 1 + r(D),
        "Transformer/encoder_norm/bias": r(D),
    }
    ln1, mha, ln2, mlp = BLOCK_NAMES[scheme]
    for i in range(DEPTH):
        b = f"Transformer/encoderblock_{i}"
        for ln in (ln1, ln2):
            w[f"{b}/{ln}/scale"], w[f"{b}/{ln}/bias"] = 1 + r(D), r(D)
        for qkv in ("query", "key", "value"):
            w[f"{b}/{mha}/{qkv}/kernel"], w[f"{b}/{mha}/{qkv}/bias"] = r(D, HEADS, d), r(HEADS, d)
        w[f"{b}/{mha}/out/kernel"], w[f"{b}/{mha}/out/bias"] = r(HEADS, d, D), r(D)
        w[f"{b}/{mlp}/Dense_0/kernel"], w[f"{b}/{mlp}/Dense_0/bias"] = r(D, MLP), r(MLP)
        w[f"{b}/{mlp}/Dense_1/kernel"], w[f"{b}/{mlp}/Dense_1/bias"] = r(MLP, D), r(D)
    width = D
    if representation_size:
        w["pre_logits/kernel"], w["pre_logits/bias"] = r(D, representation_size), r(representation_size)
        width = representation_size
    w["head/kernel"], w["head/bias"] = r(width, CLASSES, s=0.5), r(CLASSES)
    return w


def numpy_vit(w, x, scheme):
    """float64 forward of a Google ViT straight from the checkpoint dict. x: (B, H, W, 3) -> (B, classes)."""
    w = {k: np.asarray(v, np.float64) for k, v in w.items()}
    x = np.asarray(x, np.float64)
    b, hgt, wid, c = x.shape
    gh, gw = hgt // PATCH, wid // PATCH
    patches = x.reshape(b, gh, PATCH, gw, PATCH, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, gh * gw, -1)
    z = patches @ w["embedding/kernel"].reshape(-1, D) + w["embedding/bias"]
    z = np.concatenate([np.broadcast_to(w["cls"], (b, 1, D)), z], axis=1)
    z = z + w["Transformer/posembed_input/pos_embedding"]

    def ln(v, name):
        mu, var = v.mean(-1, keepdims=True), v.var(-1, keepdims=True)
        return (v - mu) / np.sqrt(var + 1e-6) * w[f"{name}/scale"] + w[f"{name}/bias"]

    def gelu_tanh(v):
        return 0.5 * v * (1 + np.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))

    ln1, mha, ln2, mlp = BLOCK_NAMES[scheme]
    for i in range(DEPTH):
        p = f"Transformer/encoderblock_{i}"
        y = ln(z, f"{p}/{ln1}")
        q, k, v = (
            np.einsum("bnd,dhk->bhnk", y, w[f"{p}/{mha}/{t}/kernel"]) + w[f"{p}/{mha}/{t}/bias"][:, None]
            for t in ("query", "key", "value")
        )
        logits = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1])
        a = np.exp(logits - logits.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        z = z + np.einsum("bhnk,hkd->bnd", a @ v, w[f"{p}/{mha}/out/kernel"]) + w[f"{p}/{mha}/out/bias"]
        y = ln(z, f"{p}/{ln2}")
        y = gelu_tanh(y @ w[f"{p}/{mlp}/Dense_0/kernel"] + w[f"{p}/{mlp}/Dense_0/bias"])
        z = z + y @ w[f"{p}/{mlp}/Dense_1/kernel"] + w[f"{p}/{mlp}/Dense_1/bias"]
    feat = ln(z, "Transformer/encoder_norm")[:, 0]
    if "pre_logits/kernel" in w:
        feat = np.tanh(feat @ w["pre_logits/kernel"] + w["pre_logits/bias"])
    return feat @ w["head/kernel"] + w["head/bias"]


@pytest.fixture(scope="module")
def images():
    return np.asarray(jax.random.uniform(jax.random.key(1), (2, IMG, IMG, 3), minval=-1.0, maxval=1.0))


@pytest.mark.parametrize("scheme,rep", [("linen", None), ("prelinen", 16)])
def test_vit_npz_matches_numpy_google_forward(tmp_path, images, scheme, rep):
    ckpt = random_google_npz(scheme, seed=3, representation_size=rep)
    np.savez(tmp_path / "vit.npz", **ckpt)
    model = tiny_vit(init="official", representation_size=rep)
    load_vit_npz(model, tmp_path / "vit.npz")
    ours = np.asarray(model(images))
    ref = numpy_vit(ckpt, images, scheme)
    assert np.abs(ref).max() > 1.0  # the comparison is not between two near-zero outputs
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("scheme", ["linen", "prelinen"])
def test_vit_npz_export_roundtrip_reproduces_logits(tmp_path, images, scheme):
    src = tiny_vit(seed=0, init="timm")  # timm init: nothing zero, so every parameter matters
    exported = params_to_vit_npz(src, scheme)
    mha = BLOCK_NAMES[scheme][1]
    assert exported[f"Transformer/encoderblock_1/{mha}/query/kernel"].shape == (D, HEADS, D // HEADS)
    assert exported[f"Transformer/encoderblock_1/{mha}/out/kernel"].shape == (HEADS, D // HEADS, D)
    np.savez(tmp_path / "vit.npz", **exported)
    dst = tiny_vit(seed=7, init="timm")
    load_vit_npz(dst, tmp_path / "vit.npz")
    np.testing.assert_array_equal(np.asarray(dst(images)), np.asarray(src(images)))
    # The exporter is the importer's inverse on Google's own layout, and the naming schemes are told apart.
    ckpt = random_google_npz(scheme, seed=5)
    load_vit_npz(dst, ckpt)
    again = params_to_vit_npz(dst, scheme)
    assert again.keys() == ckpt.keys()
    for k in ckpt:
        np.testing.assert_array_equal(again[k], ckpt[k], err_msg=k)


def test_vit_npz_strips_training_state_prefix_and_names_unknown_keys():
    ckpt = random_google_npz("linen")
    plain = vit_npz_to_params(ckpt)
    prefixed = vit_npz_to_params({f"opt/target/{k}": v for k, v in ckpt.items()})
    assert plain.keys() == prefixed.keys()
    model = tiny_vit()
    with pytest.raises(ValueError, match="Transformer/encoderblock_0/Extra_0/kernel"):
        load_vit_npz(model, {**ckpt, "Transformer/encoderblock_0/Extra_0/kernel": np.zeros(3)})


def test_vit_npz_rejects_models_with_extra_tokens():
    model = tiny_vit(prefix_tokens=("cls", "dist"))
    with pytest.raises(ValueError, match="at most a class token"):
        params_to_vit_npz(model)
