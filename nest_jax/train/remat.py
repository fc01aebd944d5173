"""Rematerialization of transformer layers (`config.model.remat`): activations recomputed in backprop.

The models have no remat option, so the trainer swaps each `TransformerLayer` instance's class for
a subclass whose `__call__` runs the layer under `jax.checkpoint` (split/merge at the boundary, as
`nnx.remat` does). Parameters, paths and results are unchanged; only memory and compute trade.
A capture of per-layer values runs the plain layer: recorded values must not be rematerialized.

`config.model.remat_policy` names what the backward pass may keep instead of recomputing, one of
`jax.checkpoint_policies`: "nothing_saveable" (the default: only each layer's input survives the
forward pass), "dots_saveable" (matmul outputs kept: less recompute, more memory),
"dots_with_no_batch_dims_saveable" (the projections kept, the attention score matmuls recomputed).
"""

from __future__ import annotations

import jax
from flax import nnx

from nest_jax.models.intermediates import LAYER_KINDS
from nest_jax.models.layers import TransformerLayer

POLICIES = ("nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable", "everything_saveable")


class RematTransformerLayer(TransformerLayer):
    remat_policy: str = "nothing_saveable"

    def __call__(self, x, *, train: bool = False, rec=None):
        if rec is not None and rec.kinds & LAYER_KINDS:
            return super().__call__(x, train=train, rec=rec)
        graphdef, state = nnx.split(self)

        def run(state, x):
            layer = nnx.merge(graphdef, state)
            layer.__class__ = TransformerLayer
            y = TransformerLayer.__call__(layer, x, train=train)
            return y, nnx.state(layer)  # RNG counters advance inside

        run = jax.checkpoint(run, policy=getattr(jax.checkpoint_policies, self.remat_policy))
        y, new_state = run(state, x)
        nnx.update(self, new_state)
        return y


def remat_layers(model: nnx.Module, policy: str = "nothing_saveable") -> int:
    """Turns every TransformerLayer of `model` into a rematerialized one, in place; returns the count."""
    if policy not in POLICIES:
        raise ValueError(f"model.remat_policy must be one of {POLICIES}, got {policy!r}")
    n = 0
    for _, module in nnx.iter_graph(model):
        if type(module) is TransformerLayer:
            module.__class__ = RematTransformerLayer
            module.remat_policy = policy
            n += 1
    return n
