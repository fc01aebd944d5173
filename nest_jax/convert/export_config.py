"""The `config.json` of a timm export: which timm architecture holds a nest_jax model and the
arguments (`model_args`) that make it this model, plus the input settings timm's data pipeline
reads (`pretrained_cfg`: input size, mean/std). timm rebuilds the network from `architecture` and
`model_args` when it loads a `local-dir:` or `hf-hub:` folder; its factories fix some fields (NesT's
widths, depths and heads, BiT's depths), which are then left out or refused.
"""

from __future__ import annotations

from typing import Any

from flax import nnx

from nest_jax.errors import UserError

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
    cfg = dict(
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
    return cfg
