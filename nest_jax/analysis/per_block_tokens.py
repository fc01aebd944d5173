"""Classification from every layer's tokens through the shared final norm and head (Naseer et al.
2021, Section 3.5 "shape" and 3.6 "off-the-shelf tokens"; no retraining).

ViT / DeiT: after layer l the prefix tokens z_l[:, i] go through the model's own final LayerNorm
and the head of their token (`head`, `head_dist`, `head_shape`; the pre-logits Dense + tanh when
the model has one); the inference prediction averages the heads' raw logits, as the model does at
inference. The last layer reproduces the model's logits exactly. NesT: every level whose width
equals the top level's is read the same way (norm → mean over tokens → head); levels of another
width cannot use the shared head and are skipped. Also here: the cosine similarity between two
prefix tokens at the input and after every layer (DeiT: class vs distillation token).

The helpers `vit_token_logits` and `vit_run_layers` are the building blocks other analyses use to
run a ViT from the middle (token dropping, transfer features).
"""

from __future__ import annotations

from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nest_jax.analysis.forward import as_list, batch_mask, normalize
from nest_jax.errors import UserError

Array = jax.Array


def is_vit(model) -> bool:
    return hasattr(model, "config") and hasattr(model.config, "prefix_tokens") and hasattr(model, "layers")


def is_nest(model) -> bool:
    return hasattr(model, "config") and hasattr(model.config, "block_size") and hasattr(model, "levels")


def vit_token_logits(model, z: Array) -> dict[str, Array]:
    """Token sequence z (B, P+N, D) after any layer -> {token name: logits (B, K)} via norm and heads."""
    return model.readout(model.norm(z))[1]


def vit_run_layers(model, z: Array, start: int = 0, stop: int | None = None) -> Array:
    """Runs layers start..stop-1 of a ViT on a token sequence z (B, T, D) (any T: tokens may be dropped)."""
    for layer in list(model.layers)[start:stop]:
        z = layer(z, train=False)
    return z


@nnx.jit
def per_layer_logits(model, images: Array) -> dict[str, Array]:
    """{token: (L, B, K)} per layer (ViT) or per readable level (NesT), plus "inference" (L, B, K).

    images: (B, H, W, C), already normalized as the model expects.
    """
    if getattr(model.config, "num_classes", 0) <= 0:
        raise UserError("per-layer classification needs a model with a classification head (num_classes > 0)")
    if is_vit(model):
        _, inter = model(images, train=False, capture=("layers",))
        per = [vit_token_logits(model, z) for z in inter["layers"]]
        out = {n: jnp.stack([p[n] for p in per]) for n in per[0]}
        out["inference"] = jnp.stack([sum(p.values()) / len(p) for p in per])
        return out
    if is_nest(model):
        _, inter = model(images, train=False, capture=("features",))
        top = model.config.dims[-1]
        maps = [f for f in inter["features"] if f.shape[-1] == top]
        return {"inference": jnp.stack([model.head(model.norm(f).mean(axis=(1, 2))) for f in maps])}
    raise UserError(f"per-layer tokens need a ViT/DeiT or NesT, got {type(model).__name__}")


@nnx.jit(static_argnames=("a", "b"))
def token_cosine_per_layer(model, images: Array, a: str = "cls", b: str = "dist") -> Array:
    """Mean cosine similarity of prefix tokens a and b at the input (index 0) and after every layer.

    images: (B, H, W, C) normalized. -> (L + 1,)
    """
    if not is_vit(model):
        raise UserError("token cosine similarity needs a ViT/DeiT with several prefix tokens")
    c = model.config
    ia, ib = c.token_index(a), c.token_index(b)
    z = model.embed(images)
    _, inter = model(images, train=False, capture=("layers",))
    seq = [z] + list(inter["layers"])

    def cos(t):
        u, v = t[:, ia], t[:, ib]
        return jnp.mean(jnp.sum(u * v, -1) / (jnp.linalg.norm(u, axis=-1) * jnp.linalg.norm(v, axis=-1) + 1e-12))

    return jnp.stack([cos(t) for t in seq])


def run_per_block_tokens(model, batches: Iterable[dict], *, mean: tuple, std: tuple) -> dict:
    """Top-1 of every layer's tokens: {"top1": {token: [per layer]}, "layers": L} for a ViT/DeiT;
    for NesT {"top1": {"inference": [per level]}, "levels": L} (each level's output with the head's
    width, through the final norm, global average pooling and the head).

    `top1["inference"]` averages the heads' logits as the model does; its last entry equals the
    model's own top-1. With several prefix tokens, also {"cosine": {"cls_<token>": [input, layers…]}}.
    """
    hits, count = None, 0.0
    cosines: dict[str, list] = {}
    for bt in as_list(batches):
        x = normalize(jnp.asarray(bt["image"]), mean, std)
        m = batch_mask(bt).astype(np.float64)
        per = per_layer_logits(model, x)
        ok = {n: (np.asarray(jnp.argmax(v, -1)) == np.asarray(bt["label"])[None]) @ m for n, v in per.items()}
        hits = ok if hits is None else {n: hits[n] + ok[n] for n in hits}
        count += float(m.sum())
        for t in model.config.prefix_tokens[1:] if is_vit(model) else ():
            cos = np.asarray(token_cosine_per_layer(model, x, a="cls", b=t))
            cosines.setdefault(f"cls_{t}", []).append((cos, float(m.sum())))
    out = {"top1": {n: (v / max(count, 1.0)).tolist() for n, v in hits.items()}}
    out["layers" if is_vit(model) else "levels"] = len(next(iter(hits.values())))  # ViT layers, NesT levels
    if cosines:
        out["cosine"] = {k: (sum(c * w for c, w in v) / sum(w for _, w in v)).tolist() for k, v in cosines.items()}
    return out
