"""The analyses the command line runs: each accumulates over batches, then returns numbers and figures.

An analysis is a class registered by name with `register_analysis`; it states what the forward
pass must record (`capture`), takes each batch's intermediates of model A (and of model B when a
comparison model is given) in `update`, and returns `(numbers, figures)` from `finish`: numbers
are JSON-ready (lists of floats), figures are matplotlib Figures keyed by file stem.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nest_jax import viz
from nest_jax.analysis import attention_distance as ad
from nest_jax.analysis.cka import MinibatchCKA
from nest_jax.analysis.localization import LocalizationCKA, localization_score
from nest_jax.analysis.norm_ratio import NormSums, norm_sums
from nest_jax.analysis.pos_embed_similarity import pos_embed_similarity
from nest_jax.analysis.probes import layer_probes, token_probe
from nest_jax.analysis.representations import layer_representations, model_family, num_prefix
from nest_jax.errors import UserError

ANALYSES: dict[str, type] = {}


def register_analysis(name: str):
    def wrap(cls):
        cls.name = name
        ANALYSES[name] = cls
        return cls

    return wrap


@dataclasses.dataclass
class Subject:
    """One model under analysis: its label (for titles and keys), the module, family and prefix."""

    label: str
    model: Any

    @property
    def family(self) -> str:
        return model_family(self.model)

    @property
    def prefix(self) -> int:
        return num_prefix(self.model)


def _tolist(x):
    if isinstance(x, (str, bool, int)) or x is None:
        return x
    if isinstance(x, dict):
        return {k: _tolist(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_tolist(v) for v in x]
    a = np.asarray(x, np.float64)
    return a.tolist() if a.ndim else float(a)


class Analysis:
    capture: tuple[str, ...] = ()
    needs_data = True
    wants_batches = False  # True: `add_batch` receives each evaluation batch itself (robustness analyses)

    def __init__(
        self,
        subjects: list[Subject],
        *,
        pool: str = "all",
        kernel: str = "linear",
        num_classes: int = 10,
        config: Any = None,
        options: dict | None = None,
    ):
        self.subjects, self.pool, self.kernel, self.num_classes = subjects, pool, kernel, num_classes

    def update(self, inters: list[dict], labels: np.ndarray) -> None:
        pass

    def finish(self) -> tuple[dict, dict]:
        raise NotImplementedError


@register_analysis("cka")
class CKAAnalysis(Analysis):
    """Layer × layer minibatch CKA within each model and across the two (unbiased HSIC₁)."""

    capture = ("layers",)

    def __init__(self, subjects, **kw):
        super().__init__(subjects, **kw)
        for s in subjects:
            if self.pool == "cls" and (s.family != "vit" or s.prefix == 0):
                raise UserError(f"--pool=cls needs a class token but {s.label} has none; use --pool=mean or all")
        self.accs: dict[str, MinibatchCKA] = {}

    def update(self, inters, labels):
        if len(labels) < 4:
            return  # HSIC₁ needs 4 examples; only a final partial batch can be this small
        feats = [layer_representations(i, self.pool, s.family, s.prefix) for i, s in zip(inters, self.subjects)]
        if "acc" not in self.accs:  # one accumulator: every Gram matrix is computed once per batch
            self.accs["acc"] = MinibatchCKA(*[len(f) for f in feats], kernel=self.kernel)
        self.accs["acc"].update(*feats)

    def finish(self):
        acc = self.accs["acc"]
        labels = [s.label for s in self.subjects]
        blocks = {labels[0]: "xx"}
        if len(labels) == 2:
            blocks.update({labels[1]: "yy", f"{labels[0]}|{labels[1]}": "xy"})
        nums, figs = {}, {}
        for key, block in blocks.items():
            m = acc.result(block)
            nums[key] = m.tolist()
            a, _, b = key.partition("|")
            stem = "cka_" + key.replace("|", "_vs_")
            figs[stem] = viz.plot_cka(
                m.T if b else m,
                xlabel=f"{a} layer",
                ylabel=f"{b or a} layer",
                title=f"CKA ({self.pool} tokens, {acc.num_examples} images)",
            )
        return {"pool": self.pool, "kernel": self.kernel, "matrices": nums}, figs


@register_analysis("attention_distance")
class AttentionDistanceAnalysis(Analysis):
    """Mean attention distance per layer and head, in input pixels (transformers only)."""

    capture = ("attention",)

    def __init__(self, subjects, **kw):
        super().__init__(subjects, **kw)
        self.sums: dict[str, list] = {}
        self.count = {s.label: 0 for s in subjects if s.family != "resnet"}
        if not self.count:
            raise UserError("attention_distance needs a transformer (ViT/DeiT/NesT), not a ResNet")

    def update(self, inters, labels):
        for inter, s in zip(inters, self.subjects):
            if s.family == "resnet":
                continue
            d = [
                np.asarray(x, np.float64).sum(0)
                for x in ad.model_attention_distances(inter["attention"], s.model.config)
            ]
            prev = self.sums.get(s.label)
            self.sums[s.label] = d if prev is None else [p + x for p, x in zip(prev, d)]
            self.count[s.label] += len(labels)

    def finish(self):
        nums, figs = {}, {}
        for label, sums in self.sums.items():
            d = [x / self.count[label] for x in sums]
            nums[label] = [x.tolist() for x in d]
            figs[f"attention_distance_{label}"] = viz.plot_attention_distance(
                d, title=f"{label}: mean attention distance"
            )
        return {"pixels": nums}, figs


@register_analysis("norm_ratio")
class NormRatioAnalysis(Analysis):
    """‖z‖/‖f(z)‖ per layer: attention and MLP branches (prefix tokens and spatial), ResNet blocks."""

    capture = ("residuals",)

    def __init__(self, subjects, **kw):
        super().__init__(subjects, **kw)
        self.accs = {s.label: NormSums() for s in subjects}

    def update(self, inters, labels):
        for inter, s in zip(inters, self.subjects):
            names = tuple(getattr(s.model.config, "prefix_tokens", ()))
            self.accs[s.label].update(norm_sums(inter, s.family, s.prefix, names))

    def finish(self):
        nums, figs = {}, {}
        for label, acc in self.accs.items():
            r = acc.ratios()
            nums[label] = {k: [float(x) for x in v] for k, v in r.items()}
            figs[f"norm_ratio_{label}"] = viz.plot_norm_ratios(r, title=f"{label}: ‖z‖ / ‖f(z)‖")
        return {"ratios": nums}, figs


def _final_tokens(inter: dict, s: Subject) -> jax.Array:
    h = inter["layers"][-1]
    if s.family == "vit":
        return h[:, s.prefix :]
    return h.reshape(h.shape[0], -1, h.shape[-1])


@register_analysis("probes")
class ProbeAnalysis(Analysis):
    """Per-layer ridge and logistic probes (class token and mean of spatial tokens) and per-token
    probes on the final layer. Probes are fitted on the even-indexed examples of the evaluation
    split and tested on the odd-indexed ones."""

    capture = ("layers",)

    def __init__(self, subjects, **kw):
        super().__init__(subjects, **kw)
        self.feats = {s.label: {} for s in subjects}
        self.tokens = {s.label: [] for s in subjects}
        self.labels: list[np.ndarray] = []

    def update(self, inters, labels):
        self.labels.append(np.asarray(labels))
        for inter, s in zip(inters, self.subjects):
            pools = ("cls", "mean") if s.family == "vit" and s.prefix else ("mean",)
            for p in pools:
                reps = jax.device_get(layer_representations(inter, p, s.family, s.prefix))
                self.feats[s.label].setdefault(p, []).append(reps)
            self.tokens[s.label].append(np.asarray(_final_tokens(inter, s)))

    def finish(self):
        y = np.concatenate(self.labels)
        tr, te = slice(0, None, 2), slice(1, None, 2)
        nums, figs = {}, {}
        for s in self.subjects:
            curves = {}
            for p, batches in self.feats[s.label].items():
                layers = [np.concatenate([b[i] for b in batches]) for i in range(len(batches[0]))]
                for kind in ("ridge", "logistic"):
                    curves[f"{kind}/{p}"] = layer_probes(
                        [f[tr] for f in layers],
                        y[tr],
                        [f[te] for f in layers],
                        y[te],
                        num_classes=self.num_classes,
                        kind=kind,
                    )
            tokens = np.concatenate(self.tokens[s.label])
            acc = np.asarray(
                token_probe(
                    jnp.asarray(tokens[tr]),
                    jnp.asarray(y[tr]),
                    jnp.asarray(tokens[te]),
                    jnp.asarray(y[te]),
                    num_classes=self.num_classes,
                )
            )
            nums[s.label] = {
                "layers": {k: v.tolist() for k, v in curves.items()},
                "per_token": acc.tolist(),
                "per_token_mean": float(acc.mean()),
            }
            figs[f"probes_{s.label}"] = viz.plot_probe_accuracy(curves, title=f"{s.label}: linear probes")
            side = int(round(np.sqrt(acc.size)))
            if side * side == acc.size:
                figs[f"token_probe_{s.label}"] = viz.plot_token_probe(
                    acc, (side, side), title=f"{s.label}: per-token probe"
                )
        return {"fit": "even-indexed eval examples", "test": "odd-indexed", "accuracy": nums}, figs


@register_analysis("localization")
class LocalizationAnalysis(Analysis):
    """CKA between each final-layer token and the input patch tokens at every position (ViT/DeiT)."""

    capture = ("layers", "residuals")

    def __init__(self, subjects, **kw):
        super().__init__(subjects, **kw)
        self.accs = {s.label: LocalizationCKA(s.model.config.grid, s.prefix) for s in subjects if s.family == "vit"}
        if not self.accs:
            raise UserError("localization needs a ViT/DeiT (a single patch grid), not NesT or a ResNet")

    def update(self, inters, labels):
        if len(labels) < 4:
            return
        for inter, s in zip(inters, self.subjects):
            if s.label in self.accs:
                self.accs[s.label].update(inter)

    def finish(self):
        nums, figs = {}, {}
        for label, acc in self.accs.items():
            m = acc.result()
            nums[label] = {"maps": m.tolist(), "own_patch_is_most_similar": localization_score(m)}
            figs[f"localization_{label}"] = viz.plot_position_maps(m, title=f"{label}: CKA(final token, input patches)")
        return nums, figs


@register_analysis("pos_embed")
class PosEmbedAnalysis(Analysis):
    """Cosine similarity of position embeddings (ViT; NesT per level). Needs no data."""

    needs_data = False

    def __init__(self, subjects, **kw):
        super().__init__(subjects, **kw)
        if all(s.family == "resnet" for s in subjects):
            raise UserError("pos_embed needs a model with position embeddings (ViT/DeiT/NesT)")

    def finish(self):
        nums, figs = {}, {}
        for s in self.subjects:
            if s.family == "resnet":
                continue
            sims = pos_embed_similarity(s.model)
            nums[s.label] = [m.tolist() for m in sims]
            for lvl, m in enumerate(sims):
                suffix = f"_level{lvl}" if len(sims) > 1 else ""
                figs[f"pos_embed_{s.label}{suffix}"] = viz.plot_position_maps(
                    m, title=f"{s.label}{suffix}: position-embedding cosine similarity", vmin=-1, vmax=1
                )
        return nums, figs


def to_json(x):
    """Numbers of `finish` -> plain JSON types (arrays to nested lists; inf/NaN to strings)."""
    x = _tolist(x)

    def fix(v):
        if isinstance(v, float) and not np.isfinite(v):
            return str(v)
        if isinstance(v, dict):
            return {k: fix(u) for k, u in v.items()}
        if isinstance(v, list):
            return [fix(u) for u in v]
        return v

    return fix(x)
