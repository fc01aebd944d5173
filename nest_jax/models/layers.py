"""Shared transformer layers: patch embedding, attention, MLP, drop path, LayerNorm, encoder layer.

Parameters carry logical partition names (`embed`, `heads`, `kv`, `mlp`, `classes`, `conv_in`, …)
as NNX sharding metadata; `nest_jax.train.sharding` maps them to mesh axes with config rules.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Container, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from nest_jax.models.intermediates import Recorder

Array = jax.Array
Dtype = Any
Init = Callable[..., Array]

LN_EPS = 1e-6
trunc_normal_02 = nnx.initializers.truncated_normal(stddev=0.02)
zeros = nnx.initializers.zeros
log = logging.getLogger(__name__)

ATTN_IMPLS = ("auto", "cudnn", "xla", "explicit")
# Sequence padding of each fused implementation: cuDNN's flash attention failed on 197 tokens
# (ViT-B/16 at 224 px with a class token) and ran on 198 and 256, so sequences are padded to an
# even length there; XLA's fused path takes any length. Tests raise "xla" to exercise the padding.
SEQ_MULTIPLE = {"cudnn": 2, "xla": 1}
CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)


def fused_attention(q: Array, k: Array, v: Array, *, implementation: str, seq_multiple: int = 1) -> Array:
    """`jax.nn.dot_product_attention` with the sequence padded to a multiple of `seq_multiple`.

    q: (B, N, h, d), k, v: (B, N, g, d) with h a multiple of g -> (B, N, h, d). Padded keys are
    excluded through `query_seq_lengths` / `key_value_seq_lengths` (no mask tensor: cuDNN takes
    lengths natively); padded query rows are sliced off.
    """
    n = q.shape[1]
    pad = (-n) % seq_multiple
    if not pad:
        return jax.nn.dot_product_attention(q, k, v, implementation=implementation)
    widths = ((0, 0), (0, pad), (0, 0), (0, 0))
    q, k, v = (jnp.pad(t, widths) for t in (q, k, v))
    lengths = jnp.full((q.shape[0],), n, jnp.int32)
    out = jax.nn.dot_product_attention(
        q, k, v, query_seq_lengths=lengths, key_value_seq_lengths=lengths, implementation=implementation
    )
    return out[:, :n]


def attention_path(impl: str, *, dtype: Any, head_dim: int, backend: str | None = None) -> str:
    """The path an `impl` setting takes: "explicit", "xla" or "cudnn" (see `Attention`)."""
    if impl not in ATTN_IMPLS:
        raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {impl!r}")
    backend = backend or jax.default_backend()
    cudnn_ok = (
        backend == "gpu"
        and jnp.dtype(dtype) in [jnp.dtype(t) for t in CUDNN_DTYPES]
        and head_dim % 8 == 0
        and head_dim <= 128
    )
    if impl == "explicit" or (impl == "auto" and backend == "cpu"):
        return "explicit"
    if impl == "xla":
        return "xla"
    if impl == "cudnn" and not cudnn_ok:
        _log_once(
            f"attn_impl='cudnn' cannot run here (backend {backend}, dtype {jnp.dtype(dtype).name}, "
            f"head dim {head_dim}): using XLA's fused attention"
        )
    return "cudnn" if cudnn_ok else "xla"


@functools.cache
def _log_once(message: str) -> None:
    log.info(message)


def to_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    """An image or grid size as (height, width)."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def axes(init: Init, *names: str | None) -> Init:
    """Attaches logical partition names to an initializer (no eager sharding: shapes decide later)."""
    return nnx.with_partitioning(init, tuple(names), eager_sharding=False)


def param(rngs: nnx.Rngs, init: Init, shape: tuple[int, ...], dtype: Dtype, *names: str | None) -> nnx.Param:
    """A parameter of `shape` drawn from `init` with the next `params` key, axes named `names`."""
    return nnx.Param(axes(init, *names)(rngs.params(), shape, dtype))


def gelu(kind: str = "exact") -> Callable[[Array], Array]:
    """GELU: `exact` (erf, PyTorch/timm/DeiT) or `tanh` (approximation; official ViT/NesT JAX code)."""
    if kind not in ("exact", "tanh"):
        raise ValueError(f"gelu must be 'exact' or 'tanh', got {kind!r}")
    return functools.partial(jax.nn.gelu, approximate=(kind == "tanh"))


