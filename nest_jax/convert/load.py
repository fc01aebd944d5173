"""The one weights loader: `load_params(path)` reads any checkpoint nest_jax knows, `load_into` puts it
into a model.

`load_params` reads, on any `etils.epath` path (local or gs://):
  - a training workdir: its latest checkpoint (or `step=`), the params or with `ema=True` their EMA,
    and the batch statistics; only those subtrees are read, as host arrays, without the trainer (of
    a GAN run: its generator's, the EMA generator with `ema=True`);
  - a `python -m nest_jax.convert` output folder (`save_params`), which also records its model;
  - an importer's file (timm `.pth`/`.safetensors`, Google ViT `.npz`, official or timm NesT), whose
    arrays the importers of this package rename into the architecture of `model`;
  - a folder holding `model.safetensors` (a Hugging Face Hub snapshot, `python -m nest_jax.export`
    output) or an official NesT checkpoint folder (clu's `ckpt-<n>.flax`, msgpack): its weights
    file (the newest `ckpt-<n>.flax`), read as above.
It returns `Weights`: flat {'/'-joined nnx path: NumPy array} dicts, whatever the source.
`load_into(model, weights)` fits them to the model (position tables resized to its grid, a head
of another class count left at its fresh initialization) and assigns them; `fit_weights` does the
fitting alone, for models that are only traced (`nnx.eval_shape`) and placed shard by shard.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from etils import epath
from flax import nnx

from nest_jax.convert.checkpoint import as_tuples, read_arrays, read_meta
from nest_jax.convert.common import assign_params, check_numeric, flat_paths, load_array_file, param_shapes, variables
from nest_jax.convert.resize import HEAD_NAMES, adapt_params
from nest_jax.convert.workdir import as_path, is_workdir, read_workdir
from nest_jax.errors import UserError

log = logging.getLogger(__name__)

IMPORTERS = ("timm", "vit_npz", "nest_official", "nest_timm")
SOURCES = ("nest_jax", *IMPORTERS)  # nest_jax: a training workdir or a convert output folder
# The GELU each importer's weights were trained with (docs/models.md): Google's JAX code uses the tanh form.
SOURCE_GELU = {"timm": "exact", "vit_npz": "tanh", "nest_official": "tanh", "nest_timm": "exact"}
_HOW = "pass a training workdir, a `python -m nest_jax.convert` output folder or an importer's file"


@dataclasses.dataclass(frozen=True)
class Weights:
    """A model's weights as host arrays, keyed by '/'-joined nnx path (e.g. "layers/0/attn/qkv").

    params:       {path: array} of the `nnx.Param`s (the EMA copy when loaded with ema=True)
    batch_stats:  {path: array} of the `nnx.BatchStat`s (empty for models without BatchNorm)
    step:         the training step of a workdir's checkpoint; None for other sources
    source:       "nest_jax" (workdir or convert output) or the importer's name ("timm", ...)
    path:         where they were read from
    model / model_kwargs: the `create_model` call a convert output records (None / {} otherwise)
    """

    params: dict[str, np.ndarray]
    batch_stats: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    step: int | None = None
    source: str = "nest_jax"
    path: str = ""
    model: str | None = None
    model_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def new_model(self, *, rngs: nnx.Rngs | None = None) -> nnx.Module:
        """`create_model(model, **model_kwargs)`: the architecture a convert output was written for."""
        if not self.model:
            raise UserError(
                f"{self.path} does not record its model: build it yourself and call load_into(model, weights)"
            )
        from nest_jax.models import create_model

        return create_model(self.model, rngs=rngs, **{k: as_tuples(v) for k, v in self.model_kwargs.items()})


def load_params(
    path: str | os.PathLike,
    *,
    step: int | None = None,
    ema: bool = False,
    source: str | None = None,
    model: nnx.Module | None = None,
) -> Weights:
    """Reads the weights at `path` (see the module docstring); nothing is placed on a device.

    step / ema: which checkpoint of a training workdir (default: the latest) and whether its EMA
    parameters; both are errors for other sources. source: "nest_jax" or an importer's name;
    None detects it from the path (a folder) or the file's entry names. model: the architecture an
    importer's file is converted into (an abstract `nnx.eval_shape` model is enough); only
    importers' files need it. Every problem (missing path or step, no EMA, unknown format) is a
    one-line UserError.
    """
    if not str(path):
        raise UserError(f"no checkpoint path given: {_HOW}")
    where = as_path(path)
    if not where.exists():
        raise UserError(f"{path} does not exist; {_HOW}")
    if source is not None and source not in SOURCES:
        raise UserError(f"unknown weights source {source!r} for {path}; choose one of {', '.join(SOURCES)}")
    if where.is_dir() and not is_workdir(where) and not (where / "meta").is_dir():
        inner = weights_file_in(where)
        if inner is not None:
            inner_source = None if source == "nest_jax" else source  # "nest_jax": init_from's default
            return load_params(inner, step=step, ema=ema, source=inner_source, model=model)
    if where.is_dir():
        if source not in (None, "nest_jax"):
            raise UserError(f"{path} is a directory, but a {source} checkpoint is a file (.npz, .pth, .safetensors)")
        if is_workdir(where):
            params, stats, step = read_workdir(where, step=step, ema=ema)
            return Weights(params, stats, step=step, source="nest_jax", path=str(where))
        if not (where / "meta").is_dir():
            raise UserError(
                f"{path} is neither a training workdir (no checkpoints/), a convert output (no meta/) nor a "
                f"weights folder (no {HUB_WEIGHTS} or ckpt-<n>.flax); {_HOW}"
            )
        if step is not None or ema:
            raise UserError(f"{where} is a convert output: it has no training steps or EMA; load it without step/ema")
        try:
            meta, arrays = read_meta(where), read_arrays(where)
        except (FileNotFoundError, ValueError) as e:
            raise UserError(f"{where} is not a readable nest_jax convert output: {str(e).splitlines()[0]}") from e
        params, stats = arrays.get("params", {}), arrays.get("batch_stats", {})
        kwargs = dict(meta.get("kwargs") or {})
        return Weights(params, stats, source="nest_jax", path=str(where), model=meta.get("model"), model_kwargs=kwargs)
    if source == "nest_jax":
        raise UserError(
            f"{path} is a file, but source 'nest_jax' reads a training workdir or a `python -m nest_jax.convert` "
            "output folder; set the source to the file's format or leave it to be detected"
        )
    if step is not None or ema:
        raise UserError(f"{path} is an importer's file: it has no training steps or EMA; load it without step/ema")
    data = read_file(where)
    source = source or detect_source(data, where)
    if model is None:
        raise UserError(f"{path} holds {source} weights, named for another layout: pass model= to convert them into")
    return from_source(source, data, model, path=str(where))


HUB_WEIGHTS = "model.safetensors"  # the weights file of a Hub snapshot (timm, nest_jax.export)


def weights_file_in(folder: epath.Path) -> epath.Path | None:
    """The weights file of a Hub-style folder, or the newest `ckpt-<n>.flax` of a clu checkpoint
    folder (official NesT); None for other folders."""
    if (folder / HUB_WEIGHTS).exists():
        return folder / HUB_WEIGHTS
    steps = {}
    for f in folder.glob("ckpt-*.flax"):
        number = f.name[len("ckpt-") : -len(".flax")]
        if number.isdigit():
            steps[int(number)] = f
    return steps[max(steps)] if steps else None


def read_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """An importer's file as a flat {entry name: array}; never unpickles (see `load_array_file`;
    msgpack files, flax's format, are read by `read_msgpack`). A remote file is copied to a local
    temporary file first: the readers need a seekable file."""
    path = as_path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory; pass a file (.npz, .pth, .safetensors)")
    if "://" not in str(path):
        return _read_local(Path(str(path)))
    if not path.exists():
        raise UserError(f"{path}: no such file")
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / path.name
        local.write_bytes(path.read_bytes())
        return _read_local(local)


def is_msgpack(head: bytes) -> bool:
    """Whether a file starting with `head` is a msgpack map (flax's format; pickles start 0x80)."""
    return bool(head) and (0x81 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF))


