"""The robustness analyses as evaluators of the training loop (one `run()` each).

Registered under `occlusion`, `patch_shuffle`, `corruptions`, `per_block_tokens`, `shape_bias`,
`adversarial_patch` and `few_shot` when `nest_jax.train.evaluators` provides the registry. Each
reads up to `max_batches` batches of the config's evaluation split (normalized by the pipeline;
turned back into [0, 1] pixels with the dataset's mean and std), rebuilds the model from the train
state, runs the analysis and returns flat `{"<name>/<metric>": float}`.

cfg fields (all optional): max_batches (4), batch_size (config.train.eval_batch_size), seed (0),
plus each analysis's options (`ratios`, `grids`, `corruptions`, `severities`, `folder`, `shots`, …).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flax import nnx

from nest_jax.analysis import (
    adversarial_patch,
    corruption_eval,
    occlusion,
    patch_shuffle,
    per_block_tokens,
    shape_bias,
    transfer,
)
from nest_jax.analysis.forward import to_pixels

try:  # the evaluator registry belongs to the training package (absent in older checkouts)
    from nest_jax.train.evaluators import register_evaluator
except ImportError:  # pragma: no cover

    def register_evaluator(name):
        return lambda cls: cls


def flatten(prefix: str, value: Any, out: dict | None = None) -> dict[str, float]:
    """Nested dicts / lists of numbers -> {"prefix/key/…": float} (lists indexed by position)."""
    out = {} if out is None else out
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(f"{prefix}/{k}", v, out)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            flatten(f"{prefix}/{i}", v, out)
    elif isinstance(value, (int, float, np.floating, np.integer)):
        out[prefix] = float(value)
    return out


class RobustnessEvaluator:
    """Shared set-up: the model from the train state, [0, 1] batches of the evaluation split."""

    def __init__(self, name: str, cfg, *, config, trainer, data):
        from nest_jax.train.trainer import build_model

        self.name, self.cfg, self.config, self.trainer, self.data = name, cfg, config, trainer, data
        self.num_classes = int(getattr(data, "num_classes", 0) or self._info().num_classes)
        abstract = nnx.eval_shape(lambda: build_model(config, self.num_classes, nnx.Rngs(0)))
        _, p, s, _ = nnx.split(abstract, nnx.Param, nnx.BatchStat, ...)
        self._flat = (list(nnx.to_flat_state(p)), list(nnx.to_flat_state(s)))
        self._batches = None

    def _info(self):
        from nest_jax.data import get_info

        return get_info(self.config.dataset)

    def get(self, key: str, default):
        return self.cfg.get(key, default) if hasattr(self.cfg, "get") else default

    @property
    def mean_std(self) -> tuple[tuple, tuple]:
        from nest_jax.data.preprocess import mean_std

        mean, std = mean_std(self.config.dataset)
        return tuple(mean), tuple(std)

    def batches(self, ds_cfg=None) -> list[dict]:
        if self._batches is None or ds_cfg is not None:
            from nest_jax.data import eval_iterator

            ds = ds_cfg or self.config.dataset
            size = int(self.get("batch_size", self.config.train.eval_batch_size))
            it = eval_iterator(ds, global_batch_size=size, process_index=0, process_count=1)
            mean, std = self.mean_std
            out = []
            for i, b in enumerate(it):
                if i >= int(self.get("max_batches", 4)):
                    break
                out.append(to_pixels(b, mean, std))
            if ds_cfg is not None:
                return out
            self._batches = out
        return self._batches

    def model(self, state: dict, rest):
        from nest_jax.train.trainer import params_state

        pf, sf = self._flat
        return nnx.merge(
            self.trainer.graphdef,
            params_state(pf, state["params"]),
            params_state(sf, state.get("batch_stats") or {}),
            rest,
        )

    def analyse(self, model, batches) -> dict:
        raise NotImplementedError

    def run(self, state: dict, rest, step: int) -> dict[str, float]:
        del step
        return flatten(self.name, self.analyse(self.model(state, rest), self.batches()))


@register_evaluator("occlusion")
class OcclusionEvaluator(RobustnessEvaluator):
    """Random PatchDrop curve; with `salient: True` also salient / non-salient PatchDrop (ViTs)."""

    def analyse(self, model, batches):
        mean, std = self.mean_std
        out = occlusion.run_occlusion(
            model,
            batches,
            mean=mean,
            std=std,
            ratios=tuple(self.get("ratios", occlusion.PAPER_RATIOS)),
            per_image=bool(self.get("per_image", False)),
            seed=int(self.get("seed", 0)),
        )
        out = {"top1": out["top1"]}
        if self.get("salient", False):
            s = occlusion.run_salient_occlusion(model, batches, mean=mean, std=std)
            out.update(salient_drop_top1=s["salient_drop_top1"], non_salient_drop_top1=s["non_salient_drop_top1"])
        return out


@register_evaluator("patch_shuffle")
class PatchShuffleEvaluator(RobustnessEvaluator):
    def analyse(self, model, batches):
        mean, std = self.mean_std
        grids = self.get("grids", None)
        r = patch_shuffle.run_patch_shuffle(
            model, batches, mean=mean, std=std, grids=[tuple(g) for g in grids] if grids else None
        )
        return {f"{g[0]}x{g[1]}": a for g, a in zip(r["grids"], r["top1"])}


@register_evaluator("corruptions")
class CorruptionsEvaluator(RobustnessEvaluator):
    def analyse(self, model, batches):
        mean, std = self.mean_std
        r = corruption_eval.run_corruptions(
            model,
            batches,
            mean=mean,
            std=std,
            corruptions=tuple(self.get("corruptions", corruption_eval.C.CORRUPTIONS)),
            severities=tuple(self.get("severities", (1, 2, 3, 4, 5))),
            seed=int(self.get("seed", 0)),
        )
        return {k: r[k] for k in ("clean_top1", "mce", "relative_mce", "ce")}


@register_evaluator("per_block_tokens")
class PerBlockTokensEvaluator(RobustnessEvaluator):
    def analyse(self, model, batches):
        mean, std = self.mean_std
        r = per_block_tokens.run_per_block_tokens(model, batches, mean=mean, std=std)
        return {k: v for k, v in r.items() if k != "layers"}


@register_evaluator("adversarial_patch")
class AdversarialPatchEvaluator(RobustnessEvaluator):
    """Patch trained on the first half of the evaluation batches, fooling rate on the second half."""

    def analyse(self, model, batches):
        mean, std = self.mean_std
        half = max(len(batches) // 2, 1)
        r = adversarial_patch.run_adversarial_patch(
            model,
            batches[:half],
            batches[half:] or batches,
            mean=mean,
            std=std,
            fraction=float(self.get("fraction", 0.05)),
            shape=self.get("shape", "square"),
            steps=int(self.get("steps", 50)),
            lr=float(self.get("lr", 2 / 255)),
            optimizer=self.get("optimizer", "sign"),
            target=self.get("target", None),
        )
        return {"fooling_rate": r["fooling_rate"]}


@register_evaluator("shape_bias")
class ShapeBiasEvaluator(RobustnessEvaluator):
    """Cue-conflict images from `folder` (the released stimuli; 1000-class models) or, by default,
    the procedural shapes × textures set (models trained on it)."""

    def analyse(self, model, batches):
        mean, std = self.mean_std
        folder = self.get("folder", None)
        if folder:
            size = int(self.config.dataset.image_size)
            data = list(shape_bias.cue_conflict_folder(folder, image_size=size))
        else:
            from nest_jax.data.shapes import ShapesTexturesSource

            src = ShapesTexturesSource(
                num_classes=self.num_classes,
                image_size=int(self.config.dataset.image_size),
                variant="cue_conflict",
                num_test=int(self.get("num_images", 512)),
            )
            a = src.arrays("test")
            c = int(self.config.dataset.get("num_channels", 3))
            img = a["image"].astype(np.float32) / 255.0
            img = img[..., :c] if c == 3 else img.mean(-1, keepdims=True)
            data = [{"image": img, "label": a["label"], "texture_label": a["texture_label"]}]
        return shape_bias.run_shape_bias(model, data, mean=mean, std=std)


@register_evaluator("few_shot")
class FewShotEvaluator(RobustnessEvaluator):
    """Ridge few-shot on frozen features of a transfer data set (`dataset`: fields overriding
    config.dataset, e.g. {"name": "cifar10", "data_dir": …}); its train split gives the shots."""

    def analyse(self, model, batches):
        ds = (
            self.config.dataset.copy_and_resolve_references()
            if hasattr(self.config.dataset, "copy_and_resolve_references")
            else self.config.dataset
        )
        for k, v in dict(self.get("dataset", {}) or {}).items():
            ds[k] = v
        test = self.batches(ds)
        train_ds = ds.copy_and_resolve_references() if hasattr(ds, "copy_and_resolve_references") else ds
        train_ds.eval_split = ds.train_split
        train = self.batches(train_ds)
        mean, std = self.mean_std
        classes = int(max(int(np.max(b["label"])) for b in train + test) + 1)
        r = transfer.run_few_shot(
            model,
            train,
            test,
            mean=mean,
            std=std,
            num_classes=classes,
            kind=self.get("features", "cls" if per_block_tokens.is_vit(model) else "pre_logits"),
            shots=tuple(self.get("shots", (1, 5, 10, 25))),
            seeds=int(self.get("seeds", 3)),
        )
        return {f"{k}shot": v for k, v in r["mean"].items()}
