"""Export a nest_jax checkpoint for other code: `export_checkpoint(...)` and its command line,
`python -m nest_jax.export --checkpoint=WORKDIR_OR_DIR --to=timm --out=DIR`.

`--to=timm` writes `model.safetensors` and the `config.json` timm reads (architecture, class count,
input size, mean/std, the arguments of an overridden architecture), so that
`timm.create_model("local-dir:DIR", pretrained=True)` -- or `hf-hub:` once the folder is uploaded
-- builds the same network with the same weights; `--to=npz` writes a ViT in Google's `.npz`
layout. The arrays come from the one loader (`nest_jax.load_params`) and go out through
`nest_jax.convert.export`, which inverts the importers and checks itself against them.

A training workdir records its model and input normalization (`config.json`); a convert output its
model; any other checkpoint (a timm or Google file, a Hub folder) needs `model=` (`--model`).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import ml_collections
from flax import nnx

from nest_jax.convert.checkpoint import as_tuples
from nest_jax.convert.export import FORMATS, IMAGENET_MEAN, IMAGENET_STD, export_npz, export_timm, timm_architecture
from nest_jax.convert.load import load_into, load_params
from nest_jax.convert.workdir import as_path, is_workdir
from nest_jax.errors import UserError

log = logging.getLogger(__name__)


def export_checkpoint(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    to: str = "timm",
    model: str | None = None,
    step: int | None = None,
    ema: bool = False,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    overwrite: bool = False,
    **model_kwargs: Any,
) -> list[str]:
    """Writes `checkpoint`'s weights to `out` in format `to` ("timm" or "npz"); returns the notes
    on what timm approximates (empty for a faithful export).

    model / model_kwargs: the architecture, for checkpoints that do not record it (they override a
    workdir's). step / ema: which checkpoint of a workdir. mean / std: the input normalization
    (default: the workdir's, else ImageNet's).
    """
    if to not in FORMATS:
        raise UserError(f"--to {to!r} is not an export format; choose one of {', '.join(FORMATS)}")
    where = as_path(checkpoint)
    if not where.exists():
        raise UserError(f"--checkpoint {checkpoint} does not exist; pass a training workdir or a checkpoint")
    norm = (IMAGENET_MEAN, IMAGENET_STD)
    if is_workdir(where):
        from nest_jax.data.preprocess import mean_std
        from nest_jax.train.trainer import model_kwargs as trainer_kwargs

        config_file = where / "config.json"
        if not config_file.exists():
            raise UserError(f"{where} has no config.json, so its model is unknown; pass --model")
        try:
            config = ml_collections.ConfigDict(json.loads(config_file.read_text()))
        except json.JSONDecodeError as e:
            raise UserError(f"{config_file} is not readable JSON ({e.msg}); pass --model") from None
        if config.get("task") == "gan":
            raise UserError(
                f"{where} is a GAN run's workdir and timm and Google's .npz hold classifiers; read its generator "
                "with nest_jax.load_params (ema=True: the EMA generator)"
            )
        weights = load_params(where, step=step, ema=ema)
        head = weights.params.get("head/kernel")
        kwargs = trainer_kwargs(config, 0 if head is None else int(head.shape[-1]))
        kwargs.pop("dtype", None)  # exports are float32
        name, norm = model or config.model.name, mean_std(config.dataset)
    else:
        from nest_jax.convert.hub import create_model as pretrained_model

        if step is not None or ema:
            raise UserError(f"{checkpoint} is not a training workdir: it has no steps or EMA; drop --step/--ema")
        weights = load_params(where) if (where / "meta").is_dir() else None
        name = model or (weights.model if weights else None)
        if not name:
            raise UserError(
                f"{checkpoint} does not record its model: pass --model (a name from nest_jax.list_models())"
            )
        kwargs = {k: as_tuples(v) for k, v in (weights.model_kwargs if weights else {}).items()}
    kwargs.update(model_kwargs)
    if is_workdir(where) or weights is not None:
        from nest_jax.models import create_model

        built = create_model(name, rngs=nnx.Rngs(0), **kwargs)
        load_into(built, weights)
    else:
        built = pretrained_model(name, pretrained=str(where), **kwargs)
    mean, std = mean or norm[0], std or norm[1]
    if to == "npz":
        log.info("wrote %s", export_npz(built, out, overwrite=overwrite))
        return []
    notes = export_timm(built, out, model_name=name, mean=tuple(mean), std=tuple(std), overwrite=overwrite)
    log.info("wrote %s (timm %s)", out, timm_architecture(name, built))
    return notes


__all__ = ["export_checkpoint"]
