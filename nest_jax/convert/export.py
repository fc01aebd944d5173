"""Weights out: nest_jax parameters -> a timm state dict (+ the `config.json` timm reads), or a
Google ViT `.npz`.

Each export inverts an importer of this package (`timm.py`, `nest.py`, `vit_npz.py`) and is checked
against it: the written arrays are read back through that importer and must reproduce every
parameter and statistic bit for bit, so an export can never disagree with the import. The layout
changes are the importers' in reverse (docs/checkpoint_formats.md):
  kernel (in, out) -> Linear weight (out, in); conv HWIO -> OIHW; scale -> weight;
  ViT attn/qkv (D, 3, h, d) -> qkv.weight rows (qkv, head, d); attn/proj (h, d, D) -> proj.weight;
  NesT attn/proj (h, d, C) -> proj.weight columns ordered (d, head) (timm's NesT merges heads with
  the head index fastest); BatchNorm mean/var -> running_mean/var (+ num_batches_tracked = 0).

What timm cannot represent is refused or noted, never silently changed: a model with a shape token
and no distillation token is written as timm's distilled DeiT (the same two-token mechanism; its
`head_dist` is the shape head), three prefix tokens, mean-pooled or sincos ViTs, grouped attention
and multi-query NesT are refused; NesT with the tanh GELU is written with a note (timm's NesT has
the exact GELU only, so its logits differ by the GELU's approximation).
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from etils import epath
from flax import nnx

from nest_jax.convert import timm as timm_import
from nest_jax.convert.common import path_str
from nest_jax.convert.export_config import timm_config
from nest_jax.errors import UserError

log = logging.getLogger(__name__)
FORMATS = ("timm", "npz")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _linear(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.T)


def _conv(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.transpose(3, 2, 0, 1))  # HWIO -> OIHW


def _torch_leaf(module: str, leaf: str, w: np.ndarray) -> tuple[str, np.ndarray]:
    """Inverse of `timm._leaf`: one nest_jax leaf of a conv / linear / norm module -> (timm key, array)."""
    if leaf == "mean":
        return f"{module}.running_mean", w
    if leaf == "var":
        return f"{module}.running_var", w
    if leaf == "bias":
        return f"{module}.bias", w
    if leaf == "scale":
        return f"{module}.weight", w
    if leaf == "kernel" and w.ndim == 4:
        return f"{module}.weight", _conv(w)
    if leaf == "kernel" and w.ndim == 2:
        return f"{module}.weight", _linear(w)
    raise UserError(f"parameter {module}/{leaf} {w.shape} has no timm counterpart")


# Inverses of timm.py's _RESNET_V1_RULES / _RESNET_V2_RULES (nest_jax module path -> timm module).
_RESNET_V1_INVERSE = [
    (r"^stem/conv$", "conv1"),
    (r"^stem/norm$", "bn1"),
    (r"^head$", "fc"),
    (r"^stages/(\d+)/(\d+)/conv(\d)$", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.conv{m[3]}"),
    (r"^stages/(\d+)/(\d+)/norm(\d)$", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.bn{m[3]}"),
    (r"^stages/(\d+)/(\d+)/downsample/conv$", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.0"),
    (r"^stages/(\d+)/(\d+)/downsample/norm$", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.1"),
]
_RESNET_V2_INVERSE = [
    (r"^stem/(conv|norm)$", r"stem.\1"),
    (r"^norm$", "norm"),
    (r"^head$", "head.fc"),
    (r"^stages/(\d+)/(\d+)/(conv\d|norm\d)$", r"stages.\1.blocks.\2.\3"),
    (r"^stages/(\d+)/(\d+)/downsample/(conv|norm)$", r"stages.\1.blocks.\2.downsample.\3"),
]


def _resnet_to_timm(arrays: dict[str, np.ndarray], kind: str, prefix: str = "") -> dict[str, np.ndarray]:
    rules = _RESNET_V1_INVERSE if kind == "v1" else _RESNET_V2_INVERSE
    out = {}
    for key, w in arrays.items():
        module, _, leaf = key.rpartition("/")
        name = timm_import._rename(module, rules)
        if name is None:
            raise UserError(f"ResNet parameter {key!r} has no timm counterpart")
        if name == "head.fc" and leaf == "kernel":  # BiT's classifier is a 1x1 conv in timm
            out[prefix + "head.fc.weight"] = np.ascontiguousarray(w.T[:, :, None, None])
            continue
        k, v = _torch_leaf(prefix + name, leaf, w)
        out[k] = v
        if leaf == "var":  # torch's BatchNorm counts its updates; timm's files carry the count
            out[prefix + name + ".num_batches_tracked"] = np.zeros((), np.int64)
    return out


def _vit_to_timm(arrays: dict[str, np.ndarray], config: Any) -> dict[str, np.ndarray]:
    tokens = tuple(config.prefix_tokens)
    dist_as_shape = "shape" in tokens and "dist" not in tokens
    out, stem = {}, {}
    for key, w in arrays.items():
        m = re.match(r"^layers/(\d+)/(.+)$", key)
        if m:
            i, rest = m[1], m[2]
            b = f"blocks.{i}"
            if rest == "attn/qkv":  # (D, 3, h, d) -> rows ordered (qkv, head, d)
                out[f"{b}.attn.qkv.weight"] = np.ascontiguousarray(w.transpose(1, 2, 3, 0).reshape(-1, w.shape[0]))
            elif rest == "attn/qkv_bias":
                out[f"{b}.attn.qkv.bias"] = w.reshape(-1)
            elif rest == "attn/proj":  # (h, d, D) -> (D, h·d)
                out[f"{b}.attn.proj.weight"] = _linear(w.reshape(-1, w.shape[-1]))
            elif rest == "attn/proj_bias":
                out[f"{b}.attn.proj.bias"] = w
            elif re.match(r"^(norm1|norm2|mlp/fc1|mlp/fc2)/(scale|bias|kernel)$", rest):
                module, _, leaf = rest.rpartition("/")
                k, v = _torch_leaf(f"{b}.{module.replace('/', '.')}", leaf, w)
                out[k] = v
            else:
                raise UserError(f"ViT parameter {key!r} has no timm counterpart (timm's ViT has fused qkv attention)")
            continue
        if key.startswith("stem/"):
            stem[key[len("stem/") :]] = w
            continue
        if dist_as_shape:
            key = key.replace("shape", "dist")
        if key in ("cls_token", "dist_token", "pos_embed"):
            out[key] = w
        elif re.match(r"^(patch_embed/proj|norm|head|head_dist)/(kernel|bias|scale)$", key):
            module, _, leaf = key.rpartition("/")
            k, v = _torch_leaf(module.replace("/", "."), leaf, w)
            out[k] = v
        else:
            raise UserError(f"ViT parameter {key!r} has no timm counterpart")
    if stem:
        out.update(_resnet_to_timm(stem, "bit", prefix="patch_embed.backbone."))
    return out


def _nest_to_timm(arrays: dict[str, np.ndarray], config: Any) -> dict[str, np.ndarray]:
    out = {}
    for key, w in arrays.items():
        m = re.match(r"^levels/(\d+)/(.+)$", key)
        if not m:
            module, _, leaf = key.rpartition("/")
            k, v = _torch_leaf(module.replace("/", "."), leaf, w)
            out[k] = v
            continue
        level, rest = int(m[1]), m[2]
        src = f"levels.{level}"
        layer = re.match(r"^layers/(\d+)/(.+)$", rest)
        if rest == "pos_embed":
            out[f"{src}.pos_embed"] = w
        elif rest.startswith("pool/"):
            module, _, leaf = rest.rpartition("/")
            k, v = _torch_leaf(f"{src}.{module.replace('/', '.')}", leaf, w)
            out[k] = v
        elif layer:
            s, sub = f"{src}.transformer_encoder.{layer[1]}", layer[2]
            if sub == "attn/qkv":  # (C, 3, h, d) -> rows ordered (qkv, head, d)
                out[f"{s}.attn.qkv.weight"] = np.ascontiguousarray(w.reshape(w.shape[0], -1).T)
            elif sub == "attn/qkv_bias":
                out[f"{s}.attn.qkv.bias"] = w.reshape(-1)
            elif sub == "attn/proj":  # (h, d, C) -> columns ordered (d, head): head index fastest
                out[f"{s}.attn.proj.weight"] = _linear(w.transpose(1, 0, 2).reshape(-1, w.shape[-1]))
            elif sub == "attn/proj_bias":
                out[f"{s}.attn.proj.bias"] = w
            else:
                module, _, leaf = sub.rpartition("/")
                k, v = _torch_leaf(f"{s}.{module.replace('/', '.')}", leaf, w)
                out[k] = v
        else:
            raise UserError(f"NesT parameter {key!r} has no timm counterpart")
    return out


def _family(model: nnx.Module) -> str:
    return type(model).__name__  # "ViT", "Nest", "ResNet"


def _check_timm_representable(model: nnx.Module) -> list[str]:
    """Refuses what timm's architectures cannot hold; returns notes on what is approximated."""
    c, kind, notes = model.config, _family(model), []
    if kind == "ViT":
        tokens = tuple(c.prefix_tokens)
        if len(tokens) > 2 or tokens not in (("cls",), ("cls", "dist"), ("cls", "shape")):
            raise UserError(
                f"timm has no ViT with prefix tokens {tokens}: its DeiT holds at most a class and a distillation "
                "token; export a model with (cls,), (cls, dist) or (cls, shape)"
            )
        if "shape" in tokens:
            notes.append(
                "the shape token is written as timm's distillation token (dist_token, head_dist): timm has no "
                "shape token, the mechanism is the same (a second prefix token with its own head)"
            )
        bad = {
            "pool": (c.pool, "token"),
            "pos_embed": (c.pos_embed, "learned"),
            "representation_size": (c.representation_size, None),
            "skip_removed": (tuple(c.skip_removed), ()),
        }
        for field, (have, want) in bad.items():
            if have != want:
                raise UserError(
                    f"timm's ViT cannot represent {field}={have!r} (only {want!r}); export to npz or keep nest_jax"
                )
    elif kind == "Nest":
        if c.attention != "multi_head":
            raise UserError("timm's NesT has multi-head attention only; a multi-query NesT cannot be exported to timm")
        if c.skip_removed:
            raise UserError(f"timm's NesT cannot represent skip_removed={c.skip_removed}")
        side = (c.img_size if isinstance(c.img_size, int) else c.img_size[0]) // c.patch_size
        if side != c.block_size * 2 ** (len(c.depths) - 1):
            raise UserError(
                f"timm's NesT has one top block and blocks of {side // 2 ** (len(c.depths) - 1)} tokens at this size; "
                f"this model's blocks are {c.block_size}: it cannot be exported to timm"
            )
        if c.gelu != "exact":
            notes.append(
                f"timm's NesT has the exact GELU only; these weights were trained with gelu={c.gelu!r}, so timm's "
                "logits differ from nest_jax's by that approximation"
            )
    elif kind != "ResNet":
        raise UserError(f"timm export covers ViT/DeiT, NesT and ResNet, not {kind}")
    return notes


