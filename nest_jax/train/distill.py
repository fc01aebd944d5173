"""Frozen distillation teachers, one per distilled prefix token (DeiT `dist`, shape token `shape`).

config.distill: {token: {model, overrides, checkpoint, source ("nest_jax" workdir or params dir,
"timm", "vit_npz", "nest_official", "nest_timm"), img_size (default: the student's), kind
"hard"|"soft", alpha, tau, use_ema}}; config.distill_kl_reduction: "batchmean" (default) | "deit".
The teacher runs inside the jitted train step on the student's mixed inputs (see trainer.py).
"""
from __future__ import annotations

import logging
from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh

from nest_jax.train import sharding as shd
from nest_jax.train.init_from import load_weights, sharded_state
from nest_jax.train.trainer import DTYPES

log = logging.getLogger(__name__)


def load_teachers(config: Any, mesh: Mesh, num_classes: int) -> tuple[dict, dict]:
    """Returns (token -> (graphdef, rest, cfg), token -> (params State, rest State)) placed on the mesh."""
    from nest_jax.models import create_model
    teachers, params = {}, {}
    for token, cfg in config.distill.items():
        if cfg is None:
            continue
        kw = dict(cfg.get("overrides", None) or {})
        for key in ("dtype", "param_dtype"):
            if isinstance(kw.get(key), str):
                kw[key] = DTYPES[kw[key]]
        kw.setdefault("in_chans", int(config.dataset.get("num_channels", 3)))
        img = cfg.get("img_size", None) or config.model.get("img_size", None) or config.dataset.image_size
        model = create_model(cfg.model, num_classes=num_classes, img_size=img, rngs=nnx.Rngs(0), **kw)
        fresh = load_weights(model, cfg.get("source", "nest_jax"), cfg.checkpoint,
                             use_ema=cfg.get("use_ema", False))
        if fresh:
            raise ValueError(f"teacher {cfg.model} from {cfg.checkpoint} lacks trained weights for {fresh} "
                             f"(its class count differs from the dataset's {num_classes})")
        graphdef, p, rest = nnx.split(model, nnx.Param, ...)
        p_sh = shd.param_shardings(p, mesh,
                                   logical_rules=config.get("logical_axis_rules", None) or shd.DEFAULT_LOGICAL_RULES)
        rest = jax.device_put(rest, shd.replicated(mesh))
        teachers[token] = (graphdef, rest, cfg)
        params[token] = (sharded_state(p, p_sh), rest)
        log.info("teacher for %r: %s from %s (%s distillation, alpha %s)", token, cfg.model, cfg.checkpoint,
                 cfg.kind, cfg.alpha)
    return teachers, params
