"""Rematerialization of transformer layers (`config.model.remat`): activations recomputed in backprop.

The models have no remat option, so the trainer swaps each `TransformerLayer` instance's class for
a subclass whose `__call__` runs the layer under `jax.checkpoint` (split/merge at the boundary, as
`nnx.remat` does). Parameters, paths and results are unchanged; only memory and compute trade.
Intermediates capture (`rec`) runs the plain layer: recorded values must not be rematerialized.
"""
from __future__ import annotations

import jax
from flax import nnx

from nest_jax.models.layers import TransformerLayer


class RematTransformerLayer(TransformerLayer):
    def __call__(self, x, *, train: bool = False, rec=None):
        if rec is not None:
            return super().__call__(x, train=train, rec=rec)
        graphdef, state = nnx.split(self)

        @jax.checkpoint
        def run(state, x):
            layer = nnx.merge(graphdef, state)
            layer.__class__ = TransformerLayer
            y = TransformerLayer.__call__(layer, x, train=train)
            return y, nnx.state(layer)  # RNG counters advance inside

        y, new_state = run(state, x)
        nnx.update(self, new_state)
        return y


def remat_layers(model: nnx.Module) -> int:
    """Turns every TransformerLayer of `model` into a rematerialized one, in place; returns the count."""
    n = 0
    for _, module in nnx.iter_graph(model):
        if type(module) is TransformerLayer:
            module.__class__ = RematTransformerLayer
            n += 1
    return n
