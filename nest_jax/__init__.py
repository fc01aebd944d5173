"""nest_jax: ViT, DeiT and NesT in JAX/Flax NNX.

`nest_jax.create_model(name, pretrained=True)` builds a model with timm's (or Google's) released
weights, or those of any checkpoint path; `nest_jax.list_models(pretrained=True)` lists the named
weights. Both live in `nest_jax.convert.hub` (the models layer cannot import the importers);
`nest_jax.models.create_model` builds fresh models only.
`nest_jax.load_params(path)` reads the weights of a training workdir, a `python -m nest_jax.convert`
output or an importer's file; `nest_jax.load_into(model, weights)` puts them into a model. All are
imported on first use, so `import nest_jax` stays light.
"""

import os

# etils.epath reaches gs:// through gcsfs, not tf.io.gfile, even when TensorFlow is installed
# (nest_jax/paths.py); a value the user set is kept.
os.environ.setdefault("EPATH_USE_TF", "false")

_LAZY = {
    "create_model": "nest_jax.convert.hub",
    "list_models": "nest_jax.convert.hub",
    "load_params": "nest_jax.convert.load",
    "load_into": "nest_jax.convert.load",
    "Weights": "nest_jax.convert.load",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nest_jax' has no attribute {name!r}")


__all__ = list(_LAZY)
