"""NesT weights: official flax trees (import and export), timm state dicts, position-embedding resize.

Official names (docs/checkpoint_formats.md): `PatchEmbedding_0/Conv_0`, `PositionEmbedding_{level}/pos_embedding`,
`EncoderNDBlock_{k}` numbered across levels, `ConvPool_{level-1}/{Conv_0,LayerNorm_0}`, final
`LayerNorm_0`, head `Dense_0`. Official attention: q (C, h, d); multi-head kv (C, h, 2d) with each
head's [k | v] on the last axis; multi-query kv Dense (C, 2d) = [k | v]; proj_kernel (h, d, C) + bias.
timm: qkv Linear ordered (qkv, head, d); its proj reads heads merged with the head index FASTEST.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nest_jax.convert.common import assign_params, flat_paths, host_arrays, nest_paths, to_numpy
from nest_jax.models.blocks import blockify, deblockify
from nest_jax.models.nest import Nest, NestConfig

_OFFICIAL_ROOTS = ("params/", "target/params/", "optimizer/target/params/")


def _flat(tree: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Nested dict or flat '/'-joined mapping -> flat {'a/b/c': ndarray}; a leading `params/` is dropped."""
    out = {k: np.asarray(v) for k, v in flat_paths(tree).items()}
    for root in _OFFICIAL_ROOTS:
        if out and all(k.startswith(root) for k in out):
            return {k[len(root) :]: v for k, v in out.items()}
    return out


def _layer_index(c: NestConfig):
    """Yields (k, (level, j)): official global layer number k of layer j in level `level`."""
    return enumerate((level, j) for level, depth in enumerate(c.depths) for j in range(depth))


def _plain_pairs(c: NestConfig) -> list[tuple[str, str]]:
    """(official path, nest_jax path) of every parameter that maps one-to-one (same array)."""

    def module(src: str, dst: str, leaf: str = "kernel") -> list[tuple[str, str]]:
        """The pairs of a dense / conv module (its kernel) or a LayerNorm (leaf="scale"), and its bias."""
        return [(f"{src}/{p}", f"{dst}/{p}") for p in (leaf, "bias")]

    pairs = [*module("PatchEmbedding_0/Conv_0", "patch_embed/proj"), *module("LayerNorm_0", "norm", "scale")]
    if c.num_classes > 0:
        pairs += module("Dense_0", "head")
    for level in range(c.levels):
        pairs.append((f"PositionEmbedding_{level}/pos_embedding", f"levels/{level}/pos_embed"))
        if level > 0:
            src, dst = f"ConvPool_{level - 1}", f"levels/{level}/pool"
            pairs += [*module(f"{src}/Conv_0", f"{dst}/conv"), *module(f"{src}/LayerNorm_0", f"{dst}/norm", "scale")]
    for k, (level, j) in _layer_index(c):
        src, dst = f"EncoderNDBlock_{k}", f"levels/{level}/layers/{j}"
        for a, b in (("LayerNorm_0", "norm1"), ("LayerNorm_1", "norm2")):
            pairs += module(f"{src}/{a}", f"{dst}/{b}", "scale")
        for a, b in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
            pairs += module(f"{src}/MlpBlock_0/{a}", f"{dst}/mlp/{b}")
        attn = f"{src}/{'MultiQueryAttention_0' if c.attention == 'multi_query' else 'MultiHeadAttention_0'}"
        pairs += [(f"{attn}/proj_kernel", f"{dst}/attn/proj"), (f"{attn}/bias", f"{dst}/attn/proj_bias")]
    return pairs