def layer_norm(
    dim: int, *, rngs: nnx.Rngs, dtype: Dtype = None, param_dtype: Dtype = jnp.float32, eps: float = LN_EPS
) -> nnx.LayerNorm:
    """LayerNorm over the last axis, eps 1e-6 as in every reference system."""
    return nnx.LayerNorm(
        dim,
        epsilon=eps,
        dtype=dtype,
        param_dtype=param_dtype,
        scale_init=axes(nnx.initializers.ones, "embed"),
        bias_init=axes(nnx.initializers.zeros, "embed"),
        rngs=rngs,
    )


def dense(din: int, dout: int, names: tuple, *, kernel_init: Init = trunc_normal_02, bias_init: Init = zeros, **kw):
    """`nnx.Linear` whose kernel carries the logical axis names `names` and whose bias the second."""
    return nnx.Linear(din, dout, kernel_init=axes(kernel_init, *names), bias_init=axes(bias_init, names[1]), **kw)


def classifier(width: int, num_classes: int, kernel_init: Init, **kw) -> nnx.Linear | None:
    """The classification head (zero bias), or None for a feature extractor (`num_classes=0`)."""
    return dense(width, num_classes, ("embed", "classes"), kernel_init=kernel_init, **kw) if num_classes > 0 else None


def conv(din: int, dout: int, kernel: int, *, out_name="embed", kernel_init: Init = trunc_normal_02, up=False, **kw):
    """Square `nnx.Conv` (`ConvTranspose` when `up`), kernel axes (·, ·, conv_in, `out_name`), zero bias."""
    init = axes(kernel_init, None, None, "conv_in", out_name)
    layer = nnx.ConvTranspose if up else nnx.Conv
    return layer(din, dout, (kernel, kernel), kernel_init=init, bias_init=axes(zeros, out_name), **kw)


class PatchEmbed(nnx.Module):
    """Non-overlapping P×P patches by a conv with kernel = stride = P.

    x: (B, H, W, C_in) -> (B, H/P, W/P, D)
    """

    def __init__(self, in_chans: int, dim: int, patch_size: int, *, kernel_init=nnx.initializers.lecun_normal(), **kw):
        """kw: `rngs`, `dtype`, `param_dtype` of the conv."""
        self.patch_size = patch_size
        self.proj = conv(in_chans, dim, patch_size, strides=patch_size, padding="VALID", kernel_init=kernel_init, **kw)

    def __call__(self, x: Array) -> Array:
        return self.proj(x)


