"""Spectral normalization (Miyato et al. 2018, ICLR, §2.1 and Algorithm 1) for conv and dense layers.

The kernel is divided by an estimate of its largest singular value σ(W), obtained by one step of
power iteration per training call on W reshaped to (fan_in, out). The left singular vector
estimate `u` is carried between steps as a non-parameter variable (`PowerIterate`, a subclass of
`nnx.BatchStat`, so the train state keeps it next to batch statistics and the optimizer never sees
it). In eval (`train=False`) the stored `u` is used without updating it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from nest_jax.models import layers as L

Array = jax.Array
XAVIER = nnx.initializers.xavier_uniform()


class PowerIterate(nnx.BatchStat):
    """The power-iteration vector u (out,) of a spectrally normalized kernel."""


def _l2_normalize(v: Array, eps: float = 1e-12) -> Array:
    return v / (jnp.linalg.norm(v) + eps)


def spectral_sigma(w: Array, u: Array, *, update: bool) -> tuple[Array, Array]:
    """σ(W) ≈ vᵀ W u after one power-iteration step. w: (fan_in, out), u: (out,) -> (σ, new u).

    u and v are constants for the gradient (Miyato et al. 2018, Algorithm 1).
    """
    v = _l2_normalize(w @ u)
    u_new = _l2_normalize(w.T @ v) if update else u
    u_new, v = jax.lax.stop_gradient(u_new), jax.lax.stop_gradient(v)
    return v @ (w @ u_new), u_new


def _power_iterate(out_dim: int, spectral: bool, rngs: nnx.Rngs) -> PowerIterate | None:
    return PowerIterate(_l2_normalize(jax.random.normal(rngs.params(), (out_dim,)))) if spectral else None


def _normalized(u: PowerIterate, w: Array, train: bool) -> Array:
    """The kernel w (..., out) divided by σ of its (fan_in, out) matrix; training also steps `u`."""
    sigma, u_new = spectral_sigma(w.reshape(-1, w.shape[-1]), u[...], update=train)
    if train:
        u[...] = u_new
    return w / sigma


class SNConv(nnx.Module):
    """Conv with an optionally spectrally normalized kernel. x: (B, H, W, C_in) -> (B, H', W', C_out)."""

    def __init__(self, in_dim: int, out_dim: int, kernel: int = 3, *, stride=1, padding="SAME", spectral=True, **kw):
        """kw: `rngs`, `dtype`, `param_dtype`, `kernel_init` (default xavier uniform)."""
        kw.setdefault("kernel_init", XAVIER)
        self.conv = L.conv(in_dim, out_dim, kernel, out_name="conv_out", strides=stride, padding=padding, **kw)
        self.stride, self.padding = (stride, stride), padding
        self.u = _power_iterate(out_dim, spectral, kw["rngs"])

    def __call__(self, x: Array, *, train: bool = False) -> Array:
        if self.u is None:
            return self.conv(x)
        w = _normalized(self.u, self.conv.kernel[...], train)
        y = jax.lax.conv_general_dilated(
            x, w.astype(x.dtype), self.stride, self.padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return y + self.conv.bias[...].astype(y.dtype)


class SNLinear(nnx.Module):
    """Dense with an optionally spectrally normalized kernel. x: (..., C_in) -> (..., C_out)."""

    def __init__(self, in_dim: int, out_dim: int, *, spectral: bool = True, **kw):
        """kw: `rngs`, `dtype`, `param_dtype`, `kernel_init` (default xavier uniform)."""
        kw.setdefault("kernel_init", XAVIER)
        self.linear = L.dense(in_dim, out_dim, ("embed", None), **kw)
        self.u = _power_iterate(out_dim, spectral, kw["rngs"])

    def __call__(self, x: Array, *, train: bool = False) -> Array:
        if self.u is None:
            return self.linear(x)
        w = _normalized(self.u, self.linear.kernel[...], train)
        return x @ w.astype(x.dtype) + self.linear.bias[...].astype(x.dtype)
