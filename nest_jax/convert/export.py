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

A timm export's `config.json` names the timm architecture that holds the model, the `model_args`
that make it this model (timm's factories fix some fields -- NesT's widths, depths and heads, BiT's
depths -- which are then left out or refused) and the input settings (`pretrained_cfg`).
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from etils import epath
from flax import nnx

from nest_jax.convert import timm as timm_import
from nest_jax.convert.common import host_arrays
from nest_jax.convert.hub_table import IMAGENET
from nest_jax.errors import UserError

log = logging.getLogger(__name__)
FORMATS = ("timm", "npz")
IMAGENET_MEAN, IMAGENET_STD = IMAGENET


_TORCH_NAMES = {"mean": "running_mean", "var": "running_var", "bias": "bias", "scale": "weight"}
_ATTN = ("attn/qkv", "attn/qkv_bias", "attn/proj", "attn/proj_bias")


def _torch_leaf(path: str, w: np.ndarray) -> dict[str, np.ndarray]:
    """Inverse of `timm._leaf`: one nest_jax leaf of a conv / linear / norm module -> {timm key: array}."""
    module, _, leaf = path.replace("/", ".").rpartition(".")
    if leaf in _TORCH_NAMES:
        return {f"{module}.{_TORCH_NAMES[leaf]}": w}
    if leaf == "kernel" and w.ndim in (2, 4):  # (in, out) -> (out, in); conv HWIO -> OIHW
        return {f"{module}.weight": np.ascontiguousarray(w.T if w.ndim == 2 else w.transpose(3, 2, 0, 1))}
    raise UserError(f"parameter {module}/{leaf} {w.shape} has no timm counterpart")


def _attn_to_timm(block: str, sub: str, w: np.ndarray, *, head_fastest: bool) -> dict[str, np.ndarray]:
    """One of `_ATTN` -> timm's fused attention: qkv (D, 3, h, d) -> qkv.weight rows ordered
    (qkv, head, d); proj (h, d, D) -> proj.weight columns ordered (head, d), or (d, head) when
    timm merges heads with the head index fastest (NesT); the biases flattened."""
    if sub == "attn/qkv":
        return {f"{block}.attn.qkv.weight": np.ascontiguousarray(w.reshape(w.shape[0], -1).T)}
    if sub == "attn/proj":
        w = w.transpose(1, 0, 2) if head_fastest else w
        return {f"{block}.attn.proj.weight": np.ascontiguousarray(w.reshape(-1, w.shape[-1]).T)}
    return {f"{block}.{sub.replace('_', '.').replace('/', '.')}": w.reshape(-1)}