def official_nest_to_params(
    tree_or_flat: Mapping[str, Any], config: NestConfig, *, strict: bool = True
) -> dict[str, np.ndarray]:
    """Official NesT parameters (nested dict or flat '/'-keyed mapping) -> {nest_jax path: array}."""
    src = _flat(tree_or_flat)
    want_mq = config.attention == "multi_query"
    has_mq = any("MultiQueryAttention_0" in k for k in src)
    has_mh = any("MultiHeadAttention_0" in k for k in src)
    if (want_mq and has_mh and not has_mq) or (not want_mq and has_mq and not has_mh):
        found = "multi_query" if has_mq else "multi_head"
        raise ValueError(
            f"the checkpoint uses {found} attention but the model has {config.attention!r}; "
            f"create the model with attention={found!r}"
        )
    pairs = _plain_pairs(config)
    out, used = {b: src[a] for a, b in pairs if a in src}, {a for a, _ in pairs}
    for k, (level, j) in _layer_index(config):
        base = f"EncoderNDBlock_{k}/{'MultiQueryAttention_0' if want_mq else 'MultiHeadAttention_0'}"
        kv_name = "Dense_0" if want_mq else "DenseGeneral_1"
        keys = [f"{base}/{m}/{p}" for m in ("DenseGeneral_0", kv_name) for p in ("kernel", "bias")]
        used.update(keys)
        q, qb, kv, kvb = (src.get(key) for key in keys)
        if want_mq:  # kv Dense (C, 2d) = [k | v] -> (C, 2, 1, d)
            found = {"q": q, "q_bias": qb}
            found["kv"] = None if kv is None else kv.reshape(kv.shape[0], 2, 1, -1)
            found["kv_bias"] = None if kvb is None else kvb.reshape(2, 1, -1)
        else:  # kv (C, h, 2d): each head's [k | v]
            found = {}
            if q is not None and kv is not None:
                d = q.shape[-1]
                found["qkv"] = np.stack([q, kv[..., :d], kv[..., d:]], axis=1)
            if qb is not None and kvb is not None:
                d = qb.shape[-1]
                found["qkv_bias"] = np.stack([qb, kvb[..., :d], kvb[..., d:]], axis=0)
        out.update({f"levels/{level}/layers/{j}/attn/{name}": v for name, v in found.items() if v is not None})
    unused = sorted(set(src) - used)
    if strict and unused:
        raise ValueError(
            f"official NesT checkpoint has {len(unused)} entries the model does not use, e.g. "
            f"{unused[:5]} (levels {config.levels}, depths {config.depths})"
        )
    return out


def params_to_official_nest(model: Nest) -> dict:
    """The model's parameters in the official flax layout (nested dict of numpy arrays)."""
    c = model.config
    ours = host_arrays(model)
    out = {a: ours[b] for a, b in _plain_pairs(c)}
    for k, (level, j) in _layer_index(c):
        src = f"levels/{level}/layers/{j}/attn"
        if c.attention == "multi_query":
            base = f"EncoderNDBlock_{k}/MultiQueryAttention_0"
            kv, kvb = ours[f"{src}/kv"], ours[f"{src}/kv_bias"]
            out[f"{base}/DenseGeneral_0/kernel"] = ours[f"{src}/q"]
            out[f"{base}/DenseGeneral_0/bias"] = ours[f"{src}/q_bias"]
            out[f"{base}/Dense_0/kernel"] = kv[:, :, 0].reshape(kv.shape[0], -1)
            out[f"{base}/Dense_0/bias"] = kvb[:, 0].reshape(-1)
        else:
            base = f"EncoderNDBlock_{k}/MultiHeadAttention_0"
            qkv, b = ours[f"{src}/qkv"], ours[f"{src}/qkv_bias"]
            out[f"{base}/DenseGeneral_0/kernel"] = qkv[:, 0]
            out[f"{base}/DenseGeneral_0/bias"] = b[0]
            out[f"{base}/DenseGeneral_1/kernel"] = np.concatenate([qkv[:, 1], qkv[:, 2]], axis=-1)
            out[f"{base}/DenseGeneral_1/bias"] = np.concatenate([b[1], b[2]], axis=-1)
    return nest_paths(out)


def load_official_nest(model: Nest, tree_or_flat: Mapping[str, Any], *, strict: bool = True) -> Nest:
    """Loads official NesT parameters (nested dict, or flat '/'-keyed e.g. from `.npz`) in place.

    The model must use the checkpoint's GELU (official: `gelu="tanh"`) and padding (`"tf_same"`).
    """
    return _load(model, official_nest_to_params, tree_or_flat, strict, "official NesT checkpoint")