def _read_local(path: Path) -> dict[str, np.ndarray]:
    if path.is_file():
        with open(path, "rb") as f:
            if is_msgpack(f.read(1)):
                return read_msgpack(path)
    return load_array_file(path)


def read_msgpack(path: Path) -> dict[str, np.ndarray]:
    """A flax msgpack checkpoint (`flax.serialization`, e.g. clu's `ckpt-<n>.flax`) as flat
    '/'-joined arrays; of a training state only the parameters (`optimizer/target`, `params`).
    msgpack holds data only: nothing is executed."""
    from flax import serialization

    try:
        tree = serialization.msgpack_restore(Path(path).read_bytes())
    except Exception as e:  # msgpack raises its own types for truncated or corrupt data
        raise UserError(
            f"{path} is not a readable msgpack checkpoint ({type(e).__name__}): it is truncated or corrupt; "
            "download or write it again"
        ) from None
    if not isinstance(tree, dict):
        raise UserError(f"{path} holds a msgpack {type(tree).__name__}, not a tree of arrays")
    for root in (("optimizer", "target"), ("params",)):
        node = tree
        for key in root:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            tree = node
            break
    flat = {k: np.asarray(v) for k, v in flat_paths(tree).items()}
    check_numeric(flat, source=str(path))
    return flat


def detect_source(data: dict[str, np.ndarray], path: Any = "the file") -> str:
    """Which importer reads these entries, from their names: Google trees are '/'-joined (ViT's
    `Transformer/encoderblock_*`, NesT's `EncoderNDBlock_*`), PyTorch state dicts '.'-joined
    (timm NesT has `levels.*`)."""
    names = list(data)
    if any("EncoderNDBlock_" in k or "PatchEmbedding_0" in k for k in names):
        return "nest_official"
    if any("Transformer/" in k or k.endswith("embedding/kernel") for k in names):
        return "vit_npz"
    if any(k.startswith(("levels.", "module.levels.")) for k in names):
        return "nest_timm"
    if any(k.endswith((".weight", ".bias")) for k in names):
        return "timm"
    raise UserError(f"cannot tell which importer reads {path} from its entry names; pass source= ({IMPORTERS})")