def _arrays(model: nnx.Module) -> dict[str, np.ndarray]:
    """The model's parameters and batch statistics as float32 host arrays, by '/'-joined path."""
    state = [*nnx.to_flat_state(nnx.state(model, nnx.Param)), *nnx.to_flat_state(nnx.state(model, nnx.BatchStat))]
    return {path_str(k): np.asarray(v[...], np.float32) for k, v in state}


def to_timm_state_dict(model: nnx.Module) -> dict[str, np.ndarray]:
    """The timm state dict of `model`'s weights, checked by reading it back through the importer."""
    _check_timm_representable(model)
    arrays = _arrays(model)
    kind, c = _family(model), model.config
    if kind == "ViT":
        out = _vit_to_timm(arrays, c)
        back = timm_import.timm_vit_to_params(out, model)
    elif kind == "Nest":
        from nest_jax.convert.nest import timm_nest_to_params

        out = _nest_to_timm(arrays, c)
        back = timm_nest_to_params(out, c)
    else:
        out = _resnet_to_timm(arrays, c.kind)
        back = timm_import.timm_resnet_to_params(out, model)
    back = {k: v for k, v in back.items() if not k.endswith("num_batches_tracked")}
    wrong = sorted(k for k in arrays if k not in back or not np.array_equal(back[k], arrays[k]))
    if wrong or set(back) - set(arrays):
        raise AssertionError(
            f"timm export does not invert the importer for {wrong[:5] or sorted(set(back) - set(arrays))[:5]}"
        )
    return out


