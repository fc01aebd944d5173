"""Google ViT `.npz` checkpoints (google-research/vision_transformer) <-> nest_jax ViT parameters.

The `.npz` is a flat dict keyed by '/'-joined flax paths. Two naming schemes exist (docs/checkpoint_formats.md):

  pre-Linen (the original release)        Linen (later releases, augreg)
  encoderblock_{i}/LayerNorm_0            encoderblock_{i}/LayerNorm_0
  encoderblock_{i}/MultiHeadDotProductAttention_1   .../MultiHeadDotProductAttention_0
  encoderblock_{i}/LayerNorm_2            encoderblock_{i}/LayerNorm_1
  encoderblock_{i}/MlpBlock_3/Dense_0|1   encoderblock_{i}/MlpBlock_0/Dense_0|1

(pre-Linen numbered sub-modules across classes in creation order; Linen numbers per class.)
Everything else is shared: `embedding` (conv, HWIO), `cls` (1, 1, D),
`Transformer/posembed_input/pos_embedding` (1, 1+N, D), `Transformer/encoder_norm`, optional
`pre_logits` (Dense + tanh) and `head`. Attention `query|key|value/kernel` are (D, h, d) with bias
(h, d); `out/kernel` is (h, d, D). nest_jax fuses them: `qkv` (D, 3, h, d) with q, k, v at
index 0, 1, 2 of axis 1, `qkv_bias` (3, h, d), `proj` (h, d, D) — a pure stack, no transposes.

Google checkpoints were trained with the tanh GELU and inputs scaled to [-1, 1]: create the model as
`create_model("vit_base_patch16_224", gelu="tanh", init="official")` before loading (`init` only
matters for the parameters a checkpoint does not overwrite, e.g. a re-initialized head).
Not mapped: the hybrid R50 stem and big_vision's scanned (`encoderblock` stacked) layers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from flax import nnx

from nest_jax.convert.common import assign_params, host_arrays, load_array_file

# Sub-module names inside `Transformer/encoderblock_{i}` per scheme.
SCHEMES = {
    "prelinen": dict(norm1="LayerNorm_0", attn="MultiHeadDotProductAttention_1", norm2="LayerNorm_2", mlp="MlpBlock_3"),
    "linen": dict(norm1="LayerNorm_0", attn="MultiHeadDotProductAttention_0", norm2="LayerNorm_1", mlp="MlpBlock_0"),
}
# Top-level names shared by both schemes: nest_jax path -> Google path.
TOP = {
    "patch_embed/proj/kernel": "embedding/kernel",
    "patch_embed/proj/bias": "embedding/bias",
    "cls_token": "cls",
    "pos_embed": "Transformer/posembed_input/pos_embedding",
    "norm/scale": "Transformer/encoder_norm/scale",
    "norm/bias": "Transformer/encoder_norm/bias",
    "pre_logits/kernel": "pre_logits/kernel",
    "pre_logits/bias": "pre_logits/bias",
    "head/kernel": "head/kernel",
    "head/bias": "head/bias",
}
# Prefixes some exporters put in front of every key (Google's training state, big_vision).
KNOWN_PREFIXES = ("opt/target/", "params/")
QKV = ("query", "key", "value")
_BLOCK = re.compile(r"^Transformer/encoderblock_(\d+)/(.+)$")


def detect_scheme(flat: Mapping[str, np.ndarray]) -> str:
    """'prelinen' or 'linen', from the attention module's name (either is fine with no blocks)."""
    names = " ".join(flat)
    pre, linen = "MultiHeadDotProductAttention_1" in names, "MultiHeadDotProductAttention_0" in names
    if pre and linen:
        raise ValueError("checkpoint mixes pre-Linen and Linen block names; cannot tell the scheme")
    return "prelinen" if pre else "linen"


def _block_map(scheme: str) -> dict[str, str]:
    """Google sub-path inside an encoder block -> nest_jax sub-path inside `layers/{i}` (not q/k/v)."""
    s = SCHEMES[scheme]
    out = {}
    for ours, google in (("norm1", s["norm1"]), ("norm2", s["norm2"])):
        out[f"{google}/scale"], out[f"{google}/bias"] = f"{ours}/scale", f"{ours}/bias"
    for j in (0, 1):
        for p in ("kernel", "bias"):
            out[f"{s['mlp']}/Dense_{j}/{p}"] = f"mlp/fc{j + 1}/{p}"
    out[f"{s['attn']}/out/kernel"], out[f"{s['attn']}/out/bias"] = "attn/proj", "attn/proj_bias"
    return out