def _convert(source: str, data: dict[str, np.ndarray], model: nnx.Module) -> dict[str, np.ndarray]:
    """Source arrays -> {nest_jax path: array} through that source's importer, before any resizing."""
    from nest_jax.convert import nest, timm, vit_npz

    if source == "vit_npz":
        return vit_npz.vit_npz_to_params(data, model)
    if source == "timm":
        resnet = type(model).__name__ == "ResNet"
        return (timm.timm_resnet_to_params if resnet else timm.timm_vit_to_params)(data, model)
    return (nest.official_nest_to_params if source == "nest_official" else nest.timm_nest_to_params)(data, model.config)


def from_source(source: str, data: dict[str, np.ndarray], model: nnx.Module, *, path: str = "") -> Weights:
    """An importer's arrays renamed into `model`'s layout (`model` may be abstract), split into
    params and batch statistics."""
    if source not in IMPORTERS:
        raise UserError(f"unknown importer {source!r}; choose one of {', '.join(IMPORTERS)}")
    try:
        arrays = _convert(source, data, model)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, NotImplementedError) as e:
        # The importers index and reshape by the layout they expect: a tensor of another rank
        # fails there, before any shape check could name it.
        raise UserError(
            f"{path or 'the checkpoint'} does not read as {source} weights of {type(model).__name__}: "
            f"{str(e).splitlines()[0]}"
        ) from e
    stat_paths = set(variables(model, nnx.BatchStat))
    params = {k: v for k, v in arrays.items() if k not in stat_paths}
    stats = {k: v for k, v in arrays.items() if k in stat_paths}
    return Weights(params, stats, source=source, path=path)


def fit_weights(
    model: nnx.Module, weights: Weights, *, resize_method: str = "bicubic", headless_ok: bool = False
) -> tuple[Weights, list[str]]:
    """`weights` made to fit `model` (abstract is fine), and the head parameters left out.

    Position tables are resized to the model's grid (`adapt_params`); a head whose class count
    differs is dropped from the result (its names are the second value), so the model keeps its
    fresh initialization there; with `headless_ok`, so is a head the checkpoint lacks (a feature
    extractor's weights, num_classes=0, into a classifier). Anything else that does not match -- a missing, extra or
    differently shaped parameter or batch statistic -- is one UserError naming the first few.
    """
    adapted = adapt_params(weights.params, model, resize_method=resize_method)
    want = param_shapes(model)
    fresh = [
        k for k in want if k.split("/")[0] in HEAD_NAMES and (k in weights.params or headless_ok) and k not in adapted
    ]
    if headless_ok and any(k not in weights.params for k in fresh):
        log.info("%s has no classifier: the model's head is left at random", weights.path or weights.source)
    have = weights.source if weights.source != "nest_jax" else "checkpoint"
    problems = [
        f"shape mismatch for {k!r}: {have} has {tuple(np.shape(v))}, model expects {want[k]}"
        for k, v in adapted.items()
        if k in want and tuple(np.shape(v)) != want[k]
    ]
    problems += [
        f"{have} has {k!r} {tuple(np.shape(adapted[k]))}, which the model does not" for k in adapted if k not in want
    ]
    problems += [f"{have} has no value for {k!r} {want[k]}" for k in want if k not in adapted and k not in fresh]
    stat_want = {k: tuple(v.shape) for k, v in variables(model, nnx.BatchStat).items()}
    if weights.batch_stats:  # a checkpoint without statistics leaves the model's own
        problems += [
            f"{have} has no value for batch statistic {k!r}" for k in stat_want if k not in weights.batch_stats
        ]
        problems += [
            f"batch statistic {k!r} is {tuple(np.shape(v))}, model expects {stat_want.get(k)}"
            for k, v in weights.batch_stats.items()
            if tuple(np.shape(v)) != stat_want.get(k)
        ]
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise UserError(
            f"the weights of {weights.path or weights.source} do not fit {type(model).__name__}: "
            f"{'; '.join(problems[:3])}{more}"
        )
    return dataclasses.replace(weights, params=adapted), fresh


def load_into(
    model: nnx.Module, weights: Weights, *, resize_method: str = "bicubic", headless_ok: bool = False
) -> list[str]:
    """Assigns `weights` into `model` in place, fitted by `fit_weights`; returns the head parameters
    left at their fresh initialization because the class count differs (empty when none)."""
    fitted, fresh = fit_weights(model, weights, resize_method=resize_method, headless_ok=headless_ok)
    arrays, kind = {**fitted.params, **fitted.batch_stats}, (nnx.Param, nnx.BatchStat)
    assign_params(model, arrays, strict=False, source=fitted.path or fitted.source, kind=kind)
    return fresh  # `adapt_params` has logged each re-initialized head tensor
