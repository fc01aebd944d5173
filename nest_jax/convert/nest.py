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
from flax import nnx

from nest_jax.convert.common import assign_params, nest_paths, path_str
from nest_jax.models.blocks import blockify, deblockify
from nest_jax.models.nest import Nest, NestConfig

_OFFICIAL_ROOTS = ("params/", "target/params/", "optimizer/target/params/")


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dict or flat '/'-joined mapping -> flat {'a/b/c': ndarray}; a leading `params/` is dropped."""
    out: dict[str, np.ndarray] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flat(v, key + "/"))
        else:
            out[key] = np.asarray(v)
    if not prefix:
        for root in _OFFICIAL_ROOTS:
            if out and all(k.startswith(root) for k in out):
                out = {k[len(root) :]: v for k, v in out.items()}
                break
    return out


def _layer_index(c: NestConfig):
    """Yields (k, level, j): official global layer number k of layer j in level `level`."""
    k = 0
    for level, depth in enumerate(c.depths):
        for j in range(depth):
            yield k, level, j
            k += 1


def _plain_pairs(c: NestConfig) -> list[tuple[str, str]]:
    """(official path, nest_jax path) of every parameter that maps one-to-one (same array)."""
    pairs = [
        ("PatchEmbedding_0/Conv_0/kernel", "patch_embed/proj/kernel"),
        ("PatchEmbedding_0/Conv_0/bias", "patch_embed/proj/bias"),
        ("LayerNorm_0/scale", "norm/scale"),
        ("LayerNorm_0/bias", "norm/bias"),
    ]
    if c.num_classes > 0:
        pairs += [("Dense_0/kernel", "head/kernel"), ("Dense_0/bias", "head/bias")]
    for level in range(c.levels):
        pairs.append((f"PositionEmbedding_{level}/pos_embedding", f"levels/{level}/pos_embed"))
        if level > 0:
            src, dst = f"ConvPool_{level - 1}", f"levels/{level}/pool"
            pairs += [
                (f"{src}/Conv_0/kernel", f"{dst}/conv/kernel"),
                (f"{src}/Conv_0/bias", f"{dst}/conv/bias"),
                (f"{src}/LayerNorm_0/scale", f"{dst}/norm/scale"),
                (f"{src}/LayerNorm_0/bias", f"{dst}/norm/bias"),
            ]
    for k, level, j in _layer_index(c):
        src, dst = f"EncoderNDBlock_{k}", f"levels/{level}/layers/{j}"
        for a, b in (("LayerNorm_0", "norm1"), ("LayerNorm_1", "norm2")):
            pairs += [(f"{src}/{a}/scale", f"{dst}/{b}/scale"), (f"{src}/{a}/bias", f"{dst}/{b}/bias")]
        for a, b in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
            for p in ("kernel", "bias"):
                pairs.append((f"{src}/MlpBlock_0/{a}/{p}", f"{dst}/mlp/{b}/{p}"))
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
    used: set[str] = set()

    def take(key: str) -> np.ndarray | None:
        if key in src:
            used.add(key)
            return src[key]
        return None

    out = {}
    for a, b in _plain_pairs(config):
        v = take(a)
        if v is not None:
            out[b] = v
    for k, level, j in _layer_index(config):
        dst = f"levels/{level}/layers/{j}/attn"
        if want_mq:
            base = f"EncoderNDBlock_{k}/MultiQueryAttention_0"
            q, qb = take(f"{base}/DenseGeneral_0/kernel"), take(f"{base}/DenseGeneral_0/bias")
            kv, kvb = take(f"{base}/Dense_0/kernel"), take(f"{base}/Dense_0/bias")
            if q is not None:
                out[f"{dst}/q"] = q
            if qb is not None:
                out[f"{dst}/q_bias"] = qb
            if kv is not None:  # (C, 2d) = [k | v] -> (C, 2, 1, d)
                out[f"{dst}/kv"] = kv.reshape(kv.shape[0], 2, 1, -1)
            if kvb is not None:
                out[f"{dst}/kv_bias"] = kvb.reshape(2, 1, -1)
        else:
            base = f"EncoderNDBlock_{k}/MultiHeadAttention_0"
            q, qb = take(f"{base}/DenseGeneral_0/kernel"), take(f"{base}/DenseGeneral_0/bias")
            kv, kvb = take(f"{base}/DenseGeneral_1/kernel"), take(f"{base}/DenseGeneral_1/bias")
            if q is not None and kv is not None:  # kv (C, h, 2d): each head's [k | v]
                d = q.shape[-1]
                out[f"{dst}/qkv"] = np.stack([q, kv[..., :d], kv[..., d:]], axis=1)
            if qb is not None and kvb is not None:
                d = qb.shape[-1]
                out[f"{dst}/qkv_bias"] = np.stack([qb, kvb[..., :d], kvb[..., d:]], axis=0)
    unused = sorted(set(src) - used)
    if strict and unused:
        raise ValueError(
            f"official NesT checkpoint has {len(unused)} entries the model does not use, e.g. "
            f"{unused[:5]} (levels {config.levels}, depths {config.depths})"
        )
    return out


def _param_dict(model: Nest) -> dict[str, np.ndarray]:
    return {path_str(k): np.asarray(v[...]) for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def params_to_official_nest(model: Nest) -> dict:
    """The model's parameters in the official flax layout (nested dict of numpy arrays)."""
    c = model.config
    ours = _param_dict(model)
    out = {a: ours[b] for a, b in _plain_pairs(c)}
    for k, level, j in _layer_index(c):
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
    assign_params(
        model,
        official_nest_to_params(tree_or_flat, model.config, strict=strict),
        strict=strict,
        source="official NesT checkpoint",
    )
    return model