def _resnet_to_timm(arrays: dict[str, np.ndarray], kind: str, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for key, w in arrays.items():
        module, _, leaf = key.rpartition("/")
        name = timm_import.resnet_name(module, kind, to_timm=True)
        if name is None:
            raise UserError(f"ResNet parameter {key!r} has no timm counterpart")
        if name == "head.fc" and leaf == "kernel":  # BiT's classifier is a 1x1 conv in timm
            out[prefix + "head.fc.weight"] = np.ascontiguousarray(w.T[:, :, None, None])
            continue
        out.update(_torch_leaf(f"{prefix}{name}.{leaf}", w))
        if leaf == "var":  # torch's BatchNorm counts its updates; timm's files carry the count
            out[prefix + name + ".num_batches_tracked"] = np.zeros((), np.int64)
    return out


def _vit_to_timm(arrays: dict[str, np.ndarray], config: Any) -> dict[str, np.ndarray]:
    tokens = tuple(config.prefix_tokens)
    dist_as_shape = "shape" in tokens and "dist" not in tokens
    out, stem = {}, {}
    for key, w in arrays.items():
        key = key.replace("shape", "dist") if dist_as_shape else key  # only prefix-token names hold "shape"
        m = re.match(r"^layers/(\d+)/(.+)$", key)
        if m and m[2] in _ATTN:
            out.update(_attn_to_timm(f"blocks.{m[1]}", m[2], w, head_fastest=False))
        elif m and re.match(r"^(norm1|norm2|mlp/fc1|mlp/fc2)/(scale|bias|kernel)$", m[2]):
            out.update(_torch_leaf(f"blocks.{m[1]}/{m[2]}", w))
        elif m:
            raise UserError(f"ViT parameter {key!r} has no timm counterpart (timm's ViT has fused qkv attention)")
        elif key.startswith("stem/"):
            stem[key[len("stem/") :]] = w
        elif key in ("cls_token", "dist_token", "pos_embed"):
            out[key] = w
        elif re.match(r"^(patch_embed/proj|norm|head|head_dist)/(kernel|bias|scale)$", key):
            out.update(_torch_leaf(key, w))
        else:
            raise UserError(f"ViT parameter {key!r} has no timm counterpart")
    if stem:
        out.update(_resnet_to_timm(stem, "bit", prefix="patch_embed.backbone."))
    return out


def _nest_to_timm(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for key, w in arrays.items():
        m = re.match(r"^levels/(\d+)/(.+)$", key)
        layer = re.match(r"^layers/(\d+)/(.+)$", m[2]) if m else None
        if not m or m[2].startswith("pool/"):
            out.update(_torch_leaf(key, w))
        elif m[2] == "pos_embed":
            out[f"levels.{m[1]}.pos_embed"] = w
        elif layer and layer[2] in _ATTN:
            out.update(_attn_to_timm(f"levels.{m[1]}.transformer_encoder.{layer[1]}", layer[2], w, head_fastest=True))
        elif layer:
            out.update(_torch_leaf(f"levels.{m[1]}.transformer_encoder.{layer[1]}/{layer[2]}", w))
        else:
            raise UserError(f"NesT parameter {key!r} has no timm counterpart")
    return out


def _check_timm_representable(model: nnx.Module) -> list[str]:
    """Refuses what timm's architectures cannot hold; returns notes on what is approximated."""
    c, kind, notes = model.config, type(model).__name__, []  # kind: "ViT", "Nest" or "ResNet"
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


# timm's NesT sizes: (embed_dims, depths, num_heads) of nest_{tiny,small,base}(_jx).
NEST_SIZES = {
    "tiny": ((96, 192, 384), (2, 2, 8), (3, 6, 12)),
    "small": ((96, 192, 384), (2, 2, 20), (3, 6, 12)),
    "base": ((128, 256, 512), (2, 2, 20), (4, 8, 16)),
}


def timm_architecture(model_name: str, model: nnx.Module) -> str:
    """The timm model name whose architecture holds `model` (the arguments in `timm_model_args`)."""
    c, kind = model.config, type(model).__name__
    if kind == "Nest":
        for size in ("tiny", "small", "base"):  # timm's factories fix these three fields
            if (c.dims, c.depths, c.heads) == NEST_SIZES[size]:
                return f"nest_{size}_jx" if c.pool_padding == "tf_same" else f"nest_{size}"
        raise UserError(
            f"timm's NesT comes in three fixed sizes (nest_tiny/small/base); dims {c.dims}, depths {c.depths}, "
            f"heads {c.heads} are none of them, so timm cannot rebuild this model"
        )
    if kind == "ResNet":
        return "resnet50" if c.kind == "v1" else "resnetv2_50x1_bit"
    if c.stem:
        return "vit_base_r50_s16_224"
    if "shape" in c.prefix_tokens:  # written as a distilled DeiT (see the module docstring)
        return (
            model_name.replace("_shape", "")
            if "distilled" in model_name
            else model_name.replace("_shape", "_distilled")
        )
    if model_name.startswith(("vit_", "deit_")):
        return model_name  # the model_args below set any overridden width, depth or size
    return "deit_tiny_distilled_patch16_224" if len(c.prefix_tokens) == 2 else "vit_tiny_patch16_224"


def timm_model_args(model: nnx.Module) -> dict[str, Any]:
    """The arguments that make timm's architecture this model's (`model_args` of config.json)."""
    c, kind = model.config, type(model).__name__
    size = c.img_size if isinstance(c.img_size, int) else list(c.img_size)
    if kind == "ResNet" and c.kind == "bit":  # timm's factory fixes the depths
        if tuple(c.layers) != (3, 4, 6, 3):
            raise UserError(f"timm's resnetv2_50x1_bit has layers (3, 4, 6, 3), this model {tuple(c.layers)}")
        return dict(in_chans=c.in_chans)
    if kind == "ResNet":
        return dict(layers=list(c.layers), in_chans=c.in_chans)
    if kind == "Nest":  # widths, depths and heads are the architecture's own (timm_architecture)
        return dict(
            img_size=size,
            in_chans=c.in_chans,
            patch_size=c.patch_size,
            num_levels=len(c.depths),
            mlp_ratio=c.mlp_ratio,
            pad_type="same" if c.pool_padding == "tf_same" else "",
        )
    args = dict(
        img_size=size,
        in_chans=c.in_chans,
        embed_dim=c.dim,
        depth=c.depth,
        num_heads=c.num_heads,
        mlp_ratio=c.mlp_dim / c.dim,
        qkv_bias=c.qkv_bias,
    )
    if not c.stem:
        args["patch_size"] = c.patch_size
    if c.gelu != "exact":
        args["act_layer"] = "gelu_tanh"
    return args


def timm_config(
    model_name: str, model: nnx.Module, *, mean: tuple[float, ...], std: tuple[float, ...], notes: list[str] = ()
) -> dict[str, Any]:
    """The `config.json` timm reads for `local-dir:` / `hf-hub:` loading."""
    c = model.config
    size = (c.img_size, c.img_size) if isinstance(c.img_size, int) else tuple(c.img_size)
    arch = timm_architecture(model_name, model)
    return dict(
        architecture=arch,
        num_classes=c.num_classes,
        model_args=timm_model_args(model),
        pretrained_cfg=dict(
            tag="nest_jax",
            input_size=[c.in_chans, *size],
            fixed_input_size=type(model).__name__ != "ResNet",
            interpolation="bicubic",
            crop_pct=0.875,
            crop_mode="center",
            mean=list(mean),
            std=list(std),
            num_classes=c.num_classes,
        ),
        nest_jax=dict(model=model_name, notes=list(notes)),
    )


def _arrays(model: nnx.Module) -> dict[str, np.ndarray]:
    """The model's parameters and batch statistics as float32 host arrays, by '/'-joined path."""
    return {**host_arrays(model, nnx.Param, np.float32), **host_arrays(model, nnx.BatchStat, np.float32)}


def to_timm_state_dict(model: nnx.Module) -> dict[str, np.ndarray]:
    """The timm state dict of `model`'s weights, checked by reading it back through the importer."""
    _check_timm_representable(model)
    arrays = _arrays(model)
    kind, c = type(model).__name__, model.config
    if kind == "ViT":
        out = _vit_to_timm(arrays, c)
        back = timm_import.timm_vit_to_params(out, model)
    elif kind == "Nest":
        from nest_jax.convert.nest import timm_nest_to_params

        out = _nest_to_timm(arrays)
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


def _write_local(target: epath.Path, write: Callable[[Path], Any]) -> None:
    """`write(path)` into a local temporary file, then copied to `target` (the writers take local
    files; `target` may be gs://)."""
    with tempfile.TemporaryDirectory() as tmp:
        write(local := Path(tmp) / target.name)
        target.write_bytes(local.read_bytes())


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
    _write_local(out / "model.safetensors", lambda local: save_file(state, str(local), metadata={"format": "pt"}))
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for note in notes:
        log.warning("%s: %s", out, note)
    return notes


def export_npz(model: nnx.Module, out: Any, *, scheme: str = "linen", overwrite: bool = False) -> epath.Path:
    """Writes a ViT as a Google ViT `.npz` (`out` a file path ending in .npz, or a folder that gets
    `model.npz`), the inverse of `vit_npz_to_params`, checked by reading it back."""
    from nest_jax.convert.vit_npz import params_to_vit_npz, vit_npz_to_params

    if (kind := type(model).__name__) != "ViT":
        raise UserError(f"the Google ViT .npz layout holds ViTs only, not {kind}; export it --to=timm")
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
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_local(target, lambda local: np.savez(local, **{k: np.asarray(v, np.float32) for k, v in flat.items()}))
    return target
