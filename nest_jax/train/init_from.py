"""Starting weights from a checkpoint: fine-tuning (`config.init_from`) and distillation teachers.

config.init_from: {checkpoint: path, source: "nest_jax" | "timm" | "vit_npz" | "nest_official" |
"nest_timm", resize_method: "bicubic" (ViT; NesT tables always linear)}. `nest_jax` accepts a
training workdir (latest checkpoint's params) or a `nest_jax.convert.checkpoint.save_params` dir.
Position embeddings are resized to the model's grid and heads of another class count re-initialized
by `nest_jax.convert.resize.load_adapted` (the converter engineers' code, imported lazily).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from nest_jax.train.sharding import path_str

log = logging.getLogger(__name__)


def _workdir_params(workdir: str | Path, use_ema: bool = False) -> dict[str, np.ndarray]:
    """Flat {path: array} of the latest training checkpoint in a nest_jax workdir (any shapes)."""
    import orbax.checkpoint as ocp
    mgr = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"))
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
    return {path_str(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(restored[key])[0]}


def load_weights(model: nnx.Module, source: str, path: str | Path, *, resize_method: str = "bicubic",
                 use_ema: bool = False) -> list[str]:
    """Loads a checkpoint into `model` in place (resizing position tables, re-initializing heads
    of another class count); returns the names of the re-initialized parameters."""
    path = Path(path)
    if source == "nest_jax":
        from nest_jax.convert.resize import load_adapted
        if (path / "checkpoints").is_dir():
            arrays = _workdir_params(path, use_ema)
        else:
            from nest_jax.convert.checkpoint import read_arrays
            arrays = read_arrays(path)["params"]
        return load_adapted(model, arrays, source=f"nest_jax checkpoint {path}", resize_method=resize_method)
    from nest_jax.convert.__main__ import SOURCES, convert_into, read_source
    if source not in SOURCES:
        raise ValueError(f"init_from.source must be 'nest_jax' or one of {SOURCES}, got {source!r}")
    return convert_into(model, source, read_source(source, path), resize_method=resize_method)


def sharded_state(state: nnx.State, shardings: dict) -> nnx.State:
    """Places an nnx.State of host arrays with a pure-dict tree of shardings."""
    flat = dict(nnx.to_flat_state(nnx.State(shardings)))
    placed = [(k, v.replace(jax.device_put(v.get_value(), flat[k]))) for k, v in nnx.to_flat_state(state)]
    return nnx.from_flat_state(placed)


def initialize_from(config: Any, trainer: Any, state: dict, num_classes: int) -> dict:
    """Replaces the fresh parameters (and EMA) of `state` with the `config.init_from` checkpoint."""
    from nest_jax.train.trainer import build_model
    cfg = config.init_from
    seed = int(config.seed)
    # The host model starts from the same fresh init as `state`: heads that are re-initialized keep it.
    model = build_model(config, num_classes, nnx.Rngs(params=seed, dropout=seed + 1))
    fresh = load_weights(model, cfg.get("source", "nest_jax"), cfg.checkpoint,
                         resize_method=cfg.get("resize_method", "bicubic"), use_ema=cfg.get("use_ema", False))
    log.info("initialized from %s (%s); re-initialized: %s", cfg.checkpoint, cfg.get("source", "nest_jax"),
             fresh or "nothing")
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    params = jax.device_put(params, trainer.state_shardings["params"])
    state = dict(state, params=params)
    if "ema" in state:
        state["ema"] = jax.tree.map(lambda p: p.copy(), params)
    return state