def _np(v) -> np.ndarray:
    if hasattr(v, "detach"):  # torch tensor
        v = v.detach().cpu().float().numpy()
    return np.asarray(v)


def timm_nest_to_params(
    state_dict: Mapping[str, Any], config: NestConfig, *, strict: bool = True
) -> dict[str, np.ndarray]:
    """timm `nest_*` / `nest_*_jx` state dict -> {nest_jax path: array} (multi-head only)."""
    if config.attention != "multi_head":
        raise ValueError("timm's NesT has multi-head attention only; create the model with attention='multi_head'")
    sd = {k: _np(v) for k, v in state_dict.items()}
    used: set[str] = set()

    def take(key: str) -> np.ndarray | None:
        if key in sd:
            used.add(key)
            return sd[key]
        return None

    out: dict[str, np.ndarray] = {}

    def put(dst: str, v: np.ndarray | None, fn=lambda a: a) -> None:
        if v is not None:
            out[dst] = fn(v)

    conv = lambda w: w.transpose(2, 3, 1, 0)  # (O, I, kh, kw) -> HWIO
    dense = lambda w: w.T
    put("patch_embed/proj/kernel", take("patch_embed.proj.weight"), conv)
    put("patch_embed/proj/bias", take("patch_embed.proj.bias"))
    put("norm/scale", take("norm.weight"))
    put("norm/bias", take("norm.bias"))
    put("head/kernel", take("head.weight"), dense)
    put("head/bias", take("head.bias"))
    for level in range(config.levels):
        src, dst = f"levels.{level}", f"levels/{level}"
        put(f"{dst}/pos_embed", take(f"{src}.pos_embed"))
        put(f"{dst}/pool/conv/kernel", take(f"{src}.pool.conv.weight"), conv)
        put(f"{dst}/pool/conv/bias", take(f"{src}.pool.conv.bias"))
        put(f"{dst}/pool/norm/scale", take(f"{src}.pool.norm.weight"))
        put(f"{dst}/pool/norm/bias", take(f"{src}.pool.norm.bias"))
        h = config.heads[level]
        for j in range(config.depths[level]):
            s, d = f"{src}.transformer_encoder.{j}", f"{dst}/layers/{j}"
            for a, b in (("norm1", "norm1"), ("norm2", "norm2")):
                put(f"{d}/{b}/scale", take(f"{s}.{a}.weight"))
                put(f"{d}/{b}/bias", take(f"{s}.{a}.bias"))
            for a in ("fc1", "fc2"):
                put(f"{d}/mlp/{a}/kernel", take(f"{s}.mlp.{a}.weight"), dense)
                put(f"{d}/mlp/{a}/bias", take(f"{s}.mlp.{a}.bias"))
            # qkv output features ordered (qkv, head, d) -> (C, 3, h, d)
            put(f"{d}/attn/qkv", take(f"{s}.attn.qkv.weight"), lambda w: w.T.reshape(w.shape[1], 3, h, -1))
            put(f"{d}/attn/qkv_bias", take(f"{s}.attn.qkv.bias"), lambda b: b.reshape(3, h, -1))
            # proj input features ordered (d, head): head index fastest -> (h, d, C)
            put(
                f"{d}/attn/proj",
                take(f"{s}.attn.proj.weight"),
                lambda w: w.T.reshape(-1, h, w.shape[0]).transpose(1, 0, 2),
            )
            put(f"{d}/attn/proj_bias", take(f"{s}.attn.proj.bias"))
    unused = sorted(set(sd) - used)
    if strict and unused:
        raise ValueError(f"timm NesT state dict has {len(unused)} entries the model does not use, e.g. {unused[:5]}")
    return out


def load_timm_nest(model: Nest, state_dict: Mapping[str, Any], *, strict: bool = True) -> Nest:
    """Loads a timm NesT state dict in place. timm weights need `gelu="exact"`; `nest_*_jx` weights
    `pool_padding="tf_same"`, plain `nest_*` weights `pool_padding="symmetric"`."""
    assign_params(
        model,
        timm_nest_to_params(state_dict, model.config, strict=strict),
        strict=strict,
        source="timm NesT state dict",
    )
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
