"""Starting weights from a checkpoint: fine-tuning (`config.init_from`) and distillation teachers.

config.init_from: {checkpoint: path, source: "nest_jax" | "timm" | "vit_npz" | "nest_official" |
"nest_timm", resize_method: "bicubic" (ViT; NesT tables always linear), use_ema}. `nest_jax`
accepts a training workdir (latest checkpoint's params, or its EMA) or a
`nest_jax.convert.checkpoint.save_params` dir. Paths go through `etils.epath` (gs:// works).

Nothing is built whole on one device: the model is only traced (`nnx.eval_shape`), the checkpoint
is read and adapted as host numpy arrays (position tables resized, heads of another class count
left to their fresh initialization), and each array goes straight to its target sharding.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import numpy as np
from etils import epath
from flax import nnx

from nest_jax.errors import UserError
from nest_jax.train.sharding import path_str

log = logging.getLogger(__name__)
HEAD_NAMES = ("head", "head_dist", "head_shape")


def _epath(path: str | os.PathLike) -> epath.Path:
    s = str(path)
    return epath.Path(s if "://" in s else os.path.abspath(s))


def _workdir_arrays(workdir: epath.Path, use_ema: bool = False) -> tuple[dict, dict]:
    """({path: array} params (or EMA), batch stats) of the latest checkpoint in a nest_jax workdir."""
    import orbax.checkpoint as ocp

    mgr = ocp.CheckpointManager(workdir / "checkpoints")
    step = mgr.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint under {workdir}/checkpoints")
    meta = mgr.item_metadata(step)
    tree = meta.tree if hasattr(meta, "tree") else meta
    key = "ema" if use_ema and "ema" in tree else "params"
    # Restore as host numpy arrays, whatever mesh wrote them.
    target = jax.tree.map(lambda m: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    restored = mgr.restore(step, args=ocp.args.PyTreeRestore(restore_args=target))
    mgr.close()

    def flat(t):
        return {path_str(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(t)[0]}

    return flat(restored[key]), flat(restored.get("batch_stats", {}))


def _workdir_params(workdir: str | os.PathLike, use_ema: bool = False) -> dict[str, np.ndarray]:
    """Flat {path: array} of the latest training checkpoint in a nest_jax workdir (any shapes)."""
    return _workdir_arrays(_epath(workdir), use_ema)[0]


def read_weights(
    source: str,
    path: str | os.PathLike,
    model: nnx.Module,
    *,
    flag: str,
    resize_method: str = "bicubic",
    use_ema: bool = False,
) -> tuple[dict, dict, list[str]]:
    """A checkpoint fitted to `model` (abstract is fine), all host numpy: (params {path: array},
    batch stats {path: array}, names of head parameters left fresh because the class count differs).

    flag: the config field the path came from, named in every error (a UserError, one line).
    """
    from nest_jax.convert.common import param_shapes
    from nest_jax.convert.resize import adapt_params

    if not path:
        raise UserError(f"{flag} is not set: give the checkpoint to load")
    where = _epath(path)
    if not where.exists():
        raise UserError(f"{flag}={path}: no such file or directory")
    stat_paths = {path_str(k) for k, _ in nnx.to_flat_state(nnx.state(model, nnx.BatchStat))}
    if source == "nest_jax":
        if (where / "checkpoints").is_dir():
            arrays, stats = _workdir_arrays(where, use_ema)
        elif where.is_dir():
            from nest_jax.convert.checkpoint import read_arrays

            data = read_arrays(str(where))
            arrays, stats = data["params"], data.get("batch_stats", {})
        else:
            raise UserError(
                f"{flag}={path} is a file, but source 'nest_jax' reads a training workdir or a "
                "`python -m nest_jax.convert` output directory; set the source to the file's format"
            )
    else:
        from nest_jax.convert.sources import SOURCES, read_source, to_params

        if source not in SOURCES:
            raise UserError(f"the source for {flag} must be 'nest_jax' or one of {SOURCES}, got {source!r}")
        converted = to_params(source, read_source(source, where, flag=flag), model)
        arrays = {k: v for k, v in converted.items() if k not in stat_paths}
        stats = {k: v for k, v in converted.items() if k in stat_paths}
    adapted = adapt_params(arrays, model, resize_method=resize_method)
    want = param_shapes(model)
    fresh = [k for k in want if k.split("/")[0] in HEAD_NAMES and k in arrays and k not in adapted]
    problems = [
        f"{k} is {tuple(np.shape(v))}, the model's is {want[k]}"
        for k, v in adapted.items()
        if k in want and tuple(np.shape(v)) != want[k]
    ]
    problems += [f"the model has no {k}" for k in adapted if k not in want]
    problems += [f"no value for {k} {want[k]}" for k in want if k not in adapted and k not in fresh]
    problems += [f"no value for batch statistic {k}" for k in stat_paths if k not in stats and stats]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise UserError(f"{flag}={path} does not fit {type(model).__name__}: {'; '.join(problems[:3])}{more}")
    return adapted, stats, fresh


def place(arrays: dict[str, np.ndarray], like: Any, shardings: Any) -> Any:
    """Host arrays {path: array} -> a tree shaped like `like` (pure dict of arrays/ShapeDtypeStructs)
    whose leaves are global arrays in `shardings` (same tree), each device receiving only its shard."""

    def one(path, leaf, sharding):
        value = np.asarray(arrays[path_str(path)], dtype=leaf.dtype)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree_util.tree_map_with_path(one, like, shardings)


def initialize_from(config: Any, trainer: Any, state: dict, num_classes: int) -> dict:
    """Replaces the fresh parameters (and EMA, batch stats) of `state` with `config.init_from`'s.

    Heads whose class count differs keep `state`'s fresh initialization."""
    from nest_jax.train.trainer import build_model

    cfg = config.init_from
    abstract = nnx.eval_shape(lambda: build_model(config, num_classes, nnx.Rngs(params=0, dropout=1)))
    arrays, stats, fresh = read_weights(
        cfg.source,
        cfg.checkpoint,
        abstract,
        flag="--config.init_from.checkpoint",
        resize_method=cfg.resize_method,
        use_ema=cfg.use_ema,
    )
    log.info("initialized from %s (%s); re-initialized: %s", cfg.checkpoint, cfg.source, fresh or "nothing")
    loaded = {k: v for k, v in arrays.items() if k not in fresh}  # fresh heads keep the state's init

    def pick(path, leaf, sharding):
        name = path_str(path)
        if name not in loaded:
            return leaf
        value = np.asarray(loaded[name], dtype=leaf.dtype)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    params = jax.tree_util.tree_map_with_path(pick, state["params"], trainer.state_shardings["params"])
    state = dict(state, params=params)
    if "ema" in state:
        state["ema"] = jax.tree.map(lambda p: p.astype(np.float32), params)
    if "batch_stats" in state and stats:
        state["batch_stats"] = place(stats, state["batch_stats"], trainer.state_shardings["batch_stats"])
    return state
