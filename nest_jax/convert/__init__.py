"""Weight importers: timm state dicts, Google ViT `.npz`, official NesT trees; position-embedding resize."""
from nest_jax.convert.common import load_array_file, load_params, param_shapes

__all__ = ["load_array_file", "load_params", "param_shapes"]
