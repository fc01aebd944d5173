"""The robustness analyses (Naseer et al. 2021) as evaluators (`nest_jax.train.evaluators`):
occlusion, patch_shuffle, corruptions, per_block_tokens, adversarial_patch, shape_bias, few_shot.

They re-run the model on perturbed copies of the evaluation images, so each reads its batches of
this process once, as [0, 1] pixels (`PixelBatches`), and calls the `run_<name>` function of
`nest_jax.analysis` on them. With several processes each scores its own shard of the split (the
writers keep process 0's numbers).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence

import numpy as np

from nest_jax.analysis import adversarial_patch, corruption_eval, occlusion, patch_shuffle, per_block_tokens, transfer
from nest_jax.analysis import shape_bias as sb
from nest_jax.analysis.forward import to_pixels
from nest_jax.errors import UserError
from nest_jax.train.evaluators import EvalData, Evaluator, register_evaluator
from nest_jax.viz import robustness as vr

log = logging.getLogger(__name__)


def axes(results: dict, *keys: str) -> dict:
    """`results` with the lists under `keys` (the x-axes of the curves, e.g. the drop ratios) as
    numpy arrays: kept in the JSON and the figures, not written as scalars (`flatten`)."""
    return {k: np.asarray(v) if k in keys else v for k, v in results.items()}


class PixelBatches(Evaluator):
    """An evaluator of the evaluation batches as [0, 1] pixels (`pixels`, read once)."""

    @functools.cached_property
    def pixels(self) -> list[dict]:
        return self.read_pixels()

    def read_pixels(self, split: str | None = None, **kw) -> list[dict]:
        """The batches of `split` (None: the evaluation split) as pixels; `kw`: as `Evaluator.batches`."""
        return [to_pixels(b, self.data.mean, self.data.std) for b in self.batches(split, **kw)]

    def kw(self) -> dict:
        return dict(mean=self.data.mean, std=self.data.std)


@register_evaluator("occlusion")
class Occlusion(PixelBatches):
    """Random PatchDrop; salient / non-salient PatchDrop for ViT/DeiT models with a class token."""

    def __init__(
        self,
        model_fn: Callable,
        data: EvalData,
        *,
        ratios: Sequence[float] = occlusion.PAPER_RATIOS,
        per_image: bool = True,
        repeats: int = 5,
        seed: int = 0,
        salient: bool = True,
        batch_size: int | None = None,
        max_batches: int | None = None,
    ):
        super().__init__(model_fn, data, batch_size=batch_size, max_batches=max_batches)
        occlusion.check_ratios(ratios)
        occlusion.check_repeats(repeats, "occlusion")
        self.settings = dict(ratios=tuple(ratios), per_image=bool(per_image), repeats=int(repeats), seed=int(seed))
        self.salient = salient

    def run(self, state: dict, step: int) -> dict:
        model, b = self.model_fn(state), self.pixels
        out = occlusion.run_occlusion(model, b, **self.settings, **self.kw())
        if self.salient:
            if per_block_tokens.is_vit(model) and "cls" in model.config.prefix_tokens:
                out["salient"] = axes(occlusion.run_salient_occlusion(model, b, **self.kw()), "lambdas", "grid")
            else:
                log.warning("occlusion: salient PatchDrop skipped: it needs a class token")
        return axes(out, "ratios", "grid", "dropped")

    def figures(self, results: dict) -> dict:
        figs = {"occlusion": vr.plot_occlusion(results)}
        sal = {k: v["salient"] for k, v in results.items() if "salient" in v}
        if sal:
            figs["occlusion_salient"] = vr.plot_salient_occlusion(sal)
        return figs


@register_evaluator("patch_shuffle")
class PatchShuffle(PixelBatches):
    """Top-1 with the image's cells permuted, for every grid that divides the image."""

    def __init__(
        self,
        model_fn: Callable,
        data: EvalData,
        *,
        grids: Sequence[tuple[int, int]] | None = None,
        repeats: int = 5,
        seed: int = 0,
        batch_size: int | None = None,
        max_batches: int | None = None,
    ):
        super().__init__(model_fn, data, batch_size=batch_size, max_batches=max_batches)
        if grids is not None:
            patch_shuffle.check_grids(grids, (data.image_size, data.image_size))
        occlusion.check_repeats(repeats, "patch_shuffle")
        self.settings = dict(grids=[tuple(g) for g in grids] if grids else None, repeats=int(repeats), seed=int(seed))

    def run(self, state: dict, step: int) -> dict:
        r = patch_shuffle.run_patch_shuffle(self.model_fn(state), self.pixels, **self.settings, **self.kw())
        names = [f"{g[0]}x{g[1]}" for g in r["grids"]]
        return {key: dict(zip(names, r[key])) for key in ("top1", "top1_sem")}

    def figures(self, results: dict) -> dict:
        curves = {
            k: {"grids": [g.split("x") for g in r["top1"]], **{m: list(r[m].values()) for m in ("top1", "top1_sem")}}
            for k, r in results.items()
        }
        return {"patch_shuffle": vr.plot_shuffle(curves)}


