"""Any nest_jax model as a pure function (for `jax.jit`/`grad`/`vmap`) or as a Flax Linen module.

Pure function (NNX split/merge at the function boundary)::

    model = create_model("vit_small_patch16_224")
    apply, params, state = pure(model)
    logits = jax.jit(apply)(params, x)                          # eval: state is not needed
    grads = jax.grad(lambda p: loss(apply(p, x, state=state)))(params)
    logits, state = apply(params, x, state=state, train=True)   # train: returns the new state

`params` is the `nnx.Param` state (an `nnx.State` pytree, leaves are arrays); `state` is everything
else: BatchNorm running statistics (`nnx.BatchStat`, ResNet stems) and the dropout / stochastic-depth
RNG keys and counters (`nnx.RngState`). Training mode updates both, so `apply(..., train=True)`
returns `(outputs, new_state)` and the caller threads `new_state` into the next step, exactly like
Linen's `mutable=["batch_stats"]`.

Inside Linen (flax's NNX→Linen bridge)::

    class Classifier(nn.Module):
        @nn.compact
        def __call__(self, x):
            feats = as_linen("vit_tiny_patch16_224", num_classes=0, img_size=32)(x)
            return nn.Dense(10)(feats)

The wrapped model's parameters live in the Linen `params` collection under the NNX paths
(`params["ViT_0"]["layers"][0]["attn"]["qkv"]`), so `nnx.state(model, nnx.Param)` of a model with
the same variant is a drop-in for them (`linen_params_from_nnx`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import nnx
from flax.nnx import bridge

from nest_jax.models.registry import create_model

Array = jax.Array


def pure(model: nnx.Module) -> tuple[Callable[..., Any], nnx.State, nnx.State]:
    """Splits a model into `(apply, params, state)` with `apply` a pure function.

    `apply(params, x, *, state=None, train=False, **kwargs)`:
      params: the `nnx.Param` state (what `jax.grad` differentiates, what `jax.vmap` may batch over);
      x: model input, e.g. (B, H, W, C) images;
      state: the non-parameter state; None uses the state captured at `pure()` time (fine for eval;
        it becomes a compile-time constant under jit, so pass it explicitly when it changes);
      train: the model's training mode (dropout, stochastic depth, BatchNorm batch statistics);
      kwargs: forwarded to the model's `__call__` (e.g. `capture="attention"`).
    Returns the model's outputs when `train=False`; `(outputs, new_state)` when `train=True`.
    """
    graphdef, params, state0 = nnx.split(model, nnx.Param, ...)

    def apply(params: nnx.State, x: Array, *, state: nnx.State | None = None, train: bool = False, **kwargs: Any):
        module = nnx.merge(graphdef, params, state0 if state is None else state)
        out = module(x, train=train, **kwargs)
        if not train:
            return out
        # The merged module is a fresh copy: reading its state back is how updates escape.
        return out, nnx.state(module, nnx.Not(nnx.Param))

    return apply, params, state0


def as_linen(name: str, **create_kwargs: Any) -> bridge.ToLinen:
    """A registered model as a Linen module (unbound; give it a `name=` via `.clone` if needed).

    `create_kwargs` go to `create_model(name, **create_kwargs)` (num_classes, img_size, overrides).
    Call the result like the NNX model: `module(x, train=False)`. The Linen `params` collection
    holds the NNX parameters under their NNX paths; BatchNorm statistics go to `batch_stats`
    (declare it mutable when training). Dropout RNGs come from Linen's `rngs={"dropout": key}`.
    """
    # metadata_fn: plain arrays in the Linen tree (not `NNXMeta` boxes), so Linen params and
    # `nnx.state(model, nnx.Param)` have identical pytree leaves and can be exchanged.
    plain = nnx.Variable.get_value
    return bridge.ToLinen(_create_in_linen, args=(name,), kwargs=dict(create_kwargs), metadata_fn=plain)


def _create_in_linen(name: str, *, rngs: nnx.Rngs, **create_kwargs: Any) -> nnx.Module:
    # Linen's `init(key, x)` only provides a `params` stream, but the models build their dropout
    # layers from `rngs.dropout`; a fixed stream stands in until the caller passes a dropout key.
    if "dropout" not in rngs and "default" not in rngs:
        rngs = nnx.Rngs(params=rngs.params(), dropout=0)
    return create_model(name, rngs=rngs, **create_kwargs)


def linen_params_from_nnx(model: nnx.Module) -> dict[str, Any]:
    """The NNX model's parameters as a nested dict laid out like `as_linen(...)`'s `params`."""
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))
