"""Model registry: `create_model(name, *, num_classes, img_size, rngs, **overrides)`, timm-style."""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from collections.abc import Callable
from typing import Any

from flax import nnx

_REGISTRY: dict[str, Callable[..., nnx.Module]] = {}


def register_model(
    fn: Callable[..., nnx.Module], *, name: str | None = None, doc: str | None = None
) -> Callable[..., nnx.Module]:
    """Registers a builder `fn(*, num_classes, img_size, rngs, **overrides)` under its name (or
    `name`, which with `doc` also becomes the builder's `__name__` and `__doc__`: one variant each).

    `img_size` reaches the builder as None when the user gave none: the builder picks its native size.
    """
    if name is not None:
        fn.__name__ = fn.__qualname__ = name
    if doc is not None:
        fn.__doc__ = doc
    if fn.__name__ in _REGISTRY:
        raise ValueError(f"model {fn.__name__!r} registered twice")
    _REGISTRY[fn.__name__] = fn
    return fn


def register_variant(name: str, model: Callable[..., nnx.Module], config: type, spec: dict, doc: str) -> None:
    """Registers `name` as `model(config(**spec, **overrides), rngs=rngs)`.

    `img_size` sets the config's field when given; `num_classes` does when the config has one.
    The registry's uniform arguments a config lacks (`num_classes`, an `in_chans` override) are
    dropped: an unconditional generator has no classes and no input channels.
    """
    known = {f.name for f in dataclasses.fields(config)}

    def builder(*, num_classes: int = 1, img_size=None, rngs: nnx.Rngs, **overrides) -> nnx.Module:
        fields = dict(spec, **overrides, num_classes=num_classes)
        if img_size is not None:
            fields["img_size"] = img_size
        fields = {k: v for k, v in fields.items() if k in known or k not in ("in_chans", "num_classes")}
        return model(config(**fields), rngs=rngs)

    register_model(builder, name=name, doc=doc)


def _load_families() -> None:
    # Importing the family modules runs their @register_model decorators.
    from nest_jax.models import conv_gan, deit, nest, nest_gan, resnet, vit, vit_gan  # noqa: F401


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of registered models matching a glob pattern, e.g. `list_models("deit_*")`."""
    _load_families()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def create_model(
    name: str,
    *,
    num_classes: int = 1000,
    img_size: int | tuple[int, int] | None = None,
    rngs: nnx.Rngs | None = None,
    **overrides: Any,
) -> nnx.Module:
    """Builds a registered model with fresh parameters.

    Args:
      name: a name from `list_models()`, e.g. "vit_small_patch16_224", "nest_tiny".
      num_classes: size of the classification head(s); 0 gives a feature extractor.
      img_size: input resolution (int or (height, width)); None = the variant's native size
        (224 for the ImageNet models, 32 for the `*_cifar` NesTs). Builders receive None as is.
      rngs: `nnx.Rngs` for the parameters and dropout; `nnx.Rngs(0)` when omitted.
      **overrides: any field of the family's config (drop_path_rate, gelu, dtype, …).
    """
    _load_families()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown model {name!r}.{hint} See nest_jax.models.list_models().")
    rngs = rngs if rngs is not None else nnx.Rngs(0)
    return _REGISTRY[name](num_classes=num_classes, img_size=img_size, rngs=rngs, **overrides)