def vit_npz_to_params(flat: Mapping[str, np.ndarray], model: nnx.Module | None = None) -> dict[str, np.ndarray]:
    """Google ViT flat dict -> {nest_jax '/'-path: array}, for `assign_params`.

    Detects the naming scheme. Keys it does not recognise are passed through under their own
    name, so a strict `assign_params` names them. `model` (optional) is only checked for fitting.
    """
    for prefix in KNOWN_PREFIXES:
        if f"{prefix}embedding/kernel" in flat:
            flat = {k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)}
            break
    if any(k.startswith(("conv_root", "gn_root", "block1/")) for k in flat):
        raise NotImplementedError("hybrid (R50 stem) ViT checkpoints are not mapped yet")
    if model is not None:
        _check_model(model)
    scheme = detect_scheme(flat)
    attn = SCHEMES[scheme]["attn"]
    block_map = _block_map(scheme)
    from_google = {g: o for o, g in TOP.items()}
    # big_vision keeps a patch-only position table at the top level (GAP models, no class token).
    from_google["pos_embedding"] = "pos_embed"
    out: dict[str, np.ndarray] = {}
    qkv: dict[tuple[int, str, str], np.ndarray] = {}
    for key, value in flat.items():
        value = np.asarray(value)
        m = _BLOCK.match(key)
        if key in from_google:
            out[from_google[key]] = value
        elif m:
            i, sub = int(m.group(1)), m.group(2)
            part = sub.split("/")
            if len(part) == 3 and part[0] == attn and part[1] in QKV:
                qkv[(i, part[1], part[2])] = value
            elif sub in block_map:
                out[f"layers/{i}/{block_map[sub]}"] = value
            else:
                out[key] = value
        else:
            out[key] = value
    for i in sorted({i for i, _, _ in qkv}):
        for param, ours, axis in (("kernel", "qkv", 1), ("bias", "qkv_bias", 0)):
            parts = [qkv.pop((i, name, param), None) for name in QKV]
            if all(p is None for p in parts):
                continue
            if any(p is None for p in parts):
                raise ValueError(f"encoderblock_{i}: query/key/value {param} incomplete in the checkpoint")
            out[f"layers/{i}/attn/{ours}"] = np.stack(parts, axis=axis)
    for (i, name, param), value in qkv.items():  # e.g. query/scale: kept so a strict load names it
        out[f"Transformer/encoderblock_{i}/{attn}/{name}/{param}"] = value
    return out


def _check_model(model: nnx.Module) -> None:
    config = getattr(model, "config", None)
    tokens = getattr(config, "prefix_tokens", None)
    if tokens is None or not hasattr(config, "depth"):
        raise TypeError(f"Google ViT checkpoints load into nest_jax ViT models, not {type(model).__name__}")
    if tuple(tokens) not in ((), ("cls",)):
        raise ValueError(f"Google ViT checkpoints have at most a class token; the model has {tokens}")
    if getattr(config, "stem", None):
        raise NotImplementedError("hybrid (R50 stem) ViT checkpoints are not mapped yet")


def load_vit_npz(
    model: nnx.Module, path_or_mapping: str | Path | Mapping[str, np.ndarray], *, strict: bool = True
) -> None:
    """Loads a Google ViT `.npz` (path, or an already-loaded flat dict) into `model` in place.

    Create the model with `gelu="tanh", init="official"` (see the module docstring). Shapes must
    match: for another resolution or class count, run `adapt_params` on `vit_npz_to_params(...)`.
    """
    flat = load_array_file(path_or_mapping) if isinstance(path_or_mapping, (str, Path)) else path_or_mapping
    assign_params(model, vit_npz_to_params(flat, model), strict=strict, source="ViT .npz")


def params_to_vit_npz(model: nnx.Module, scheme: str = "linen") -> dict[str, np.ndarray]:
    """The model's parameters under Google names, ready for `np.savez(path, **result)`.

    scheme: "linen" or "prelinen". Inverse of `vit_npz_to_params`.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {list(SCHEMES)}, got {scheme!r}")
    _check_model(model)
    params = host_arrays(model)
    if any(k.endswith(("attn/q", "attn/kv")) for k in params):
        raise ValueError("Google ViT checkpoints have multi-head attention only (no grouped / multi-query)")
    to_block = {o: g for g, o in _block_map(scheme).items()}
    attn = SCHEMES[scheme]["attn"]
    out = {}
    for key, value in params.items():
        m = re.match(r"^layers/(\d+)/(.+)$", key)
        if key in TOP:
            out[TOP[key]] = value
        elif m and m.group(2) in ("attn/qkv", "attn/qkv_bias"):
            param, axis = ("kernel", 1) if m.group(2) == "attn/qkv" else ("bias", 0)
            for j, name in enumerate(QKV):
                out[f"Transformer/encoderblock_{m.group(1)}/{attn}/{name}/{param}"] = np.take(value, j, axis=axis)
        elif m and m.group(2) in to_block:
            out[f"Transformer/encoderblock_{m.group(1)}/{to_block[m.group(2)]}"] = value
        else:
            raise ValueError(f"parameter {key!r} has no Google ViT name")
    return out


__all__ = ["detect_scheme", "load_vit_npz", "params_to_vit_npz", "vit_npz_to_params"]