@register_evaluator("corruptions")
class Corruptions(PixelBatches):
    """The 15 common corruptions on the fly; CE, mCE and relative mCE against AlexNet."""

    def __init__(
        self,
        model_fn: Callable,
        data: EvalData,
        *,
        corruptions: Sequence[str] = corruption_eval.C.CORRUPTIONS,
        severities: Sequence[int] = (1, 2, 3, 4, 5),
        seed: int = 0,
        batch_size: int | None = None,
        max_batches: int | None = None,
    ):
        super().__init__(model_fn, data, batch_size=batch_size, max_batches=max_batches)
        corruption_eval.check_corruptions(corruptions, severities)
        if data.image_size < 32:
            raise UserError(f"the corruptions need images of at least 32 px, these have {data.image_size}")
        self.settings = dict(corruptions=tuple(corruptions), severities=tuple(severities), seed=int(seed))

    def run(self, state: dict, step: int) -> dict:
        out = corruption_eval.run_corruptions(self.model_fn(state), self.pixels, **self.settings, **self.kw())
        return axes(out, "severities")

    def figures(self, results: dict) -> dict:
        return {"corruption_errors": vr.plot_corruption_errors(results)}


@register_evaluator("per_block_tokens")
class PerBlockTokens(PixelBatches):
    """Top-1 of every layer's tokens through the shared final norm and head(s) (ViT/DeiT, NesT)."""

    def run(self, state: dict, step: int) -> dict:
        model = self.model_fn(state)
        if not (per_block_tokens.is_vit(model) or per_block_tokens.is_nest(model)):
            raise UserError("per_block_tokens needs a ViT/DeiT or NesT, not a ResNet")
        return per_block_tokens.run_per_block_tokens(model, self.pixels, **self.kw())

    def figures(self, results: dict) -> dict:
        return {"per_block_tokens": vr.plot_per_layer(results)}


@register_evaluator("adversarial_patch")
class AdversarialPatch(PixelBatches):
    """Universal patches of several sizes trained on the even-indexed images; the fooling rate of
    each, and of the random patch it starts from, on the odd-indexed ones."""

    def __init__(
        self,
        model_fn: Callable,
        data: EvalData,
        *,
        fractions: tuple[float, ...] = (0.05, 0.1, 0.2),
        shape: str = "square",
        steps: int = 100,
        lr: float = 0.1,
        optimizer: str = "adam",
        placements: int = 2,
        target: int | None = None,
        batch_size: int | None = None,
        max_batches: int | None = None,
    ):
        super().__init__(model_fn, data, batch_size=batch_size, max_batches=max_batches)
        size = (data.image_size, data.image_size)
        if not fractions:
            raise UserError("adversarial_patch: fractions=() names no patch size; e.g. fractions=(0.05, 0.1)")
        for fraction in fractions:
            adversarial_patch.check_patch(
                size, fraction=fraction, shape=shape, steps=steps, lr=lr, optimizer=optimizer, placements=placements
            )
        if target is not None and not 0 <= target < data.num_classes:
            raise UserError(f"adversarial_patch: target={target} must be a class in 0..{data.num_classes - 1} or None")
        self.fractions = tuple(float(f) for f in fractions)
        self.settings = dict(
            shape=shape, steps=int(steps), lr=float(lr), optimizer=optimizer, placements=placements, target=target
        )

    def run(self, state: dict, step: int) -> dict:
        batches = self.pixels
        train = [{k: v[0::2] for k, v in b.items()} for b in batches]
        held_out = [{k: v[1::2] for k, v in b.items()} for b in batches]
        model = self.model_fn(state)
        out = {}
        for fraction in self.fractions:
            r = adversarial_patch.run_adversarial_patch(
                model, train, held_out, fraction=fraction, return_patch=True, **self.settings, **self.kw()
            )
            r["patch"] = r["patch"] * r.pop("mask")[..., None]  # the patch as pasted (HWC image)
            out[f"fraction_{fraction:g}"] = r
        return out

    def figures(self, results: dict) -> dict:
        figures = {"adversarial_patch_fooling": vr.plot_fooling_rates(results)}
        for k, r in results.items():
            names = list(r)
            figures[f"adversarial_patch_{k}"] = vr.plot_patched_images(
                [np.asarray(r[n]["patch"]) for n in names],
                [f"{n}: {r[n]['fooling_rate']:.2f} (random {r[n]['random_fooling_rate']:.2f})" for n in names],
            )
        return figures


