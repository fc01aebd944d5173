"""The GAN evaluator: FID and KID of the EMA generator's samples against a split of the data.

`fid_evaluator(config)` reads `config.gan.fid`: `extractor` "classifier" (default; `checkpoint` =
the workdir of a classifier trained with the main job on the same data) or "inception" (`weights`
= the FID Inception weights file), `split` (real images), `num_samples`, `batch_size`, KID subsets.
The real-image statistics are computed once; each call samples `num_samples` images.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

from nest_jax.analysis import fid as F
from nest_jax.errors import UserError


def make_extractor(fid_cfg: Any) -> F.Extractor:
    kind = fid_cfg.get("extractor", "classifier")
    if kind == "classifier":
        return F.classifier_from_workdir(fid_cfg.get("checkpoint", ""))
    if kind == "inception":
        return F.inception_extractor(fid_cfg.get("weights", ""), resize=fid_cfg.get("resize", "tf_legacy"))
    raise UserError(f"gan.fid.extractor must be 'classifier' or 'inception', got {kind!r}")


def real_stats(config: Any, extract: F.Extractor, *, data: Any = None, keep_features: bool = True) -> F.FeatureStats:
    """Feature statistics of one pass over `config.gan.fid.split` (images in [-1, 1], padding masked)."""
    data = data if data is not None else importlib.import_module("nest_jax.data")
    fid_cfg = config.gan.fid
    ds = config.dataset.copy_and_resolve_references()
    with ds.unlocked():
        ds.eval_split = fid_cfg.get("split", "train")
        ds.eval_resize = "resize"
    it = data.eval_iterator(ds, global_batch_size=int(fid_cfg.batch_size), process_index=0, process_count=1)
    return F.accumulate(extract, ((b["image"], b["mask"]) for b in it), keep_features=keep_features)


def fid_evaluator(
    config: Any, *, data: Any = None, extractor: F.Extractor | None = None
) -> Callable[[int, Callable[[int, int], np.ndarray]], dict] | None:
    """`evaluate(step, sample)` -> {"fid", "kid", "kid_std"}, or None when `gan.fid.every_steps` is 0."""
    fid_cfg = config.gan.fid
    if not int(fid_cfg.get("every_steps", 0) or 0):
        return None
    extract = extractor or make_extractor(fid_cfg)
    real = real_stats(config, extract, data=data)
    n, bs = int(fid_cfg.num_samples), int(fid_cfg.batch_size)

    def evaluate(step: int, sample: Callable[[int, int], np.ndarray]) -> dict:
        images = sample(n, 10_000 + step)  # fresh latents per evaluation, fixed per step
        fake = F.accumulate(extract, (images[i : i + bs] for i in range(0, n, bs)), keep_features=True)
        k_mean, k_std = F.kid(
            real.all_features(),
            fake.all_features(),
            num_subsets=int(fid_cfg.get("kid_subsets", 50)),
            subset_size=int(fid_cfg.get("kid_subset_size", 500)),
        )
        return {"fid": F.fid_from_stats(real, fake), "kid": k_mean, "kid_std": k_std}

    return evaluate
