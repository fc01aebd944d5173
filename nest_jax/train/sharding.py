"""Mesh from config axes, and shardings derived from shapes only (big_vision style).

Parameters carry logical names (`embed`, `heads`, `kv`, `mlp`, `classes`, `conv_in`, `conv_out`)
from `layers.axes(...)`. Logical rules map them to mesh axes; regex rules on the '/'-joined
parameter path override them. Nothing here touches a real array: everything is computed from
`nnx.eval_shape` / `jax.eval_shape` results, so parameters can be created already sharded.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from nest_jax.errors import UserError

log = logging.getLogger(__name__)

# Batch axes: examples are split over both data-parallel axes (fsdp is data parallel for activations).
BATCH_AXES = ("data", "fsdp")
# Default logical -> mesh rules: FSDP over the model width, tensor parallelism over heads and MLP.
DEFAULT_LOGICAL_RULES = (
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("kv", None),
    ("classes", None),
    ("conv_in", None),
    ("conv_out", None),
)


def make_mesh(axes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Mesh over all devices from `{"data": -1, "fsdp": 1, "tensor": 1}` (-1 = the rest, at most one)."""
    devices = list(devices if devices is not None else jax.devices())
    names = tuple(axes.keys())
    sizes = [int(axes[n]) for n in names]
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {dict(axes)}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices cannot be split into mesh {dict(axes)}")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(f"mesh {dict(zip(names, sizes))} needs {math.prod(sizes)} devices, have {len(devices)}")
    return jax.make_mesh(tuple(sizes), names, axis_types=(AxisType.Auto,) * len(names), devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over every data-parallel mesh axis present."""
    return NamedSharding(mesh, P(tuple(a for a in BATCH_AXES if a in mesh.axis_names)))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def _fit_spec(
    spec: Sequence[Any], shape: tuple[int, ...], mesh: Mesh, dropped: list[tuple[int, str, str]] | None = None
) -> P:
    """Drops mesh axes a dimension cannot use: unknown names, uneven splits, an axis used twice.

    Uneven splits would make `jit(out_shardings=...)` fail; falling back to replication of that
    dimension keeps every rule set valid for every model size (e.g. 10 classes on tensor=4).
    dropped: when given, (dimension index, mesh axis, reason) is appended for every axis of size
    > 1 that was in the mesh but could not be used, so callers can report or refuse it.
    """
    used: set[str] = set()
    out = []
    for i, (dim, entry) in enumerate(zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec)))):
        names = (entry,) if isinstance(entry, str) else tuple(entry or ())
        keep = []
        for name in names:
            if name not in mesh.shape:
                continue
            if name in used:
                if dropped is not None and mesh.shape[name] > 1:
                    dropped.append((i, name, "already used by another dimension"))
                continue
            split = math.prod(mesh.shape[k] for k in keep) * mesh.shape[name]
            if dim % split:
                if dropped is not None:
                    dropped.append((i, name, f"size {dim} is not divisible by {split}"))
                continue
            keep.append(name)
        used.update(keep)
        out.append(None if not keep else keep[0] if len(keep) == 1 else tuple(keep))
    return P(*out)


def path_str(path: tuple) -> str:
    """Key path (jax key entries, or nnx's plain names) -> '/'-joined string, dropping the `.value`
    of NNX Variables."""
    return "/".join(
        str(k.idx if isinstance(k, jax.tree_util.SequenceKey) else getattr(k, "key", getattr(k, "name", k)))
        for k in path
        if not (isinstance(k, jax.tree_util.GetAttrKey) and k.name == "value")
    )


def param_shardings(
    abstract_params: nnx.State,
    mesh: Mesh,
    *,
    logical_rules: Sequence[tuple[str, Any]] = DEFAULT_LOGICAL_RULES,
    regex_rules: Sequence[tuple[str, Sequence[Any]]] = (),
    strict: bool = False,
) -> dict:
    """Pure-dict tree (as `nnx.to_pure_dict`) of NamedShardings for the parameters.

    abstract_params: the `nnx.Param` state of an `nnx.eval_shape` model (Variables carry names).
    regex_rules: [(regex, spec)], first `re.search` match on the '/'-joined path wins; spec entries
      are mesh axis names. Unmatched parameters follow the logical rules.
    strict: a rule asking for a mesh axis that the parameter's dimension cannot be split over
      (`config.sharding.strict`) raises a UserError naming the parameter, its shape and the axis;
      otherwise that dimension is replicated and one warning lists every such parameter.
    """
    with nn.logical_axis_rules(list(logical_rules)):
        specs = nnx.get_partition_spec(abstract_params)
    compiled = [(re.compile(rx), tuple(spec)) for rx, spec in regex_rules]

    def one(path, var, spec):
        name = path_str(path)
        for rx, override in compiled:
            if rx.search(name):
                spec = override
                break
        shape = tuple(var.shape)
        dropped: list[tuple[int, str, str]] = []
        fitted = _fit_spec(tuple(spec) if spec is not None else (), shape, mesh, dropped)
        fallbacks.extend(f"{name} {shape}: dim {i} not split over {axis!r} ({why})" for i, axis, why in dropped)
        return NamedSharding(mesh, fitted)

    fallbacks: list[str] = []
    shard_state = jax.tree_util.tree_map_with_path(
        lambda p, v, s: one(p, v, s.get_value() if isinstance(s, nnx.Variable) else s),
        abstract_params,
        specs,
        is_leaf=lambda x: isinstance(x, nnx.Variable),
    )
    if fallbacks and strict:
        raise UserError(
            f"sharding: {fallbacks[0]}"
            + (f" (and {len(fallbacks) - 1} more)" if len(fallbacks) > 1 else "")
            + f" on mesh {dict(mesh.shape)}; change the mesh or the model width, add a "
            "config.sharding_rules entry, or set --config.sharding.strict=False to replicate"
        )
    if fallbacks:
        log.warning(
            "sharding: %d parameter dimension(s) replicated instead of split on mesh %s:\n  %s",
            len(fallbacks),
            dict(mesh.shape),
            "\n  ".join(fallbacks),
        )
    return nnx.to_pure_dict(shard_state)


def config_param_shardings(config: Any, abstract_params: nnx.State, mesh: Mesh, *, regex_rules: bool = True) -> dict:
    """`param_shardings` with the run's settings: `config.logical_axis_rules` (default
    DEFAULT_LOGICAL_RULES), `config.sharding_rules` and `config.sharding.strict`.

    regex_rules=False leaves out `config.sharding_rules`: they are written for the paths of the
    trained model, not for a distillation teacher of another architecture.
    """
    return param_shardings(
        abstract_params,
        mesh,
        logical_rules=config.logical_axis_rules or DEFAULT_LOGICAL_RULES,
        regex_rules=(config.sharding_rules or ()) if regex_rules else (),
        strict=config.sharding.strict,
    )


def like_params(tree: Any, params_shardings: dict, mesh: Mesh, abstract_params: dict | None = None) -> Any:
    """Shardings for a tree holding parameter-shaped leaves (optimizer moments, EMA).

    A leaf whose '/'-joined path ends with a parameter's path (longest match first, e.g.
    `0/mu/layers/0/attn/qkv` → `layers/0/attn/qkv`) and has that parameter's shape (checked when
    `abstract_params`, a pure dict of arrays or ShapeDtypeStructs, is given; otherwise the
    parameter's spec must fit the leaf) gets the parameter's sharding; every other leaf (step
    counts, scalars, unrelated tensors) is replicated. tree: abstract (ShapeDtypeStruct) leaves.
    """
    by_path = {path_str(p): sh for p, sh in jax.tree_util.tree_flatten_with_path(params_shardings)[0]}
    shapes = (
        {path_str(p): tuple(np.shape(x)) for p, x in jax.tree_util.tree_flatten_with_path(abstract_params)[0]}
        if abstract_params is not None
        else None
    )

    def one(path, leaf):
        parts = path_str(path).split("/")
        for i in range(len(parts)):
            key = "/".join(parts[i:])
            if (sh := by_path.get(key)) is None:
                continue
            if shapes is not None:
                return sh if shapes[key] == tuple(leaf.shape) else replicated(mesh)
            if len(sh.spec) <= len(np.shape(leaf)) and _fit_spec(sh.spec, tuple(leaf.shape), mesh) == sh.spec:
                return sh
        return replicated(mesh)

    return jax.tree_util.tree_map_with_path(one, tree)
