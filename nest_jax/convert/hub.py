"""Pretrained weights by name: `create_model(name, pretrained=...)` and `list_models(pretrained=True)`.

`pretrained` is
  - True, or a tag ("augreg2_in21k_ft_in1k"; or the name in timm's "name.tag" form): timm's release
    on the Hugging Face Hub, `timm/<architecture>.<tag>` (the table in `hub_table.py`), read from
    `model.safetensors` through `huggingface_hub.hf_hub_download` -- cache first, so a filled
    cache works offline (HF_HUB_OFFLINE=1); a cache on an object store (HF_HUB_CACHE=gs://...) is
    read through `etils.epath` in the hub's own layout (`models--timm--<name>/snapshots/<rev>/`);
  - a "gcs_<tag>" tag: Google's own release on GCS (ViT `.npz`, official NesT folder), read
    through `etils.epath`;
  - a path (local or gs://): anything `nest_jax.load_params` reads (convert/load.py).
Every source goes through the one loader (`load_params` -> `load_into`): position tables are
resized to the model's grid and a head of another class count keeps its fresh initialization,
each change logged. Nothing needs torch: safetensors files are parsed by `convert/common.py`
(bfloat16 widened exactly to float32).

This lives in the convert layer because `nest_jax.models` cannot import the importers; the package
top (`nest_jax.create_model`, `nest_jax.list_models`) points here.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import os
import zipfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx

from nest_jax.convert.common import path_str
from nest_jax.convert.hub_table import GCS, TIMM
from nest_jax.convert.load import (
    HUB_WEIGHTS,
    SOURCE_GELU,
    Weights,
    detect_source,
    fit_weights,
    from_source,
    is_msgpack,
    load_into,
    load_params,
    read_file,
    weights_file_in,
)
from nest_jax.errors import UserError

log = logging.getLogger(__name__)
# The architecture fields each source's weights were trained with (docs/models.md): PyTorch's exact
# GELU for timm, the tanh form for Google's JAX code; timm's `nest_*_jx` pools with TF-SAME padding.
TIMM_KWARGS = {"nest": {"gelu": "exact", "pool_padding": "tf_same"}}
GCS_KWARGS = {"nest": {"gelu": "tanh"}, "vit": {"gelu": "tanh", "init": "official"}}


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """Where a model's named weights are and what their `pretrained_cfg` says.

    location: the hub id ("timm/vit_small_patch16_224.augreg_in21k_ft_in1k") or the gs:// URL.
    kwargs: the architecture fields the weights need (`create_model` overrides).
    """

    model: str
    tag: str
    location: str
    num_classes: int
    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    kwargs: dict[str, Any]


def tags(name: str) -> list[str]:
    """The named weights of a model, timm's default first, then Google's GCS releases."""
    return list(TIMM.get(name, ("", {}))[1]) + list(GCS.get(name, {}))


def resolve(name: str, pretrained: bool | str = True) -> Pretrained:
    """The weights `pretrained` (True or a tag) names for model `name` (which may carry ".tag")."""
    name, _, dotted = name.partition(".")
    tag = dotted or (None if pretrained is True else str(pretrained))
    known = tags(name)
    if not known:
        raise UserError(
            f"no named pretrained weights for {name!r}; pass pretrained=PATH to a checkpoint, or pick a model "
            "from nest_jax.list_models(pretrained=True)"
        )
    tag, family = tag or known[0], name.split("_")[0]
    if name in TIMM and tag in TIMM[name][1]:
        arch, table = TIMM[name]
        classes, size, (mean, std) = table[tag]
        return Pretrained(name, tag, f"timm/{arch}.{tag}", classes, size, mean, std, TIMM_KWARGS.get(family, {}))
    if tag in GCS.get(name, {}):
        url, classes, size, (mean, std) = GCS[name][tag]
        return Pretrained(name, tag, url, classes, size, mean, std, GCS_KWARGS.get(family, {}))
    raise UserError(f"{name} has no pretrained weights tagged {tag!r}; its tags: {', '.join(known)}")


def hub_file(hub_id: str, filename: str = HUB_WEIGHTS, *, cache_dir: str | None = None) -> epath.Path:
    """The cached (or, online, downloaded) `filename` of Hub repository `hub_id`.

    cache_dir: the Hugging Face cache (default: HF_HUB_CACHE, read at call time, else the
    library's default). A cache on an object store is read directly in the hub's layout (no
    download). Offline (HF_HUB_OFFLINE=1) only the cache is consulted; a missing entry is one
    UserError naming the hub id and how to fill the cache.
    """
    cache_dir = cache_dir or os.environ.get("HF_HUB_CACHE") or None
    fill = (
        f"fill the cache where there is network, e.g. `hf download {hub_id} {filename}` "
        f"(HF_HUB_CACHE={cache_dir or '<default>'}), or pass pretrained=PATH to the file"
    )
    if cache_dir and "://" in cache_dir:
        return _remote_cache_file(epath.Path(cache_dir), hub_id, filename, fill)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    try:
        return epath.Path(hf_hub_download(hub_id, filename, cache_dir=cache_dir, local_files_only=offline))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        raise UserError(f"{hub_id}: {filename} is not in the Hugging Face cache and downloads are off; {fill}") from e
    except (HfHubHTTPError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{hub_id}: cannot fetch {filename} ({first}); {fill}") from e


def _remote_cache_file(cache: epath.Path, hub_id: str, filename: str, fill: str) -> epath.Path:
    """`<cache>/models--<org>--<name>/snapshots/<refs/main>/<filename>`, the hub's cache layout."""
    repo = cache / ("models--" + hub_id.replace("/", "--"))
    ref = repo / "refs" / "main"
    revision = ref.read_text().strip() if ref.exists() else None
    found = repo / "snapshots" / revision / filename if revision else None
    if found is None or not found.exists():
        raise UserError(f"{hub_id}: {filename} is not in the Hugging Face cache {cache}; {fill}")
    return found


def create_model(
    name: str,
    pretrained: bool | str | os.PathLike = False,
    *,
    num_classes: int | None = None,
    img_size: int | tuple[int, int] | None = None,
    rngs: nnx.Rngs | None = None,
    cache_dir: str | None = None,
    **overrides: Any,
) -> nnx.Module:
    """`nest_jax.models.create_model`, with pretrained weights (see the module docstring).

    num_classes: None = the weights' class count (1000 without weights); another count keeps a fresh
    head. img_size: None = the variant's native size; another size resizes the position tables.
    overrides: architecture fields, over those the weights need (e.g. the GELU form).
    """
    from nest_jax.models import create_model as build

    name, _, dotted = name.partition(".")
    if not dotted and not pretrained:
        classes = 1000 if num_classes is None else num_classes
        return build(name, num_classes=classes, img_size=img_size, rngs=rngs, **overrides)
    kwargs, classes, where = locate(f"{name}.{dotted}" if dotted else name, pretrained, cache_dir=cache_dir)
    kwargs = {**kwargs, **overrides}
    classes = classes if num_classes is None else num_classes
    read_classes = 1000 if classes is None else classes
    weights, extra, shape = _read(
        where, lambda **kw: build(name, num_classes=read_classes, img_size=img_size, **kw), kwargs, name
    )
    kwargs = {**extra, **kwargs}
    if classes is None:  # a path: the checkpoint's own class count
        head = weights.params.get("head/kernel")
        classes = 0 if head is None else int(np.shape(head)[-1])
    if rngs is not None:  # the caller's random streams: a regular build, then the weights assigned
        model = build(name, num_classes=classes, img_size=img_size, rngs=rngs, **kwargs)
        load_into(model, weights, headless_ok=True)
    else:
        make = lambda: build(name, num_classes=classes, img_size=img_size, **kwargs)  # noqa: E731
        model = _materialize(make, weights, shape if classes == read_classes else None)
    log.info("%s: loaded pretrained weights from %s", name, weights.path or where)
    return model


def _materialize(make: Any, weights: Weights, abstract: nnx.Module | None = None) -> nnx.Module:
    """The model `make()` builds (with `nnx.Rngs(0)`), holding `weights` (fitted to it), without
    initializing what the weights replace: only the rest -- a fresh head, dropout streams -- is
    computed, by one jitted build whose other outputs XLA drops. Same values as `make()` + `load_into`."""
    abstract = nnx.eval_shape(make) if abstract is None else abstract  # (tracing a build takes seconds)
    fitted, _ = fit_weights(abstract, weights, headless_ok=True)  # each change logged there, once
    loaded = {**fitted.params, **fitted.batch_stats}
    graphdef, state = nnx.split(abstract)
    flat = list(nnx.to_flat_state(state))
    missing = {path_str(k) for k, _ in flat if path_str(k) not in loaded}

    def rest() -> dict[str, Any]:
        return {path_str(k): v[...] for k, v in nnx.to_flat_state(nnx.state(make())) if path_str(k) in missing}

    computed = jax.jit(rest)() if missing else {}
    leaves = []
    for k, v in flat:
        name = path_str(k)
        value = jnp.asarray(loaded[name], dtype=v.dtype) if name in loaded else computed[name]
        leaves.append((k, v.replace(value)))
    return nnx.merge(graphdef, nnx.from_flat_state(leaves))


def _read(where: epath.Path, make: Any, kwargs: dict[str, Any], name: str) -> tuple[Weights, dict[str, Any], Any]:
    """The weights at `where`, converted into the architecture `make(**fields)` builds (abstractly:
    the importers rename by the architecture alone, so any class count reads them); the fields an
    importer's file needs unless `kwargs` sets them (its GELU form); and that abstract model."""
    if where.is_dir():
        where = weights_file_in(where) or where  # a Hub snapshot or clu folder: its weights file
    if where.is_dir():  # a workdir or convert output: nest_jax's own, architecture as given
        shape = nnx.eval_shape(lambda: make(**kwargs))
        return load_params(where, model=shape), {}, shape
    data = read_file(where)
    source = detect_source(data, where)
    extra = path_fields(name, where)
    shape = nnx.eval_shape(lambda: make(**{**extra, **kwargs}))
    return from_source(source, data, shape, path=str(where)), extra, shape


def path_fields(name: str, where: Any) -> dict[str, Any]:
    """The architecture fields the weights file at `where` needs: its GELU form (timm's exact,
    Google's tanh; docs/models.md), told from the file's first bytes and entry names without
    reading its tensors. {} for nest_jax's own checkpoints (they are built as given) and ResNets."""
    where = epath.Path(where)
    if name.startswith("resnet") or not where.exists():
        return {}
    if where.is_dir():
        where = weights_file_in(where)
        if where is None:
            return {}
    with where.open("rb") as f:
        head = f.read(9)
        if is_msgpack(head):
            return {"gelu": SOURCE_GELU["nest_official"]}  # a flax msgpack checkpoint: Google's code
        if not head.startswith(b"PK"):
            return {"gelu": SOURCE_GELU["timm"]}  # safetensors or torch: PyTorch weights
        f.seek(0)
        try:
            with zipfile.ZipFile(f) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            return {}  # damaged: the reader names the problem
    if any(n.endswith("data.pkl") for n in names):
        return {"gelu": SOURCE_GELU["timm"]}  # torch's zip format
    try:
        source = detect_source(dict.fromkeys(n.removesuffix(".npy") for n in names), where)
    except UserError:
        return {}
    return {"gelu": SOURCE_GELU[source]}


def _named(name: str, pretrained: Any) -> tuple[str, bool | str] | None:
    """(model, tag) when `pretrained` (with `name`, which may carry ".tag") names weights -- tag True
    for the default -- or None for a path."""
    base, _, dotted = name.partition(".")
    # "true"/"default": the config's string form (--config.model.pretrained=true)
    default = pretrained is True or (isinstance(pretrained, str) and pretrained.strip().lower() in ("true", "default"))
    if dotted or default:
        return base, dotted or True
    return (base, pretrained) if isinstance(pretrained, str) and pretrained in tags(base) else None


def locate(
    name: str, pretrained: Any, *, cache_dir: str | None = None
) -> tuple[dict[str, Any], int | None, epath.Path]:
    """(architecture fields the weights need, their class count -- None for a path -- and where they are)."""
    if named := _named(name, pretrained):
        src = resolve(*named)
        where = epath.Path(src.location) if "://" in src.location else hub_file(src.location, cache_dir=cache_dir)
        return dict(src.kwargs), src.num_classes, where
    where = epath.Path(pretrained)
    if "://" not in str(pretrained) and not where.exists():
        known = ", ".join(tags(name.partition(".")[0])) or "none"
        raise UserError(f"pretrained={str(pretrained)!r} is neither a tag of {name} ({known}) nor an existing path")
    return {}, None, where


def pretrained_weights(
    name: str, pretrained: Any, model: nnx.Module, *, resize_method: str = "bicubic"
) -> tuple[Weights, list[str]]:
    """For training (`config.model.pretrained`): the weights `pretrained` names, fitted to `model`
    (abstract is fine), and the head parameters left fresh, as `nest_jax.convert.load.fit_weights`."""
    weights = load_params(locate(name, pretrained)[2], model=model)
    return fit_weights(model, weights, resize_method=resize_method, headless_ok=True)


def model_kwargs(name: str, pretrained: Any) -> dict[str, Any]:
    """The architecture fields the weights need (e.g. timm NesT's exact GELU): a named release's
    from the table, a path's from its file (`path_fields`)."""
    if not pretrained:
        return {}
    named = _named(name, pretrained)
    return dict(resolve(*named).kwargs) if named else path_fields(name, pretrained)


def list_models(pattern: str = "*", *, pretrained: bool = False) -> list[str]:
    """`nest_jax.models.list_models(pattern)`; with pretrained=True the "name.tag" of every named
    release (timm's default first for each name), as `timm.list_models(pretrained=True)`."""
    from nest_jax.models import list_models as registered

    if not pretrained:
        return registered(pattern)
    return [
        f"{n}.{t}"
        for n in registered()
        for t in tags(n)
        if fnmatch.fnmatch(f"{n}.{t}", pattern) or fnmatch.fnmatch(n, pattern)
    ]


def pretrained_cfg(name: str, pretrained: bool | str = True) -> dict[str, Any]:
    """What the named weights expect: hub id or URL, class count, input size, mean and std."""
    src = resolve(name, pretrained)
    return dict(
        location=src.location,
        tag=src.tag,
        num_classes=src.num_classes,
        input_size=(3, src.img_size, src.img_size),
        mean=src.mean,
        std=src.std,
        model_kwargs=dict(src.kwargs),
    )
