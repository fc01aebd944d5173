"""Weights in and out: the one loader (`load_params` -> `Weights`, `load_into`) for training workdirs,
convert outputs and importers' files; the importers (timm state dicts, Google ViT `.npz`, official
NesT trees); position-embedding resize; orbax checkpoints of converted weights (`save_params`);
pretrained weights by name (`hub.create_model`, the Hugging Face Hub and GCS); export to timm and
Google ViT `.npz` (`export`).
Command line: `python -m nest_jax.convert --help`."""

from nest_jax.convert.checkpoint import read_meta, save_params
from nest_jax.convert.common import assign_params, load_array_file, param_shapes
from nest_jax.convert.load import Weights, fit_weights, load_into, load_params
from nest_jax.convert.resize import adapt_params, resize_grid, resize_pos_embed
from nest_jax.convert.vit_npz import load_vit_npz, params_to_vit_npz, vit_npz_to_params

# Importers of other families are imported on first use, so this package loads even when their
# optional dependencies (or their model families) are absent.
_LAZY = {
    "load_timm": "nest_jax.convert.timm",
    "timm_vit_to_params": "nest_jax.convert.timm",
    "load_official_nest": "nest_jax.convert.nest",
    "load_timm_nest": "nest_jax.convert.nest",
    "export_timm": "nest_jax.convert.export",
    "export_npz": "nest_jax.convert.export",
    "to_timm_state_dict": "nest_jax.convert.export",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nest_jax.convert' has no attribute {name!r}")


__all__ = [
    "Weights",
    "adapt_params",
    "assign_params",
    "fit_weights",
    "load_array_file",
    "load_into",
    "load_params",
    "load_vit_npz",
    "param_shapes",
    "params_to_vit_npz",
    "read_meta",
    "resize_grid",
    "resize_pos_embed",
    "save_params",
    "vit_npz_to_params",
    *_LAZY,
]
