"""The robustness analyses on the command line: occlusion, patch_shuffle, corruptions,
adversarial_patch, shape_bias, per_block_tokens, few_shot (Naseer et al. 2021).

Unlike the representation analyses these re-run the model on perturbed inputs, so they collect the
evaluation batches themselves (turned back into [0, 1] pixels with the dataset's mean and std)
and call the `run_<name>` function of `nest_jax.analysis` once per model in `finish`. Settings come
from `--opt KEY=VALUE` (Python literals); an unknown key or an option a model cannot use is a
UserError. Defaults stay small so `all` is fast.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from nest_jax.analysis import adversarial_patch, corruption_eval, occlusion, patch_shuffle, per_block_tokens, transfer
from nest_jax.analysis import shape_bias as sb
from nest_jax.analysis.forward import to_pixels
from nest_jax.analyze.runners import Analysis, register_analysis
from nest_jax.errors import UserError
from nest_jax.viz import robustness as vr


class RobustnessAnalysis(Analysis):
    """Collects the evaluation batches as pixels; subclasses state `options` and implement `run`."""

    wants_batches = True
    options: dict[str, Any] = {}

    def __init__(self, subjects, *, config=None, options=None, **kw):
        super().__init__(subjects, **kw)
        self.config = config
        opts = dict(options or {})
        self.opts = {k: opts[k] for k in opts if k in self.options}
        self.batches: list[dict] = []
        if config is not None:
            from nest_jax.data.preprocess import mean_std

            mean, std = mean_std(config.dataset)
            self.mean, self.std = tuple(mean), tuple(std)

    def opt(self, key: str):
        return self.opts.get(key, self.options[key])

    def add_batch(self, batch: dict) -> None:
        b = to_pixels({k: batch[k] for k in ("image", "label", "mask")}, self.mean, self.std)
        self.batches.append(b)

    def run(self, s) -> dict:
        raise NotImplementedError

    def finish(self):
        nums = {}
        for s in self.subjects:
            try:
                nums[s.label] = self.run(s)
            except (UserError, ValueError) as e:  # e.g. nothing correctly classified to attack
                print(f"note: {self.name} skipped for {s.label}: {str(e).splitlines()[0]}", file=sys.stderr)
                nums[s.label] = {"skipped": str(e).splitlines()[0]}
        done = {k: v for k, v in nums.items() if "skipped" not in v}
        return nums, (self.figures(done) if done else {})

    def figures(self, results: dict) -> dict:
        return {}


def check_options(names: list[str], options: dict) -> None:
    """Every --opt key must belong to one of the selected robustness analyses."""
    from nest_jax.analyze.runners import ANALYSES

    known = {k for n in names for k in getattr(ANALYSES[n], "options", {})}
    bad = sorted(set(options) - known)
    if bad:
        raise UserError(f"unknown --opt {', '.join(bad)} for {', '.join(names)}; known: {', '.join(sorted(known))}")


@register_analysis("occlusion")
class OcclusionAnalysis(RobustnessAnalysis):
    """Random PatchDrop; salient / non-salient PatchDrop for ViT/DeiT models with a class token."""

    options = {"ratios": occlusion.PAPER_RATIOS, "per_image": False, "seed": 0, "salient": True}

    def run(self, s):
        out = occlusion.run_occlusion(
            s.model,
            self.batches,
            mean=self.mean,
            std=self.std,
            ratios=tuple(self.opt("ratios")),
            per_image=bool(self.opt("per_image")),
            seed=int(self.opt("seed")),
        )
        if self.opt("salient"):
            if s.family == "vit" and "cls" in s.model.config.prefix_tokens:
                out["salient"] = occlusion.run_salient_occlusion(s.model, self.batches, mean=self.mean, std=self.std)
            else:
                print(f"note: salient PatchDrop skipped for {s.label}: needs a class token", file=sys.stderr)
        return out

    def figures(self, results):
        figs = {"occlusion": vr.plot_occlusion(results)}
        sal = {k: v["salient"] for k, v in results.items() if "salient" in v}
        if sal:
            figs["occlusion_salient"] = vr.plot_salient_occlusion(sal)
        return figs


@register_analysis("patch_shuffle")
class PatchShuffleAnalysis(RobustnessAnalysis):
    """Top-1 with the image's cells permuted, for every grid that divides the image."""

    options = {"grids": None, "seed": 0}

    def run(self, s):
        grids = self.opt("grids")
        return patch_shuffle.run_patch_shuffle(
            s.model,
            self.batches,
            mean=self.mean,
            std=self.std,
            grids=[tuple(g) for g in grids] if grids else None,
            seed=int(self.opt("seed")),
        )

    def figures(self, results):
        return {"patch_shuffle": vr.plot_shuffle(results)}


