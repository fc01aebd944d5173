"""Frozen distillation teachers, one per distilled prefix token (DeiT `dist`, shape token `shape`).

config.distill: {token: {model, overrides, checkpoint, source ("nest_jax" workdir or params dir,
"timm", "vit_npz", "nest_official", "nest_timm"), img_size (None: the student's), kind
"hard"|"soft", alpha, tau, use_ema}}; config.distill_kl_reduction: "batchmean" | "deit".
The teacher runs inside the jitted train step on the student's mixed inputs (see trainer.py). Its
parameters are read as host arrays and placed straight into their shardings (the student's
logical rules on the same mesh); the model itself is only traced.
"""

from __future__ import annotations

import logging
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from nest_jax.errors import UserError
from nest_jax.train import sharding as shd
from nest_jax.train.init_from import place, read_fitted
from nest_jax.train.trainer import dtype_kwargs, params_state

log = logging.getLogger(__name__)


def load_teachers(config: Any, mesh: Mesh, num_classes: int) -> tuple[dict, dict]:
    """Returns (token -> (graphdef, rest, cfg), token -> (params State, rest State)) placed on the mesh."""
    from nest_jax.models import create_model

    teachers, params = {}, {}
    for token, cfg in config.distill.items():
        if cfg is None:
            continue
        flag = f"--config.distill.{token}.checkpoint"
        kw = dtype_kwargs(cfg.overrides)
        kw.setdefault("in_chans", int(config.dataset.num_channels))
        img = cfg.img_size or config.model.img_size or config.dataset.image_size

        def build(model_name=cfg.model, kw=kw, img=img):
            return create_model(model_name, num_classes=num_classes, img_size=img, rngs=nnx.Rngs(0), **kw)

        abstract = nnx.eval_shape(build)
        weights, fresh = read_fitted(cfg, abstract, flag=flag)
        arrays, stats = weights.params, weights.batch_stats
        if fresh:
            raise UserError(
                f"{flag}={cfg.checkpoint}: the teacher {cfg.model} has no trained weights for {fresh} "
                f"(its class count differs from the dataset's {num_classes})"
            )
        graphdef, abs_params, abs_rest = nnx.split(abstract, nnx.Param, ...)
        p_sh = shd.config_param_shardings(config, abs_params, mesh, regex_rules=False)
        pure = place(arrays, nnx.to_pure_dict(abs_params), p_sh)
        repl = shd.replicated(mesh)
        # The RNG streams (and any batch statistics' layout) come from a jitted build; XLA drops the
        # unused parameter initializers, so no parameter is materialized here either.
        rest = jax.jit(lambda: nnx.split(build(), nnx.Param, ...)[2], out_shardings=repl)()
        if stats:

            def put(path, v):  # the checkpoint's statistics, where it has them
                if shd.path_str(path) not in stats:
                    return v
                return v.replace(jax.device_put(np.asarray(stats[shd.path_str(path)], v.get_value().dtype), repl))

            rest = nnx.from_flat_state([(k, put(k, v)) for k, v in nnx.to_flat_state(rest)])
        teachers[token] = (graphdef, rest, cfg)
        params[token] = (params_state(list(nnx.to_flat_state(abs_params)), pure), rest)
        what = f"{cfg.model} from {cfg.checkpoint} ({cfg.kind} distillation, alpha {cfg.alpha})"
        log.info("teacher for %r: %s", token, what)
    return teachers, params