class Attention(nnx.Module):
    """Multi-head (or multi-query / grouped) self-attention on the last two axes.

    `impl` picks the kernel (the models' `attn_impl` field): "explicit" — softmax(q·kᵀ/√d)·v
    written out in heads-major layout (B, h, N, d); "xla" — `jax.nn.dot_product_attention(
    implementation="xla")` in (B, N, h, d); "cudnn" — cuDNN flash attention, the sequence padded to
    an even length and the padding excluded by sequence lengths (falls back to "xla" where cuDNN
    cannot run: not a GPU, float32, head dim not a multiple of 8 or above 128); "auto" (default) —
    explicit on CPU, cuDNN on a GPU when it can run, else XLA's fused path. Whatever `impl` says,
    the explicit path runs when the weights are requested or attention dropout is active. On CPU
    the explicit layout is the fast one: XLA:CPU runs its batched dots without the layout copies
    of (B, N, h, d) (≈15% faster ViT-S forward).

    Parameters (the layout of the official JAX code, heads as their own axis):
      multi-head (`num_kv_heads == num_heads`): `qkv` (D, 3, h, d), `qkv_bias` (3, h, d)
      otherwise: `q` (D, h, d), `q_bias` (h, d), `kv` (D, 2, g, d), `kv_bias` (2, g, d)
      `proj` (h, d, D), `proj_bias` (D,)

    x: (..., N, D) -> (..., N, D); leading axes (batch, blocks, …) are a batch.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        rngs: nnx.Rngs,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        kernel_init: Init = trunc_normal_02,
        proj_init: Init | None = None,
        dtype: Dtype = None,
        param_dtype: Dtype = jnp.float32,
        impl: str = "auto",
    ):
        if impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {impl!r}")
        self.impl = impl
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads or num_heads
        if num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")
        self.head_dim = head_dim or dim // num_heads
        self.dtype = dtype
        h, g, d = num_heads, self.num_kv_heads, self.head_dim
        new = functools.partial(param, rngs)
        if g == h:
            self.qkv = new(kernel_init, (dim, 3, h, d), param_dtype, "embed", None, "heads", "kv")
            self.qkv_bias = new(zeros, (3, h, d), param_dtype, None, "heads", "kv") if qkv_bias else None
        else:
            self.q = new(kernel_init, (dim, h, d), param_dtype, "embed", "heads", "kv")
            self.kv = new(kernel_init, (dim, 2, g, d), param_dtype, "embed", None, None, "kv")
            self.q_bias = new(zeros, (h, d), param_dtype, "heads", "kv") if qkv_bias else None
            self.kv_bias = new(zeros, (2, g, d), param_dtype, None, None, "kv") if qkv_bias else None
        self.proj = new(proj_init or kernel_init, (h, d, dim), param_dtype, "heads", "kv", "embed")
        self.proj_bias = new(zeros, (dim,), param_dtype, "embed")
        self.attn_drop = nnx.Dropout(attn_drop, rngs=rngs)
        self.proj_drop = nnx.Dropout(proj_drop, rngs=rngs)
        self.attn_drop_rate = attn_drop

    def _project(self, x: Array, *, heads_major: bool) -> tuple[Array, Array, Array]:
        """x: (B, N, D) -> q (B, h, N, d), k, v (B, g, N, d) heads-major (the explicit path), else
        q (B, N, h, d), k, v (B, N, g, d) (the fused kernels' layout)."""
        dt = self.dtype or x.dtype
        x = x.astype(dt)
        out = "hnd" if heads_major else "nhd"

        def bias(b: Array) -> Array:  # (t, heads, d) -> broadcast against (t, B, *out)
            return b.astype(dt)[:, None, :, None, :] if heads_major else b.astype(dt)[:, None, None]

        if self.num_kv_heads == self.num_heads:
            qkv = jnp.einsum(f"bnc,cthd->tb{out}", x, self.qkv[...].astype(dt))
            if self.qkv_bias is not None:
                qkv = qkv + bias(self.qkv_bias[...])
            return qkv[0], qkv[1], qkv[2]
        q = jnp.einsum(f"bnc,chd->b{out}", x, self.q[...].astype(dt))
        kv = jnp.einsum(f"bnc,ctgd->tb{out.replace('h', 'g')}", x, self.kv[...].astype(dt))
        if self.q_bias is not None:
            q = q + bias(self.q_bias[...][None])[0]
            kv = kv + bias(self.kv_bias[...])
        return q, kv[0], kv[1]

    def _attend_explicit(self, x: Array, *, train: bool) -> tuple[Array, Array]:
        """Softmax attention, heads-major. x: (B, N, D) -> out (B, h, N, d), weights (B, h, N, N).

        Grouped / multi-query heads are a (g, r) split of the h query heads (r = h / g per K/V
        head), so K and V are never repeated.
        """
        b, n, _ = x.shape
        h, g, d = self.num_heads, self.num_kv_heads, self.head_dim
        q, k, v = self._project(x, heads_major=True)
        q = q.reshape(b, g, h // g, n, d)
        logits = jnp.einsum("bgrqd,bgkd->bgrqk", q, k) * (d**-0.5)
        weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(q.dtype)
        out = jnp.einsum("bgrqk,bgkd->bgrqd", self.attn_drop(weights, deterministic=not train), v)
        return out.reshape(b, h, n, d), weights.reshape(b, h, n, n)

    def __call__(self, x: Array, *, train: bool = False, return_weights: bool = False) -> tuple[Array, Array | None]:
        """Returns (output (..., N, D), weights (..., h, N, N) or None)."""
        lead, (n, dim) = x.shape[:-2], x.shape[-2:]
        x = x.reshape(-1, n, dim)
        weights = None
        path = attention_path(self.impl, dtype=self.dtype or x.dtype, head_dim=self.head_dim)
        if return_weights or (train and self.attn_drop_rate > 0) or path == "explicit":
            out, weights = self._attend_explicit(x, train=train)
            proj = "bhnd,hdc->bnc"
            weights = weights.reshape(*lead, self.num_heads, n, n) if return_weights else None
        else:
            qkv = self._project(x, heads_major=False)
            out = fused_attention(*qkv, implementation=path, seq_multiple=SEQ_MULTIPLE[path])
            proj = "bnhd,hdc->bnc"
        y = jnp.einsum(proj, out, self.proj[...].astype(out.dtype)) + self.proj_bias[...].astype(out.dtype)
        y = self.proj_drop(y, deterministic=not train)
        return y.reshape(*lead, n, dim), weights


class Mlp(nnx.Module):
    """Dense(hidden) -> GELU -> dropout -> Dense(out) -> dropout.  x: (..., D) -> (..., D_out)."""

    def __init__(self, dim: int, hidden: int, *, out_dim: int | None = None, act=gelu("exact"), drop=0.0, **kw):
        """kw: `rngs`, `kernel_init`, `bias_init`, `dtype`, `param_dtype` of both Dense layers."""
        self.fc1 = dense(dim, hidden, ("embed", "mlp"), **kw)
        self.fc2 = dense(hidden, out_dim or dim, ("mlp", "embed"), **kw)
        self.act = act
        self.drop = nnx.Dropout(drop, rngs=kw["rngs"])

    def __call__(self, x: Array, *, train: bool = False) -> Array:
        x = self.drop(self.act(self.fc1(x)), deterministic=not train)
        return self.drop(self.fc2(x), deterministic=not train)


class DropPath(nnx.Module):
    """Stochastic depth: drops a sample's whole residual branch with probability `rate`.

    x: (B, ...) -> (B, ...), scaled by 1/(1-rate) when kept.
    """

    def __init__(self, rate: float, *, rngs: nnx.Rngs):
        self.rate = float(rate)
        self.rngs = rngs.dropout.fork() if rate > 0 else None

    def __call__(self, x: Array, *, train: bool = False) -> Array:
        if not train or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(self.rngs(), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Stochastic depth rate increasing linearly from 0 to `rate` over `depth` layers."""
    if depth == 1:
        return [0.0]
    return [rate * i / (depth - 1) for i in range(depth)]


class TransformerLayer(nnx.Module):
    """Pre-norm encoder layer: z = z + DropPath(MHSA(LN(z))); z = z + DropPath(MLP(LN(z))).

    x: (..., N, D) -> (..., N, D). Attention is over the N axis only (NesT: within each block).
    `skip=False` removes both residual connections (z = MHSA(LN(z)); z = MLP(LN(z))): the
    skip-removal ablation of Raghu et al. 2021, §5.
    """

    REC_KEYS = ("attn_in", "attn_branch", "attention", "mlp_in", "mlp_branch", "layers")

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        *,
        num_kv_heads: int | None = None,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act: str = "exact",
        kernel_init: Init = trunc_normal_02,
        mlp_bias_init: Init = nnx.initializers.zeros,
        qkv_init: Init | None = None,
        attn_impl: str = "auto",
        skip: bool = True,
        **kw,
    ):
        """kw: `rngs`, `dtype`, `param_dtype` of every sublayer."""
        self.skip = skip
        self.norm1 = layer_norm(dim, **kw)
        self.attn = Attention(
            dim,
            num_heads,
            num_kv_heads=num_kv_heads,
            qkv_bias=qkv_bias,
            attn_drop=attn_drop,
            proj_drop=drop,
            kernel_init=qkv_init or kernel_init,
            proj_init=kernel_init,
            impl=attn_impl,
            **kw,
        )
        self.norm2 = layer_norm(dim, **kw)
        self.mlp = Mlp(dim, mlp_dim, act=gelu(act), drop=drop, kernel_init=kernel_init, bias_init=mlp_bias_init, **kw)
        self.drop_path = DropPath(drop_path, rngs=kw["rngs"])

    def __call__(self, x: Array, *, train: bool = False, rec: Recorder | None = None) -> Array:
        want_w = rec is not None and rec.wants("attention")
        attn, weights = self.attn(self.norm1(x), train=train, return_weights=want_w)
        attn = self.drop_path(attn, train=train)
        z = x + attn if self.skip else attn
        mlp = self.drop_path(self.mlp(self.norm2(z), train=train), train=train)
        out = z + mlp if self.skip else mlp
        if rec is not None:
            for key, value in zip(self.REC_KEYS, (x, attn, weights, z, mlp, out)):
                rec.append(key, value)
        return out


def transformer_stack(
    rates: Sequence[float], *args, skip_removed: Container[int] = (), first: int = 0, **kw
) -> nnx.List:
    """`TransformerLayer(*args, **kw)`s, layer j with stochastic depth `rates[j]` and without residuals
    when its global index `first + j` is in `skip_removed` (the ablation)."""
    return nnx.List(
        [TransformerLayer(*args, drop_path=r, skip=first + j not in skip_removed, **kw) for j, r in enumerate(rates)]
    )


def sincos_2d(grid_h: int, grid_w: int, dim: int, temperature: float = 10_000.0) -> Array:
    """Fixed 2-D sin-cos position embedding (big_vision's `posemb_sincos_2d`): (1, h*w, dim)."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos position embedding needs dim divisible by 4, got {dim}")
    y, x = jnp.mgrid[:grid_h, :grid_w]
    omega = 1.0 / temperature ** (jnp.arange(dim // 4) / (dim // 4 - 1))
    y = y.reshape(-1)[:, None] * omega[None]
    x = x.reshape(-1)[:, None] * omega[None]
    return jnp.concatenate([jnp.sin(x), jnp.cos(x), jnp.sin(y), jnp.cos(y)], axis=1)[None].astype(jnp.float32)