@register_evaluator("shape_bias")
class ShapeBias(PixelBatches):
    """Shape bias (fraction of shape decisions) on cue-conflict images.

    The images are the released stimuli (`folder`; 16-category or ImageNet models) or, for a model of
    the procedural `shapes` data set, its cue-conflict variant."""

    def __init__(self, model_fn: Callable, data: EvalData, *, folder: str | None = None, num_images: int = 256):
        super().__init__(model_fn, data)
        if num_images < 1:
            raise UserError(f"shape_bias: num_images={num_images} must be at least 1, e.g. num_images=256")
        if not folder and data.dataset.name != "shapes":
            raise UserError(
                "shape_bias needs cue-conflict images: folder='<stimuli dir>' (16 categories or ImageNet "
                "models) or a config whose dataset.name is 'shapes'"
            )
        self.folder, self.num_images = folder, int(num_images)

    @functools.cached_property
    def stimuli(self) -> list[dict]:
        if self.folder:
            return list(sb.cue_conflict_folder(self.folder, image_size=self.data.image_size))
        img, a = sb.shapes_world_images(self.data, "cue_conflict", self.num_images)
        return [{"image": img, "label": a["label"], "texture_label": a["texture_label"]}]

    def run(self, state: dict, step: int) -> dict:
        return sb.run_shape_bias(self.model_fn(state), self.stimuli, **self.kw())

    def figures(self, results: dict) -> dict:
        return {"shape_bias": vr.plot_shape_bias(results)}


@register_evaluator("few_shot")
class FewShot(PixelBatches):
    """Ridge few-shot accuracy on frozen features (shots from the train split).

    Shots come from as many batches of the train split as the evaluation reads; accuracy is on the
    evaluation batches. `dataset`: fields overriding the run's dataset config for a transfer data
    set (e.g. {"name": "cifar10"})."""

    def __init__(
        self,
        model_fn: Callable,
        data: EvalData,
        *,
        shots: Sequence[int] = (1, 5, 10),
        seeds: int = 3,
        features: str | None = None,
        dataset: dict | None = None,
        batch_size: int | None = None,
        max_batches: int | None = None,
    ):
        super().__init__(model_fn, data, batch_size=batch_size, max_batches=max_batches)
        transfer.check_shots(shots, seeds)
        self.shots, self.seeds, self.features = tuple(int(k) for k in shots), int(seeds), features
        self.dataset = data.dataset.copy_and_resolve_references()
        with self.dataset.unlocked():
            self.dataset.update(dict(dataset or {}))

    @functools.cached_property
    def sets(self) -> tuple[list, list, int, tuple]:
        """(train batches, test batches, classes, usable shots), read once."""
        test = self.read_pixels(self.dataset.eval_split, dataset=self.dataset)
        train = self.read_pixels(self.dataset.train_split, dataset=self.dataset, max_batches=len(test))
        labels = np.concatenate([b["label"][b["mask"] > 0] for b in train])
        classes = int(max(int(np.max(b["label"])) for b in train + test) + 1)
        fewest = int(np.bincount(labels, minlength=classes).min())
        shots = tuple(k for k in self.shots if k <= fewest)
        if not shots:
            raise UserError("few_shot: some class has no training image; read more batches (max_batches)")
        if len(shots) < len(self.shots):
            log.warning("few_shot: the rarest class has %d training images: shots %s only", fewest, shots)
        return train, test, classes, shots

    def run(self, state: dict, step: int) -> dict:
        model = self.model_fn(state)
        train, test, classes, shots = self.sets
        kind = self.features or (
            "cls" if per_block_tokens.is_vit(model) and "cls" in model.config.prefix_tokens else "pre_logits"
        )
        return transfer.run_few_shot(
            model, train, test, num_classes=classes, kind=kind, shots=shots, seeds=self.seeds, **self.kw()
        )
