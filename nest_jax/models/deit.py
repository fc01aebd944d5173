"""DeiT (Touvron et al. 2021): ViT with exact GELU and timm init, plus distillation and shape tokens.

A distilled DeiT is a `ViT` with prefix tokens ("cls", "dist"): token order [cls, dist, patches],
one position table with a slot for each, a head per token (`head`, `head_dist`). The shape token
(Naseer et al. 2021) is the same mechanism with a shape-biased teacher; `deit_*_shape_*` has
("cls", "shape") and `deit_*_distilled_shape_*` has all three tokens, each with its own head.
Training returns a dict token -> logits; inference the mean of the heads' raw logits.
"""

from __future__ import annotations

from nest_jax.models.vit import _register

# size: (dim, heads); all DeiTs are patch 16, depth 12, head dim 64, MLP ratio 4.
DEIT_SIZES = {"tiny": (192, 3), "small": (384, 6), "base": (768, 12)}
TOKEN_SETS = {
    "": ("cls",),
    "_distilled": ("cls", "dist"),
    "_shape": ("cls", "shape"),
    "_distilled_shape": ("cls", "dist", "shape"),
}

for _size, (_dim, _heads) in DEIT_SIZES.items():
    for _suffix, _tokens in TOKEN_SETS.items():
        _spec = dict(prefix_tokens=_tokens, gelu="exact", init="timm")
        _register(f"deit_{_size}{_suffix}_patch16_224", 16, _dim, 12, _heads, 4 * _dim, **_spec)
