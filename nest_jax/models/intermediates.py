"""One mechanism for intermediates: every model records into a `Recorder` when asked.

Every model's `__call__(x, *, train=False, capture=None)` returns the logits alone when
`capture` is None (nothing is recorded, nothing is computed for it: zero cost), and
`(logits, intermediates)` when `capture` names what to keep. `intermediates` is a plain dict
(a pytree, so it passes through `jax.jit`, `jax.vmap` and sharding unchanged):

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

ResNets record `layers` (each residual block's output, (B, h, w, C)) and, for `residuals`, the
keys `block_in` (the shortcut added) and `block_branch` (the residual branch) instead of the four
transformer keys.

`capture` is an iterable of the kinds `layers`, `attention`, `residuals` (all four residual
keys), `tokens`, `features`, `pre_logits`; or `True` / `"all"` for everything. Layers are
numbered globally (NesT counts across levels). A "layer" is what the ViT papers call a
transformer block; nest_jax keeps "block" for NesT's spatial blocks. P is the number of prefix tokens; the model's
`config.prefix_tokens` names them in order, so `layers[i][:, config.token_index("dist")]` is the
distillation token after layer i.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

KINDS = ("layers", "attention", "residuals", "tokens", "features", "pre_logits")
_KEYS = {
    "layers": ("layers",),
    "attention": ("attention",),
    "residuals": ("attn_in", "attn_branch", "mlp_in", "mlp_branch"),
    "tokens": ("tokens",),
    "features": ("features",),
    "pre_logits": ("pre_logits",),
}
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
                self.values[key] = {} if key == "tokens" else ([] if key != "pre_logits" else None)

    def wants(self, kind: str) -> bool:
        return kind in self.kinds

    def append(self, key: str, value) -> None:
        """Appends to a per-layer list (`layers`, `attention`, `attn_in`, …, `features`)."""
        if key not in self.values and self.wants(_LAZY_KEYS.get(key, "")):
            self.values[key] = []
        if key in self.values:
            self.values[key].append(value)

    def set(self, key: str, value, name: str | None = None) -> None:
        """Sets `pre_logits`, or `tokens[name]`."""
        if key not in self.values:
            return
        if name is None:
            self.values[key] = value
        else:
            self.values[key][name] = value


def maybe_recorder(capture: Capture) -> Recorder | None:
    kinds = normalize_capture(capture)
    return Recorder(kinds) if kinds else None


def finish(logits, recorder: Recorder | None):
    """What a model's `__call__` returns: logits, or (logits, intermediates)."""
    return logits if recorder is None else (logits, recorder.values)