@register_analysis("corruptions")
class CorruptionsAnalysis(RobustnessAnalysis):
    """The 15 common corruptions on the fly; CE, mCE and relative mCE against AlexNet."""

    options = {"corruptions": corruption_eval.C.CORRUPTIONS, "severities": (1, 2, 3, 4, 5), "seed": 0}

    def __init__(self, subjects, **kw):
        super().__init__(subjects, **kw)
        bad = [c for c in self.opt("corruptions") if c not in corruption_eval.C.CORRUPTIONS]
        if bad:
            raise UserError(
                f"unknown corruption {', '.join(bad)}; choose from {', '.join(corruption_eval.C.CORRUPTIONS)}"
            )
        sev = tuple(self.opt("severities"))
        # CE sums errors over severities 1..n against AlexNet's first n: other subsets would mismatch.
        if not sev or sev != tuple(range(1, len(sev) + 1)) or len(sev) > 5:
            raise UserError(f"severities={sev} must be 1..n with n ≤ 5, e.g. severities=(1,2,3)")
        size = int(self.config.dataset.image_size) if self.config is not None else 32
        if size < 32:
            raise UserError(f"the corruptions need images of at least 32 px, these have {size}")

    def run(self, s):
        return corruption_eval.run_corruptions(
            s.model,
            self.batches,
            mean=self.mean,
            std=self.std,
            corruptions=tuple(self.opt("corruptions")),
            severities=tuple(self.opt("severities")),
            seed=int(self.opt("seed")),
        )

    def figures(self, results):
        return {"corruption_errors": vr.plot_corruption_errors(results)}


@register_analysis("adversarial_patch")
class AdversarialPatchAnalysis(RobustnessAnalysis):
    """Universal patch trained on the even-indexed images, fooling rate on the odd-indexed ones."""

    options = {"fraction": 0.05, "shape": "square", "steps": 30, "lr": 2 / 255, "optimizer": "sign", "target": None}

    def __init__(self, subjects, **kw):
        super().__init__(subjects, **kw)
        if self.opt("shape") not in ("square", "circle") or self.opt("optimizer") not in ("sign", "adam"):
            raise UserError("adversarial_patch: shape must be square or circle, optimizer sign or adam")

    def split(self) -> tuple[list, list]:
        def rows(sl):
            return [{k: v[sl] for k, v in b.items()} for b in self.batches]

        return rows(slice(0, None, 2)), rows(slice(1, None, 2))

    def run(self, s):
        train, test = self.split()
        return adversarial_patch.run_adversarial_patch(
            s.model,
            train,
            test,
            mean=self.mean,
            std=self.std,
            fraction=float(self.opt("fraction")),
            shape=self.opt("shape"),
            steps=int(self.opt("steps")),
            lr=float(self.opt("lr")),
            optimizer=self.opt("optimizer"),
            target=self.opt("target"),
            return_patch=True,
        )

    def finish(self):
        nums, _ = super().finish()
        figs = {}
        for label, r in nums.items():
            if "patch" in r:
                patch = r.pop("patch") * r.pop("mask")[..., None]
                title = f"{label}: fooling rate {r['fooling_rate']:.2f}"
                figs[f"adversarial_patch_{label}"] = vr.plot_patched_images([patch], [title])
        return nums, figs


