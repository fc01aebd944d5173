"""The one call contract of every model (`Model`) and its intermediates (`Recorder`).

Every model's `__call__(x, *, train=None, capture=None)` returns one array: the logits (B, K) of a
classifier (the mean of the heads' raw logits for a DeiT with several prefix tokens, train or
eval), the pooled features (B, D) when built with `num_classes=0`, the image of a generator, the
real/fake logits of a discriminator. With `capture` naming what to keep it returns
`(output, intermediates)`; with `capture=None` nothing is recorded and nothing is computed for it
(zero cost). `intermediates` is a plain dict (a pytree, so it passes through `jax.jit`,
`jax.vmap` and sharding unchanged):

| key            | what                                                     | ViT/DeiT shape        | NesT shape              |
|----------------|----------------------------------------------------------|-----------------------|-------------------------|
| `layers`       | list, output of every transformer layer (all tokens)     | (B, P+N, D)           | (B, T, N, C)            |
| `attention`    | list, attention weights of every layer (softmax rows)    | (B, h, P+N, P+N)      | (B, T, h, N, N)         |
| `attn_in`      | list, residual stream z entering each attention branch   | (B, P+N, D)           | (B, T, N, C)            |
| `attn_branch`  | list, the branch output f(z) that is added to z          | (B, P+N, D)           | (B, T, N, C)            |
| `mlp_in`       | list, residual stream entering each MLP branch           | as `attn_in`          | as `attn_in`            |
| `mlp_branch`   | list, MLP branch output                                  | as `attn_in`          | as `attn_in`            |
| `tokens`       | dict name -> prefix token after the final norm           | (B, D) per token      | —                       |
| `features`     | list, spatial feature maps (ResNet stages, NesT levels,  | (B, h, w, D)          | (B, H, W, C) per level  |
|                | the ViT patch grid after the final norm)                 |                       |                         |
| `pre_logits`   | the vector the head reads                                | (B, D)                | (B, C)                  |
| `heads`        | dict prefix token -> that token's head logits            | (B, K) per token      | —                       |

ResNets record `layers` (each residual block's output, (B, h, w, C)) and, for `residuals`, the
keys `block_in` (the shortcut added) and `block_branch` (the residual branch) instead of the four
transformer keys.

`heads` is how a multi-head DeiT is trained (each head its own loss, `train/losses.py`). The GAN
generators record `features` (each level's / block's map, coarsest first) and, for the
transformer ones, the per-layer kinds.

`capture` is an iterable of the kinds `layers`, `attention`, `residuals` (all four residual
keys), `tokens`, `features`, `pre_logits`, `heads`; or `True` / `"all"` for everything. Layers are
numbered globally (NesT counts across levels). A "layer" is what the ViT papers call a
transformer block; nest_jax keeps "block" for NesT's spatial blocks. P is the number of prefix tokens; the model's
`config.prefix_tokens` names them in order, so `layers[i][:, config.token_index("dist")]` is the
distillation token after layer i.

Mode (`Model`): a model is built in eval mode: no dropout, no stochastic depth, BatchNorm running
statistics, spectral-norm vectors frozen; `model(x)` is inference, as it is in timm's `.eval()`
and in every analysis. nnx's `model.train()` / `model.eval()` switch the mode (they set the
`deterministic` attribute `Model` carries); `train=True` / `train=False` overrides it for one call.
This differs from a bare `nnx.Dropout`, which starts in training mode: here the training loop is the
one place that trains, and it says so (`train=True`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flax import nnx

KINDS = ("layers", "attention", "residuals", "tokens", "features", "pre_logits", "heads")
LAYER_KINDS = frozenset({"layers", "attention", "residuals"})
_KEYS = {kind: (kind,) for kind in KINDS} | {"residuals": ("attn_in", "attn_branch", "mlp_in", "mlp_branch")}
# Keys created on first use only (so the transformer models' dicts are unchanged): ResNet blocks.
_LAZY_KEYS = {"block_in": "residuals", "block_branch": "residuals"}

Capture = Iterable[str] | bool | str | None


def normalize_capture(capture: Capture) -> frozenset[str]:
    """Turns the user's `capture` argument into a set of kinds, rejecting unknown names."""
    if capture is None or capture is False:
        return frozenset()
    if capture is True or capture == "all":
        return frozenset(KINDS)
    if isinstance(capture, str):
        capture = (capture,)
    kinds = frozenset(capture)
    unknown = kinds - set(KINDS)
    if unknown:
        raise ValueError(f"Unknown capture kind(s) {sorted(unknown)}; choose from {list(KINDS)} or 'all'.")
    return kinds


class Recorder:
    """Collects intermediates during one forward pass (a Python object living at trace time)."""

    def __init__(self, capture: Capture):
        self.kinds = normalize_capture(capture)
        self.values: dict[str, Any] = {}
        for kind in self.kinds:
            for key in _KEYS[kind]:
                self.values[key] = {} if key in ("tokens", "heads") else ([] if key != "pre_logits" else None)

    def wants(self, kind: str) -> bool:
        return kind in self.kinds

    def append(self, key: str, value) -> None:
        """Appends to a per-layer list (`layers`, `attention`, `attn_in`, …, `features`)."""
        if key not in self.values and self.wants(_LAZY_KEYS.get(key, "")):
            self.values[key] = []
        if key in self.values:
            self.values[key].append(value)

    def set(self, key: str, value, name: str | None = None) -> None:
        """Sets `pre_logits`, or `tokens[name]` / `heads[name]`."""
        if key not in self.values:
            return
        if name is None:
            self.values[key] = value
        else:
            self.values[key][name] = value


def maybe_recorder(capture: Capture) -> Recorder | None:
    kinds = normalize_capture(capture)
    return Recorder(kinds) if kinds else None


def finish(output, recorder: Recorder | None):
    """What a model's `__call__` returns: the output array, or (output, intermediates)."""
    return output if recorder is None else (output, recorder.values)


class Model(nnx.Module):
    """Base of every registered model: the train/eval mode that nnx's `train()` / `eval()` set."""

    deterministic: bool = True  # built in eval mode; `model.train()` sets False on every module

    def training(self, train: bool | None) -> bool:
        """A call's mode: an explicit `train=` wins, None follows `model.train()` / `model.eval()`."""
        return not self.deterministic if train is None else bool(train)
