"""Mesh from config axes, and shardings derived from shapes only (big_vision style).

Parameters carry logical names (`embed`, `heads`, `kv`, `mlp`, `classes`, `conv_in`, `conv_out`)
from `layers.axes(...)`. Logical rules map them to mesh axes; regex rules on the '/'-joined
parameter path override them. Nothing here touches a real array: everything is computed from
`nnx.eval_shape` / `jax.eval_shape` results, so parameters can be created already sharded.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
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
    axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
    return NamedSharding(mesh, P(axes))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def _fit_spec(spec: Sequence[Any], shape: tuple[int, ...], mesh: Mesh) -> P:
    """Drops mesh axes a dimension cannot use: unknown names, uneven splits, an axis used twice.

    Uneven splits would make `jit(out_shardings=...)` fail; falling back to replication of that
    dimension keeps every rule set valid for every model size (e.g. 10 classes on tensor=4).
    """
    used: set[str] = set()
    out = []
    for dim, entry in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = (entry,) if isinstance(entry, str) else tuple(entry or ())
        keep = []
        for name in names:
            if name not in mesh.shape or name in used:
                continue
            if dim % (math.prod(mesh.shape[k] for k in keep) * mesh.shape[name]):
                continue
            keep.append(name)
        used.update(keep)
        out.append(None if not keep else keep[0] if len(keep) == 1 else tuple(keep))
    return P(*out)


def path_str(path: tuple) -> str:
    """Key path -> '/'-joined string, dropping the `.value` of NNX Variables."""
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.GetAttrKey):
            if k.name == "value":
                continue
            parts.append(k.name)
        elif isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        else:
            parts.append(str(getattr(k, "key", getattr(k, "name", k))))
    return "/".join(parts)


def param_shardings(abstract_params: nnx.State, mesh: Mesh, *,
                    logical_rules: Sequence[tuple[str, Any]] = DEFAULT_LOGICAL_RULES,
                    regex_rules: Sequence[tuple[str, Sequence[Any]]] = ()) -> dict:
    """Pure-dict tree (as `nnx.to_pure_dict`) of NamedShardings for the parameters.

    abstract_params: the `nnx.Param` state of an `nnx.eval_shape` model (Variables carry names).
    regex_rules: [(regex, spec)], first `re.search` match on the '/'-joined path wins; spec entries
      are mesh axis names. Unmatched parameters follow the logical rules.
    """
    rules = list(logical_rules)
    with nn.logical_axis_rules(rules):
        specs = nnx.get_partition_spec(abstract_params)
    compiled = [(re.compile(rx), tuple(spec)) for rx, spec in regex_rules]

    def one(path, var, spec):
        name = path_str(path)
        for rx, override in compiled:
            if rx.search(name):
                spec = override
                break
        shape = tuple(var.shape)
        return NamedSharding(mesh, _fit_spec(tuple(spec) if spec is not None else (), shape, mesh))

    is_var = lambda x: isinstance(x, nnx.Variable)  # noqa: E731
    shard_state = jax.tree_util.tree_map_with_path(
        lambda p, v, s: one(p, v, s.get_value() if isinstance(s, nnx.Variable) else s),
        abstract_params, specs, is_leaf=is_var)
    return nnx.to_pure_dict(shard_state)


def like_params(tree: Any, params_shardings: dict, mesh: Mesh) -> Any:
    """Shardings for a tree holding parameter-shaped leaves (optimizer moments, EMA): a leaf whose
    path ends with a parameter's path and has its shape gets that parameter's sharding; every other
    leaf (step counts, scalars) is replicated. tree: abstract (ShapeDtypeStruct) leaves."""
    by_path = {}
    for path, sh in jax.tree_util.tree_flatten_with_path(params_shardings)[0]:
        by_path[path_str(path)] = sh

    def one(path, leaf):
        parts = path_str(path).split("/")
        for i in range(len(parts)):
            sh = by_path.get("/".join(parts[i:]))
            if sh is not None and len(sh.spec) <= len(np.shape(leaf)):
                if _fit_spec(sh.spec, tuple(leaf.shape), mesh) == sh.spec:
                    return sh
        return replicated(mesh)

    return jax.tree_util.tree_map_with_path(one, tree)
