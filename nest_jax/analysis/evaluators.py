"""The representation analyses as evaluators (`nest_jax.train.evaluators`): cka,
attention_distance, norm_ratio, probes, localization, pos_embed.

Each runs one jitted forward pass per batch recording what it needs (`Representation.capture`),
drops the padding rows, and accumulates on the host. An analysis that does not apply to the model
(e.g. localization on a ResNet) raises a UserError from `run`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from nest_jax import viz
from nest_jax.analysis.attention_distance import model_attention_distances
from nest_jax.analysis.cka import MinibatchCKA
from nest_jax.analysis.localization import LocalizationCKA, localization_score
from nest_jax.analysis.norm_ratio import NormSums, norm_sums
from nest_jax.analysis.pos_embed_similarity import pos_embed_similarity
from nest_jax.analysis.probes import layer_probes, token_probe
from nest_jax.analysis.representations import POOLS, layer_representations, model_family, num_prefix
from nest_jax.errors import UserError
from nest_jax.train.evaluators import EvalData, Evaluator, model_state, register_evaluator


class Representation(Evaluator):
    """An evaluator over one jitted eval-mode forward pass per batch recording `capture`."""

    capture: tuple[str, ...] = ("layers",)

    @functools.cached_property
    def _fwd(self) -> Callable:
        return jax.jit(lambda state, images: self.model_fn(state)(images, train=False, capture=self.capture)[1])

    def forward(self, state: dict, others: tuple = ()) -> Iterator[tuple[list[dict], np.ndarray]]:
        """Per batch: ([intermediates of this model, then of each other], labels), padding rows
        removed. `others`: (Representation, state) pairs of other models run on the same images."""
        runs = [(self, state), *others]
        for batch in self.batches():
            g = self.data.shard(batch)
            inters = [ev._fwd(model_state(s), g["image"]) for ev, s in runs]
            inters, mask, labels = self.data.gather((inters, g["mask"], g["label"]))
            valid = np.asarray(mask) > 0
            yield [jax.tree.map(lambda a: a[valid], i) for i in inters], np.asarray(labels)[valid]


def _meta(model) -> tuple[str, int]:
    return model_family(model), num_prefix(model)


@register_evaluator("cka")
class CKA(Representation):
    """Layer × layer unbiased minibatch CKA (Nguyen et al. 2021); with a second model, across both."""

    def __init__(
        self,
        model_fn: Callable,
        data: EvalData,
        *,
        pool: str = "all",
        kernel: str = "linear",
        batch_size: int | None = None,
        max_batches: int | None = None,
    ):
        if pool not in POOLS or kernel not in ("linear", "rbf"):
            raise UserError(f"cka: pool must be one of {', '.join(POOLS)} and kernel linear or rbf")
        super().__init__(model_fn, data, batch_size=batch_size, max_batches=max_batches)
        self.pool, self.kernel = pool, kernel

    def _features(self, inter: dict, model) -> list:
        family, prefix = _meta(model)
        if self.pool == "cls" and (family != "vit" or prefix == 0):
            raise UserError("cka: pool='cls' needs a model with a class token; use pool='mean' or 'all'")
        return layer_representations(inter, self.pool, family, prefix)

    def _accumulate(self, state: dict, other=None) -> MinibatchCKA:
        models = [self.model_fn(state)] + ([other[0].model_fn(other[1])] if other else [])
        acc = None
        for inters, labels in self.forward(state, others=(other,) if other else ()):
            if len(labels) < 4:
                continue  # HSIC₁ needs 4 examples; only a final partial batch can be this small
            feats = [self._features(i, m) for i, m in zip(inters, models)]
            if acc is None:
                acc = MinibatchCKA(*[len(f) for f in feats], kernel=self.kernel)
            acc.update(*feats)
        if acc is None:
            raise UserError("cka: no batch of at least 4 examples in the evaluation split")
        return acc

    @staticmethod
    def _summary(m: np.ndarray, n: int) -> dict:
        adjacent = float(np.mean(np.diag(m, 1))) if min(m.shape) > 1 else 1.0
        return {"matrix": m.astype(np.float32), "adjacent_mean": adjacent, "first_last": float(m[0, -1]), "examples": n}

    def run(self, state: dict, step: int) -> dict:
        acc = self._accumulate(state)
        return self._summary(acc.result(), acc.num_examples)

    def compare(self, state: dict, other: CKA, other_state: dict) -> dict:
        """CKA between this model's layers (rows) and `other`'s (columns), on the same images."""
        acc = self._accumulate(state, (other, other_state))
        return self._summary(acc.result("xy"), acc.num_examples)

    def figures(self, results: dict) -> dict:
        figs = {}
        for key, r in results.items():
            a, _, b = key.partition("|")
            figs["cka_" + key.replace("|", "_vs_")] = viz.plot_cka(
                np.asarray(r["matrix"]).T if b else np.asarray(r["matrix"]),
                xlabel=f"{a} layer",
                ylabel=f"{b or a} layer",
                title=f"CKA ({self.pool} tokens, {int(r['examples'])} images)",
            )
        return figs


@register_evaluator("attention_distance")
class AttentionDistance(Representation):
    """Mean attention distance per layer and head, in input pixels (ViT/DeiT/NesT)."""

    capture = ("attention",)

    def run(self, state: dict, step: int) -> dict:
        model = self.model_fn(state)
        if model_family(model) == "resnet":
            raise UserError("attention_distance needs a transformer (ViT/DeiT/NesT), not a ResNet")
        sums, count = None, 0
        for (inter,), labels in self.forward(state):
            d = [np.asarray(x, np.float64).sum(0) for x in model_attention_distances(inter["attention"], model.config)]
            sums = d if sums is None else [a + b for a, b in zip(sums, d)]
            count += len(labels)
        per_layer = [s / count for s in sums]
        out: dict = {f"layer{i}": float(d.mean()) for i, d in enumerate(per_layer)}
        out["per_head"] = per_layer
        if len({d.size for d in per_layer}) == 1:
            out["heads"] = np.stack(per_layer).astype(np.float32)
        return out

    def figures(self, results: dict) -> dict:
        return {
            f"attention_distance_{k}": viz.plot_attention_distance(
                [np.asarray(d) for d in r["per_head"]], title=f"{k}: mean attention distance"
            )
            for k, r in results.items()
        }


@register_evaluator("norm_ratio")
class NormRatio(Representation):
    """‖z‖/‖f(z)‖ per layer: attention and MLP branches (prefix tokens and spatial), ResNet blocks."""

    capture = ("residuals",)

    def run(self, state: dict, step: int) -> dict:
        model = self.model_fn(state)
        family, prefix = _meta(model)
        names = tuple(getattr(model.config, "prefix_tokens", ()))
        acc = NormSums()
        for (inter,), _ in self.forward(state):
            acc.update(norm_sums(inter, family, prefix, names))
        return acc.ratios()

    def figures(self, results: dict) -> dict:
        return {
            f"norm_ratio_{k}": viz.plot_norm_ratios(
                {f"{b}/{g}": np.asarray(v) for b, groups in r.items() for g, v in groups.items()},
                title=f"{k}: ‖z‖ / ‖f(z)‖",
            )
            for k, r in results.items()
        }


@register_evaluator("probes")
class Probes(Representation):
    """Linear probes per layer (ridge, logistic; class token, mean token) and per final-layer token.

    Fitted on the even-indexed examples of the split, tested on the odd-indexed ones."""

    def run(self, state: dict, step: int) -> dict:
        family, prefix = _meta(self.model_fn(state))
        pools = ("cls", "mean") if family == "vit" and prefix else ("mean",)
        feats: dict[str, list] = {p: [] for p in pools}
        tokens, labels = [], []
        for (inter,), y in self.forward(state):
            labels.append(y)
            for p in pools:
                feats[p].append(jax.device_get(layer_representations(inter, p, family, prefix)))
            h = inter["layers"][-1]
            tokens.append(np.asarray(h[:, prefix:] if family == "vit" else h.reshape(h.shape[0], -1, h.shape[-1])))
        y = np.concatenate(labels)
        tr, te, k = slice(0, None, 2), slice(1, None, 2), self.data.num_classes
        curves = {}
        for p, batches in feats.items():
            layers = [np.concatenate(f) for f in zip(*batches)]
            fit, test = [f[tr] for f in layers], [f[te] for f in layers]
            for kind in ("ridge", "logistic"):
                curves[f"{kind}_{p}"] = np.asarray(layer_probes(fit, y[tr], test, y[te], num_classes=k, kind=kind))
        t = np.concatenate(tokens)
        acc = np.asarray(token_probe(*map(jnp.asarray, (t[tr], y[tr], t[te], y[te])), num_classes=k))
        return {"layers": curves, "per_token": acc, "per_token_mean": float(acc.mean())}

    def figures(self, results: dict) -> dict:
        figs = {}
        for k, r in results.items():
            curves = {name.replace("_", "/"): np.asarray(v) for name, v in r["layers"].items()}
            figs[f"probes_{k}"] = viz.plot_probe_accuracy(curves, title=f"{k}: linear probes")
            acc = np.asarray(r["per_token"])
            side = int(round(np.sqrt(acc.size)))
            if side * side == acc.size:
                figs[f"token_probe_{k}"] = viz.plot_token_probe(acc, (side, side), title=f"{k}: per-token probe")
        return figs


@register_evaluator("localization")
class Localization(Representation):
    """CKA between each final-layer token and the input patch tokens at every position (ViT/DeiT)."""

    capture = ("layers", "residuals")

    def run(self, state: dict, step: int) -> dict:
        model = self.model_fn(state)
        if model_family(model) != "vit":
            raise UserError("localization needs a ViT/DeiT (a single patch grid), not NesT or a ResNet")
        acc = LocalizationCKA(model.config.grid, num_prefix(model))
        for (inter,), labels in self.forward(state):
            if len(labels) >= 4:
                acc.update(inter)
        maps = acc.result()
        return {"maps": maps, "own_patch_is_most_similar": localization_score(maps)}

    def figures(self, results: dict) -> dict:
        return {
            f"localization_{k}": viz.plot_position_maps(
                np.asarray(r["maps"]), title=f"{k}: CKA(final token, input patches)"
            )
            for k, r in results.items()
        }


@register_evaluator("pos_embed")
class PosEmbed:
    """Cosine similarity of position embeddings (ViT; NesT per level). Reads no data."""

    def __init__(self, model_fn: Callable, data: EvalData):
        self.model_fn = model_fn

    def run(self, state: dict, step: int) -> dict:
        model = self.model_fn(state)
        if model_family(model) == "resnet":
            raise UserError("pos_embed needs a model with position embeddings (ViT/DeiT/NesT)")
        return {"levels": [np.asarray(m) for m in pos_embed_similarity(model)]}

    def figures(self, results: dict) -> dict:
        figs = {}
        for k, r in results.items():
            for lvl, m in enumerate(r["levels"]):
                suffix = f"_level{lvl}" if len(r["levels"]) > 1 else ""
                figs[f"pos_embed_{k}{suffix}"] = viz.plot_position_maps(
                    np.asarray(m), title=f"{k}{suffix}: position-embedding cosine similarity", vmin=-1, vmax=1
                )
        return figs