def timm_nest_to_params(
    state_dict: Mapping[str, Any], config: NestConfig, *, strict: bool = True
) -> dict[str, np.ndarray]:
    """timm `nest_*` / `nest_*_jx` state dict -> {nest_jax path: array} (multi-head only)."""
    if config.attention != "multi_head":
        raise ValueError("timm's NesT has multi-head attention only; create the model with attention='multi_head'")
    sd = to_numpy(state_dict)
    same, dense = (lambda w: w), (lambda w: w.T)
    conv = lambda w: w.transpose(2, 3, 1, 0)  # (O, I, kh, kw) -> HWIO

    def module(src: str, dst: str, weight=None) -> list:
        """(timm key, nest_jax path, layout change) of a conv / linear module (`weight`: its weight's
        layout change) or a norm (none: weight -> scale), and of its bias."""
        leaf = "scale" if weight is None else "kernel"
        return [(f"{src}.weight", f"{dst}/{leaf}", weight or same), (f"{src}.bias", f"{dst}/bias", same)]

    pairs = [
        *module("patch_embed.proj", "patch_embed/proj", conv),
        *module("norm", "norm"),
        *module("head", "head", dense),
    ]
    for level in range(config.levels):
        src, dst, h = f"levels.{level}", f"levels/{level}", config.heads[level]
        pairs += [(f"{src}.pos_embed", f"{dst}/pos_embed", same), *module(f"{src}.pool.conv", f"{dst}/pool/conv", conv)]
        pairs += module(f"{src}.pool.norm", f"{dst}/pool/norm")
        for j in range(config.depths[level]):
            s, d = f"{src}.transformer_encoder.{j}", f"{dst}/layers/{j}"
            pairs += [*module(f"{s}.norm1", f"{d}/norm1"), *module(f"{s}.norm2", f"{d}/norm2")]
            pairs += [*module(f"{s}.mlp.fc1", f"{d}/mlp/fc1", dense), *module(f"{s}.mlp.fc2", f"{d}/mlp/fc2", dense)]
            pairs += [
                # qkv output features ordered (qkv, head, d) -> (C, 3, h, d)
                (f"{s}.attn.qkv.weight", f"{d}/attn/qkv", lambda w, h=h: w.T.reshape(w.shape[1], 3, h, -1)),
                (f"{s}.attn.qkv.bias", f"{d}/attn/qkv_bias", lambda b, h=h: b.reshape(3, h, -1)),
                # proj input features ordered (d, head): head index fastest -> (h, d, C)
                (
                    f"{s}.attn.proj.weight",
                    f"{d}/attn/proj",
                    lambda w, h=h: w.T.reshape(-1, h, w.shape[0]).transpose(1, 0, 2),
                ),
                (f"{s}.attn.proj.bias", f"{d}/attn/proj_bias", same),
            ]
    out = {dst: change(sd[src]) for src, dst, change in pairs if src in sd}
    unused = sorted(set(sd) - {src for src, _, _ in pairs})
    if strict and unused:
        raise ValueError(f"timm NesT state dict has {len(unused)} entries the model does not use, e.g. {unused[:5]}")
    return out


def load_timm_nest(model: Nest, state_dict: Mapping[str, Any], *, strict: bool = True) -> Nest:
    """Loads a timm NesT state dict in place. timm weights need `gelu="exact"`; `nest_*_jx` weights
    `pool_padding="tf_same"`, plain `nest_*` weights `pool_padding="symmetric"`."""
    return _load(model, timm_nest_to_params, state_dict, strict, "timm NesT state dict")


def _load(model: Nest, to_params: Any, weights: Mapping[str, Any], strict: bool, source: str) -> Nest:
    """`weights` converted by `to_params` for the model's config and assigned in place (shapes checked first)."""
    assign_params(model, to_params(weights, model.config, strict=strict), strict=strict, source=source)
    return model


def resize_nest_pos_embed(
    pos: np.ndarray, new_grid: int | tuple[int, int], new_block: int, mode: str = "per_block"
) -> np.ndarray:
    """Resizes a level's position embedding (1, T, N, C) -> (1, T', N', C), N' = new_block².

    `per_block` (official fine-tuning at a new resolution): the block grid stays (`new_grid` must equal
    the old one); each block's own b×b table is resized to new_block×new_block, linearly.
    `global`: deblockify to one (g·b)² map, resize it linearly, re-blockify onto the new grid.
    Linear resize = `jax.image.resize(method="linear")`, half-pixel centres (tf.image.resize bilinear).
    """
    pos = np.asarray(pos)
    _, t, n, c = pos.shape
    g, b = math.isqrt(t), math.isqrt(n)
    if g * g != t or b * b != n:
        raise ValueError(f"position embedding {pos.shape} is not a square grid of square blocks")
    gh, gw = (new_grid, new_grid) if isinstance(new_grid, int) else tuple(new_grid)
    x = jnp.asarray(pos, jnp.float32)
    if mode == "per_block":
        if (gh, gw) != (g, g):
            raise ValueError(f"per_block resize keeps the block grid ({g}×{g}); asked for {gh}×{gw}: use mode='global'")
        x = jax.image.resize(x.reshape(t, b, b, c), (t, new_block, new_block, c), method="linear")
        return np.asarray(x.reshape(1, t, new_block * new_block, c), pos.dtype)
    if mode == "global":
        img = deblockify(x, g)
        img = jax.image.resize(img, (1, gh * new_block, gw * new_block, c), method="linear")
        return np.asarray(blockify(img, new_block), pos.dtype)
    raise ValueError(f"mode must be 'per_block' or 'global', got {mode!r}")