@register_analysis("per_block_tokens")
class PerBlockTokensAnalysis(RobustnessAnalysis):
    """Top-1 of every layer's tokens through the shared final norm and head(s) (ViT/DeiT, NesT)."""

    def __init__(self, subjects, **kw):
        super().__init__(subjects, **kw)
        if not any(per_block_tokens.is_vit(s.model) or per_block_tokens.is_nest(s.model) for s in subjects):
            raise UserError("per_block_tokens needs a ViT/DeiT or NesT, not a ResNet")

    def run(self, s):
        return per_block_tokens.run_per_block_tokens(s.model, self.batches, mean=self.mean, std=self.std)

    def figures(self, results):
        return {"per_block_tokens": vr.plot_per_layer(results)}


@register_analysis("shape_bias")
class ShapeBiasAnalysis(RobustnessAnalysis):
    """Shape bias on cue-conflict images: the released stimuli (`--opt folder=...`, 16-category or
    ImageNet models) or, for a model of the procedural `shapes` data set, its cue-conflict variant."""

    wants_batches = False
    needs_data = False
    options = {"folder": None, "num_images": 256}

    def __init__(self, subjects, **kw):
        super().__init__(subjects, **kw)
        if not self.opt("folder") and self.config.dataset.name != "shapes":
            raise UserError(
                "shape_bias needs cue-conflict images: --opt folder='<stimuli dir>' (16 categories or "
                "ImageNet models) or a config whose dataset.name is 'shapes'"
            )

    def data(self) -> list[dict]:
        size = int(self.config.dataset.image_size)
        if self.opt("folder"):
            return list(sb.cue_conflict_folder(self.opt("folder"), image_size=size))
        from nest_jax.data.shapes import ShapesTexturesSource

        src = ShapesTexturesSource(
            num_classes=self.num_classes, image_size=size, variant="cue_conflict", num_test=int(self.opt("num_images"))
        )
        a = src.arrays("test")
        img = a["image"].astype(np.float32) / 255.0
        img = img if int(self.config.dataset.get("num_channels", 3)) == 3 else img.mean(-1, keepdims=True)
        return [{"image": img, "label": a["label"], "texture_label": a["texture_label"]}]

    def run(self, s):
        if not hasattr(self, "_data"):
            self._data = self.data()
        return sb.run_shape_bias(s.model, self._data, mean=self.mean, std=self.std)

    def figures(self, results):
        return {"shape_bias": vr.plot_shape_bias(results)}


@register_analysis("few_shot")
class FewShotAnalysis(RobustnessAnalysis):
    """Closed-form ridge few-shot on frozen features: shots from the train split (as many batches
    as the evaluation pass reads), accuracy on the evaluation batches."""

    options = {"shots": (1, 5, 10), "seeds": 3, "features": None}

    def train_batches(self) -> list[dict]:
        from nest_jax import data

        ds = self.config.dataset.copy_and_resolve_references()
        ds.eval_split = ds.train_split
        size = len(self.batches[0]["label"])
        it = data.eval_iterator(ds, global_batch_size=size, process_index=0, process_count=1)
        out = []
        for b in it:
            if len(out) >= len(self.batches):
                break
            out.append(to_pixels(b, self.mean, self.std))
        return out

    def run(self, s):
        if not hasattr(self, "_train"):
            self._train = self.train_batches()
            labels = np.concatenate([b["label"][b["mask"] > 0] for b in self._train])
            fewest = int(np.bincount(labels, minlength=self.num_classes).min())
            self._shots = tuple(k for k in self.opt("shots") if k <= fewest)
            if len(self._shots) < len(self.opt("shots")):
                print(
                    f"note: few_shot: the {len(labels)} training images have {fewest} of their rarest class; "
                    f"shots {self._shots} only (more batches: --max-batches)",
                    file=sys.stderr,
                )
            if not self._shots:
                raise UserError("few_shot: some class has no training image; raise --max-batches or --batch-size")
        kind = self.opt("features") or (
            "cls" if s.family == "vit" and "cls" in s.model.config.prefix_tokens else "pre_logits"
        )
        return transfer.run_few_shot(
            s.model,
            self._train,
            self.batches,
            mean=self.mean,
            std=self.std,
            num_classes=self.num_classes,
            kind=kind,
            shots=self._shots,
            seeds=int(self.opt("seeds")),
        ) | {"features": kind}
