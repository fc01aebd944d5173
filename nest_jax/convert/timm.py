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

import jax.numpy as jnp
import numpy as np
from flax import nnx

from nest_jax.convert.common import assign_params, load_array_file, path_str
from nest_jax.models.resnet import ResNet
from nest_jax.models.vit import ViT

StateDict = Mapping[str, np.ndarray]


def _numpy(state_dict: Mapping) -> dict[str, np.ndarray]:
    """Accepts numpy arrays or torch tensors (e.g. a live `model.state_dict()`)."""
    out = {}
    for k, v in state_dict.items():
        if hasattr(v, "detach"):
            v = v.detach().cpu()
            v = v.float().numpy() if v.is_floating_point() else v.numpy()
        out[k] = np.asarray(v)
    return out


def _leaf(path: str, name: str, w: np.ndarray) -> tuple[str, np.ndarray] | None:
    """One torch tensor of a conv / linear / norm module at nest_jax `path` -> (full path, array)."""
    if name == "num_batches_tracked":
        return None
    if name == "running_mean":
        return f"{path}/mean", w
    if name == "running_var":
        return f"{path}/var", w
    if name == "bias":
        return f"{path}/bias", w
    if name != "weight":
        return f"{path}.{name}", w  # unknown: kept so a strict load names it
    if w.ndim == 4 and path.endswith("head"):  # BiT's 1x1-conv classifier is a linear layer
        return f"{path}/kernel", w.reshape(w.shape[0], -1).T
    if w.ndim == 4:
        return f"{path}/kernel", w.transpose(2, 3, 1, 0)
    if w.ndim == 2:
        return f"{path}/kernel", w.T
    return f"{path}/scale", w


# timm module name -> nest_jax module path, applied in order (first match wins per rule list).
_RESNET_V1_RULES = [
    (r"^conv1$", "stem/conv"),
    (r"^bn1$", "stem/norm"),
    (r"^fc$", "head"),
    (r"^layer(\d+)\.(\d+)\.conv(\d)$", lambda m: f"stages/{int(m[1]) - 1}/{m[2]}/conv{m[3]}"),
    (r"^layer(\d+)\.(\d+)\.bn(\d)$", lambda m: f"stages/{int(m[1]) - 1}/{m[2]}/norm{m[3]}"),
    (r"^layer(\d+)\.(\d+)\.downsample\.0$", lambda m: f"stages/{int(m[1]) - 1}/{m[2]}/downsample/conv"),
    (r"^layer(\d+)\.(\d+)\.downsample\.1$", lambda m: f"stages/{int(m[1]) - 1}/{m[2]}/downsample/norm"),
]
_RESNET_V2_RULES = [
    (r"^stem\.(conv|norm)$", r"stem/\1"),
    (r"^norm$", "norm"),
    (r"^head\.fc$", "head"),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.(conv\d|norm\d)$", r"stages/\1/\2/\3"),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.downsample\.(conv|norm)$", r"stages/\1/\2/downsample/\3"),
]


def _rename(module: str, rules) -> str | None:
    for pattern, repl in rules:
        if re.match(pattern, module):
            return re.sub(pattern, repl, module)
    return None


def _convert_modules(state_dict: StateDict, rules, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for key, w in state_dict.items():
        module, _, name = key.rpartition(".")
        path = _rename(module, rules)
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
    sd = _numpy(state_dict)
    rules = _RESNET_V1_RULES if model.config.kind == "v1" else _RESNET_V2_RULES
    return _convert_modules(sd, rules)


def timm_vit_to_params(state_dict: StateDict, model: ViT) -> dict[str, np.ndarray]:
    """timm ViT / DeiT / distilled DeiT / hybrid `vit_*_r50_*` state dict -> {'/'-path: array}.

    Shape tokens: a model with a shape token but no distillation token reads timm's `dist_token` /
    `head_dist` as `shape_token` / `head_shape` (the shape-token models of Naseer et al. are DeiT
    distilled checkpoints whose teacher is shape-biased); `shape_token` / `head_shape` keys are read
    as such.
    """
    sd = _numpy(state_dict)
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
        out.update(_convert_modules(backbone, _RESNET_V2_RULES, prefix="stem/"))
    return out


def _stat_problems(
    model: nnx.Module, arrays: Mapping[str, np.ndarray], strict: bool, source: str
) -> tuple[dict, list[str]]:
    """Shape/missing checks for BatchStats (common.assign_params handles only nnx.Param)."""
    stats = {path_str(k): v for k, v in nnx.to_flat_state(nnx.state(model, nnx.BatchStat))}
    problems = []
    for name, value in arrays.items():
        want = tuple(stats[name].shape)
        if tuple(np.shape(value)) != want:
            problems.append(f"shape mismatch for {name!r}: {source} has {tuple(np.shape(value))}, model expects {want}")
    if strict:
        problems += [
            f"{source} has no value for model statistic {m!r} {tuple(stats[m].shape)}"
            for m in sorted(set(stats) - set(arrays))
        ]
    return stats, problems


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
    stat_paths = {path_str(k) for k, _ in nnx.to_flat_state(nnx.state(model, nnx.BatchStat))}
    stat_arrays = {k: v for k, v in arrays.items() if k in stat_paths}
    params = {k: v for k, v in arrays.items() if k not in stat_paths}
    stats, problems = _stat_problems(model, stat_arrays, strict, source)
    if problems:
        raise ValueError("Cannot load parameters:\n  " + "\n  ".join(problems))
    assign_params(model, params, strict=strict, source=source)
    for name, value in stat_arrays.items():
        stats[name][...] = jnp.asarray(value, dtype=stats[name][...].dtype)