def _prepare(out: Any, overwrite: bool) -> epath.Path:
    out = epath.Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out} exists and is not empty; choose another --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    return out


def export_timm(
    model: nnx.Module,
    out: Any,
    *,
    model_name: str,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    overwrite: bool = False,
) -> list[str]:
    """Writes `out/model.safetensors` and `out/config.json`, a folder timm loads with
    `timm.create_model("local-dir:OUT", pretrained=True)` (or from the Hub once uploaded).
    mean / std: the input normalization the model was trained with. Returns the notes on what timm
    approximates (also in config.json's `nest_jax.notes`, and logged)."""
    from safetensors.numpy import save_file

    notes = _check_timm_representable(model)
    state = to_timm_state_dict(model)
    config = timm_config(model_name, model, mean=mean, std=std, notes=notes)
    out = _prepare(out, overwrite)
    with tempfile.TemporaryDirectory() as tmp:  # safetensors writes local files; out may be gs://
        local = Path(tmp) / "model.safetensors"
        save_file(state, str(local), metadata={"format": "pt"})
        (out / "model.safetensors").write_bytes(local.read_bytes())
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for note in notes:
        log.warning("%s: %s", out, note)
    return notes


def export_npz(model: nnx.Module, out: Any, *, scheme: str = "linen", overwrite: bool = False) -> epath.Path:
    """Writes a ViT as a Google ViT `.npz` (`out` a file path ending in .npz, or a folder that gets
    `model.npz`), the inverse of `vit_npz_to_params`, checked by reading it back."""
    from nest_jax.convert.vit_npz import params_to_vit_npz, vit_npz_to_params

    if _family(model) != "ViT":
        raise UserError(f"the Google ViT .npz layout holds ViTs only, not {_family(model)}; export it --to=timm")
    try:
        flat = params_to_vit_npz(model, scheme=scheme)
    except ValueError as e:
        raise UserError(f"cannot write a Google ViT .npz: {e}") from None
    arrays, back = _arrays(model), vit_npz_to_params(flat)
    if set(back) != set(arrays) or any(not np.array_equal(back[k], arrays[k]) for k in arrays):
        raise AssertionError("npz export does not invert the importer")
    target = epath.Path(out)
    if not str(target).endswith(".npz"):
        target = _prepare(target, overwrite) / "model.npz"
    elif target.exists() and not overwrite:
        raise UserError(f"{target} exists; choose another --out or pass --overwrite")
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "model.npz"
        np.savez(local, **{k: np.asarray(v, np.float32) for k, v in flat.items()})
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(local.read_bytes())
    return target
