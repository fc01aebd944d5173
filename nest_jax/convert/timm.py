"""timm state dicts -> nest_jax parameters: ViT, DeiT (distilled, shape token), hybrid R50+ViT,
ResNet-50 and BiT ResNet-v2.

Layout changes (PyTorch -> nest_jax):
  Linear weight (out, in)             -> kernel (in, out)
  Conv weight OIHW                    -> kernel HWIO
  attn.qkv.weight (3·h·d, D)          -> attn/qkv (D, 3, h, d); qkv.bias -> qkv_bias (3, h, d)
  attn.proj.weight (D, h·d)           -> attn/proj (h, d, D);   proj.bias -> proj_bias
  LayerNorm/GroupNorm/BatchNorm weight -> scale; running_mean/var -> BatchStat mean/var
  BiT head.fc (C, 2048, 1, 1) conv    -> head/kernel (2048, C)
Position embeddings are not resized here: a grid mismatch is a shape error (see convert/resize.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from flax import nnx

from nest_jax.convert.common import assign_params, load_array_file, to_numpy
from nest_jax.models.resnet import ResNet
from nest_jax.models.vit import ViT

StateDict = Mapping[str, np.ndarray]


_JAX_NAMES = {"running_mean": "mean", "running_var": "var", "bias": "bias"}


def _leaf(path: str, name: str, w: np.ndarray) -> tuple[str, np.ndarray] | None:
    """One torch tensor of a conv / linear / norm module at nest_jax `path` -> (full path, array)."""
    if name == "num_batches_tracked":
        return None
    if name in _JAX_NAMES:
        return f"{path}/{_JAX_NAMES[name]}", w
    if name != "weight":
        return f"{path}.{name}", w  # unknown: kept so a strict load names it
    if w.ndim == 4 and path.endswith("head"):  # BiT's 1x1-conv classifier is a linear layer
        return f"{path}/kernel", w.reshape(w.shape[0], -1).T
    if w.ndim == 4:
        return f"{path}/kernel", w.transpose(2, 3, 1, 0)
    if w.ndim == 2:
        return f"{path}/kernel", w.T
    return f"{path}/scale", w


# ResNet module names (timm, nest_jax) of each kind, tried in order; {S} is timm v1's 1-based stage {s} + 1.
RESNET_NAMES = {
    "v1": [
        ("conv1", "stem/conv"),
        ("bn1", "stem/norm"),
        ("fc", "head"),
        ("layer{S}.{b}.conv{n}", "stages/{s}/{b}/conv{n}"),
        ("layer{S}.{b}.bn{n}", "stages/{s}/{b}/norm{n}"),
        ("layer{S}.{b}.downsample.0", "stages/{s}/{b}/downsample/conv"),
        ("layer{S}.{b}.downsample.1", "stages/{s}/{b}/downsample/norm"),
    ],
    "v2": [
        ("stem.{m}", "stem/{m}"),
        ("norm", "norm"),
        ("head.fc", "head"),
        ("stages.{s}.blocks.{b}.{mn}", "stages/{s}/{b}/{mn}"),
        ("stages.{s}.blocks.{b}.downsample.{m}", "stages/{s}/{b}/downsample/{m}"),
    ],
}
_FIELDS = {"S": r"\d+", "s": r"\d+", "b": r"\d+", "n": r"\d", "m": "conv|norm", "mn": r"conv\d|norm\d"}


def resnet_name(module: str, kind: str, *, to_timm: bool = False) -> str | None:
    """The nest_jax path of a timm ResNet module of `kind` ("v1", else v2), or with `to_timm` the
    timm name of a nest_jax module; None for a module that has none."""
    for rule in RESNET_NAMES["v1" if kind == "v1" else "v2"]:
        src, dst = rule[::-1] if to_timm else rule
        pattern = re.sub(r"\\\{(\w+)\\\}", lambda f: f"(?P<{f[1]}>{_FIELDS[f[1]]})", re.escape(src))
        if m := re.fullmatch(pattern, module):
            fields = m.groupdict()
            if "S" in fields:
                fields["s"] = int(fields["S"]) - 1
            elif "s" in fields:
                fields["S"] = int(fields["s"]) + 1
            return dst.format(**fields)
    return None


def _convert_modules(state_dict: StateDict, kind: str, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for key, w in state_dict.items():
        module, _, name = key.rpartition(".")
        path = resnet_name(module, kind)
        if path is None:
            out[key] = w  # unknown module: kept under its timm name so a strict load reports it
            continue
        leaf = _leaf(prefix + path, name, w)
        if leaf is not None:
            out[leaf[0]] = leaf[1]
    return out


def timm_resnet_to_params(state_dict: StateDict, model: ResNet) -> dict[str, np.ndarray]:
    """timm/torchvision `resnet50` or timm `resnetv2_*_bit` state dict -> {'/'-path: array}.

    The result holds the parameters and, for BatchNorm nets, the running statistics
    (`…/norm1/mean`, `…/norm1/var`), which `load_timm` assigns to the model's BatchStats.
    """
    return _convert_modules(to_numpy(state_dict), model.config.kind)


def timm_vit_to_params(state_dict: StateDict, model: ViT) -> dict[str, np.ndarray]:
    """timm ViT / DeiT / distilled DeiT / hybrid `vit_*_r50_*` state dict -> {'/'-path: array}.

    Shape tokens: a model with a shape token but no distillation token reads timm's `dist_token` /
    `head_dist` as `shape_token` / `head_shape` (the shape-token models of Naseer et al. are DeiT
    distilled checkpoints whose teacher is shape-biased); `shape_token` / `head_shape` keys are read
    as such.
    """
    sd = to_numpy(state_dict)
    c = model.config
    h = c.num_heads
    dist_as_shape = "shape" in c.prefix_tokens and "dist" not in c.prefix_tokens
    out: dict[str, np.ndarray] = {}
    backbone = {}
    for key, w in sd.items():
        if key.startswith("patch_embed.backbone."):
            backbone[key[len("patch_embed.backbone.") :]] = w
            continue
        m = re.match(r"^blocks\.(\d+)\.(.+)$", key)
        if m:
            i, rest = m[1], m[2]
            p = f"layers/{i}"
            if rest == "attn.qkv.weight":  # rows ordered (qkv, head, d)
                d = w.shape[0] // (3 * h)
                out[f"{p}/attn/qkv"] = w.reshape(3, h, d, w.shape[1]).transpose(3, 0, 1, 2)
            elif rest == "attn.qkv.bias":
                out[f"{p}/attn/qkv_bias"] = w.reshape(3, h, -1)
            elif rest == "attn.proj.weight":  # columns ordered (head, d)
                out[f"{p}/attn/proj"] = w.T.reshape(h, -1, w.shape[0])
            elif rest == "attn.proj.bias":
                out[f"{p}/attn/proj_bias"] = w
            elif re.match(r"^(norm1|norm2|mlp\.fc1|mlp\.fc2)\.(weight|bias)$", rest):
                module, _, name = rest.rpartition(".")
                path, arr = _leaf(f"{p}/{module.replace('.', '/')}", name, w)
                out[path] = arr
            else:
                out[key] = w
            continue
        if dist_as_shape and key in ("dist_token", "head_dist.weight", "head_dist.bias"):
            key = key.replace("dist", "shape")
        if key in ("cls_token", "dist_token", "shape_token", "pos_embed"):
            out[key] = w
        elif re.match(r"^(patch_embed\.proj|norm|head|head_dist|head_shape)\.(weight|bias)$", key):
            module, _, name = key.rpartition(".")
            path, arr = _leaf(module.replace(".", "/"), name, w)
            out[path] = arr
        else:
            out[key] = w
    if backbone:
        # The hybrid's backbone is a non-pre-activation ResNetV2: same module names as BiT.
        out.update(_convert_modules(backbone, "bit", prefix="stem/"))
    return out


def load_timm(model: nnx.Module, state_dict_or_path: StateDict | str | Path, *, strict: bool = True) -> None:
    """Loads a timm checkpoint (state dict, or a `.pth`/`.safetensors`/`.npz` path) into `model` in place.

    Every shape is checked before anything is assigned; errors name the parameter and both shapes.
    """
    source = "timm checkpoint"
    if isinstance(state_dict_or_path, (str, Path)):
        source = f"timm checkpoint {state_dict_or_path}"
        state_dict_or_path = load_array_file(state_dict_or_path)
    if isinstance(model, ViT):
        arrays = timm_vit_to_params(state_dict_or_path, model)
    elif isinstance(model, ResNet):
        arrays = timm_resnet_to_params(state_dict_or_path, model)
    else:
        raise TypeError(f"load_timm supports ViT/DeiT (incl. hybrid) and ResNet models, not {type(model).__name__}")
    assign_params(model, arrays, strict=strict, source=source, kind=(nnx.Param, nnx.BatchStat))
