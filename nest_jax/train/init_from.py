"""Starting weights from a checkpoint: fine-tuning (`config.init_from`) and distillation teachers.

config.init_from: {checkpoint: path, source: "nest_jax" | "timm" | "vit_npz" | "nest_official" |
"nest_timm", resize_method: "bicubic" (ViT; NesT tables always linear), use_ema}. `nest_jax`
accepts a training workdir (latest checkpoint's params, or its EMA) or a
`nest_jax.convert.checkpoint.save_params` dir. Reading goes through the one loader,
`nest_jax.convert.load` (any `etils.epath` path, gs:// included).

Nothing is built whole on one device: the model is only traced (`nnx.eval_shape`), the checkpoint
is read and fitted as host numpy arrays (position tables resized, heads of another class count
left to their fresh initialization), and each array goes straight to its target sharding.
"""

from __future__ import annotations

import logging
from typing import Any

import jax
import numpy as np
from flax import nnx

from nest_jax.convert.load import Weights, fit_weights, load_params
from nest_jax.errors import UserError
from nest_jax.train.sharding import path_str

log = logging.getLogger(__name__)


def read_fitted(cfg: Any, model: nnx.Module, *, flag: str, resize_method: str = "bicubic") -> tuple[Weights, list[str]]:
    """`cfg.checkpoint` (read as `cfg.source`, EMA when `cfg.use_ema`) fitted to `model` (abstract is
    fine): (weights, head parameters left fresh). Errors are one line naming `flag`, the config field."""
    if not cfg.checkpoint:
        raise UserError(f"{flag} is not set: give the checkpoint to load")
    try:
        weights = load_params(cfg.checkpoint, ema=bool(cfg.use_ema), source=cfg.source, model=model)
        return fit_weights(model, weights, resize_method=resize_method)
    except UserError as e:
        raise UserError(f"{flag}: {e}") from e


def place(arrays: dict[str, np.ndarray], like: Any, shardings: Any, *, keep_missing: bool = False) -> Any:
    """Host arrays {path: array} -> a tree shaped like `like` (pure dict of arrays/ShapeDtypeStructs)
    whose leaves are global arrays in `shardings` (same tree), each device receiving only its shard.
    keep_missing: a leaf of `like` that `arrays` lacks stays as it is (else a KeyError)."""

    def one(path, leaf, sharding):
        if keep_missing and path_str(path) not in arrays:
            return leaf
        value = np.asarray(arrays[path_str(path)], dtype=leaf.dtype)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree_util.tree_map_with_path(one, like, shardings)


def initialize_from(config: Any, trainer: Any, state: dict, num_classes: int) -> dict:
    """Replaces the fresh parameters (and EMA, batch stats) of `state` with `config.init_from`'s.

    Heads whose class count differs keep `state`'s fresh initialization."""
    from nest_jax.train.trainer import build_model

    cfg, pretrained = config.init_from, config.model.get("pretrained")
    abstract = nnx.eval_shape(lambda: build_model(config, num_classes, nnx.Rngs(params=0, dropout=1)))
    if pretrained:  # config.model.pretrained: named weights or a path (nest_jax.convert.hub)
        from nest_jax.convert.hub import pretrained_weights

        if cfg.checkpoint:
            raise UserError("set --config.model.pretrained or --config.init_from.checkpoint, not both")
        try:
            weights, fresh = pretrained_weights(
                config.model.name, pretrained, abstract, resize_method=cfg.resize_method
            )
        except UserError as e:
            raise UserError(f"--config.model.pretrained: {e}") from e
    else:
        weights, fresh = read_fitted(
            cfg, abstract, flag="--config.init_from.checkpoint", resize_method=cfg.resize_method
        )
    log.info("initialized from %s; re-initialized: %s", pretrained or cfg.checkpoint, fresh or "nothing")
    # Fresh heads are not in weights.params: they keep the state's init.
    params = place(weights.params, state["params"], trainer.state_shardings["params"], keep_missing=True)
    state = dict(state, params=params)
    if "ema" in state:
        state["ema"] = jax.tree.map(lambda p: p.astype(np.float32), params)
    if "batch_stats" in state and weights.batch_stats:
        state["batch_stats"] = place(weights.batch_stats, state["batch_stats"], trainer.state_shardings["batch_stats"])
    return state
