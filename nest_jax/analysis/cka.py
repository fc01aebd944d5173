"""Centered kernel alignment (CKA): one-shot, and the minibatch estimator over a data set.

CKA (Kornblith et al. 2019, eq. 1–4) compares two representations of the same n examples,
x: (n, p1), y: (n, p2), through their Gram matrices K = k(x, x), L = k(y, y):

    CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) · HSIC(L, L)).

HSIC estimators:
  biased (Gretton et al. 2005)   HSIC₀ = tr(K H L H) / (n − 1)²,  H = I − 11ᵀ/n;
  unbiased (Song et al. 2012, eq. 5), with K̃, L̃ = K, L with zeroed diagonals, n ≥ 4:
    HSIC₁ = [tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((n−1)(n−2)) − 2/(n−2) · 1ᵀK̃L̃1] / (n(n−3)).

For the linear kernel K = xxᵀ both are computed in feature space when n > p (O(n·p1·p2) instead
of O(n²·p)): tr(KHLH) = ‖x̄ᵀȳ‖²_F with column-centred x̄, ȳ; and for HSIC₁, tr(K̃L̃) = ‖xᵀy‖²_F −
Σᵢ‖xᵢ‖²‖yᵢ‖², 1ᵀK̃1 = ‖Σᵢxᵢ‖² − Σᵢ‖xᵢ‖², K̃1 = x(xᵀ1) − (‖xᵢ‖²)ᵢ. HSIC₁ is exactly invariant to
translating the features (every term of the U-statistic pairs distinct indices), so features are
centred first in every path: it only removes cancellation error.

RBF kernel: K_ij = exp(−d²_ij / (2 θ² · median(d²))) with θ = `rbf_threshold`, the bandwidth as a
fraction of the median distance; the median is taken over the whole n×n matrix of squared
distances, zero diagonal included (the convention of Kornblith et al.'s reference demo).

Minibatch CKA (Nguyen, Raghu & Kornblith 2021, eq. 3; the estimator of Raghu et al. 2021): over
batches i = 1..k, CKA = Σᵢ HSIC₁(Kᵢ, Lᵢ) / sqrt(Σᵢ HSIC₁(Kᵢ, Kᵢ) · Σᵢ HSIC₁(Lᵢ, Lᵢ)) — the HSIC terms
are summed first; per-batch CKA values are never averaged. `MinibatchCKA` computes every layer
pair's per-batch HSIC₁ on device in one jitted call per batch (one Gram matrix per layer, then all
pairs by contraction) and sums them on the host in float64.

Negative HSIC: HSIC₁ is unbiased, so on nearly independent representations HSIC₁(K, L) is slightly
negative and CKA is returned as that small negative number (not clipped). A self-term
HSIC₁(K, K) ≤ 0 means the representation shows no measurable variation over the data (e.g.
constant features): the CKA of any pair involving it is returned as 0.0, never NaN.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
KERNELS = ("linear", "rbf")
_HI = jax.lax.Precision.HIGHEST


def _check(kernel: str, n: int, unbiased: bool) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if unbiased and n < 4:
        raise ValueError(
            f"unbiased HSIC needs at least 4 examples (it divides by n(n-3)), got n={n}; "
            "use a larger batch or unbiased=False"
        )


def _center(x: Array) -> Array:
    return x - x.mean(axis=0, keepdims=True)


def gram_linear(x: Array) -> Array:
    """x: (n, p) -> K = x xᵀ (n, n)."""
    return jnp.matmul(x, x.T, precision=_HI)


def gram_rbf(x: Array, threshold: float = 1.0) -> Array:
    """x: (n, p) -> K_ij = exp(−d²_ij / (2 θ² median(d²))) (n, n); θ = `threshold`."""
    dot = gram_linear(x)
    sq = jnp.diag(dot)
    d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * dot, 0.0)
    return jnp.exp(-d2 / (2.0 * threshold**2 * jnp.median(d2)))


def hsic(k: Array, l: Array, *, unbiased: bool = False) -> Array:
    """HSIC of two (n, n) Gram matrices (biased HSIC₀ or Song et al.'s unbiased HSIC₁)."""
    n = k.shape[0]
    if unbiased:
        _check("linear", n, True)
        off_diagonal = 1.0 - jnp.eye(n, dtype=k.dtype)
        return _pair_hsic(jnp.stack([k * off_diagonal, l * off_diagonal]))[0, 1]
    kc = k - k.mean(0, keepdims=True) - k.mean(1, keepdims=True) + k.mean()
    return (kc * l).sum() / (n - 1) ** 2  # tr(HKH L) = tr(KHLH)


def _linear_feature_terms(x: Array, y: Array, unbiased: bool) -> Array:
    """HSIC(x, y) of the linear kernel in feature space; x: (n, p1), y: (n, p2) already centred."""
    n = x.shape[0]
    cross = jnp.sum(jnp.matmul(x.T, y, precision=_HI) ** 2)
    if not unbiased:
        return cross / (n - 1) ** 2
    nx, ny = (x * x).sum(1), (y * y).sum(1)
    sx, sy = x.sum(0), y.sum(0)
    tr = cross - jnp.dot(nx, ny, precision=_HI)
    kx1 = jnp.matmul(x, sx, precision=_HI) - nx  # K̃1
    ly1 = jnp.matmul(y, sy, precision=_HI) - ny
    s_k, s_l = jnp.dot(sx, sx) - nx.sum(), jnp.dot(sy, sy) - ny.sum()
    t = tr + s_k * s_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * jnp.dot(kx1, ly1, precision=_HI)
    return t / (n * (n - 3))


def _ratio(xy, xx, yy, xp=jnp):
    """xy / sqrt(xx·yy), 0 where a self-term is ≤ 0 (no measurable variation), never NaN; xp: jnp or np."""
    ok = (xx > 0) & (yy > 0)
    return xp.where(ok, xy / xp.sqrt(xp.where(ok, xx * yy, 1.0)), 0.0)


@functools.partial(jax.jit, static_argnames=("kernel", "unbiased", "feature_space"))
def _cka(x, y, rbf_threshold, *, kernel, unbiased, feature_space):
    dt = jnp.promote_types(jnp.promote_types(x.dtype, y.dtype), jnp.float32)  # float64 under x64
    x, y = _center(x.astype(dt)), _center(y.astype(dt))
    if feature_space:
        terms = [_linear_feature_terms(a, b, unbiased) for a, b in ((x, y), (x, x), (y, y))]
    else:
        gram = gram_linear if kernel == "linear" else functools.partial(gram_rbf, threshold=rbf_threshold)
        k, l = gram(x), gram(y)
        terms = [hsic(a, b, unbiased=unbiased) for a, b in ((k, l), (k, k), (l, l))]
    return _ratio(*terms)


def cka(x, y, *, kernel: str = "linear", unbiased: bool = False, rbf_threshold: float = 1.0) -> float:
    """CKA between representations x: (n, p1) and y: (n, p2) of the same n examples.

    Extra axes are flattened: (n, ...) -> (n, prod(...)). Linear CKA uses the feature-space form
    when n exceeds both widths. `unbiased=True` uses HSIC₁ (needs n ≥ 4; otherwise ValueError).
    """
    x, y = (jnp.reshape(jnp.asarray(a), (a.shape[0], -1)) for a in (x, y))
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y need the same number of examples, got {x.shape[0]} and {y.shape[0]}")
    _check(kernel, x.shape[0], unbiased)
    feature_space = kernel == "linear" and x.shape[0] > max(x.shape[1], y.shape[1])
    return float(_cka(x, y, float(rbf_threshold), kernel=kernel, unbiased=unbiased, feature_space=feature_space))


# ---------------------------------------------------------------------------------------------
# Minibatch CKA


def _pair_hsic(k: Array) -> Array:
    """HSIC₁ of every pair (a, b) of zero-diagonal Gram matrices k: (L, n, n) -> (L, L)."""
    n = k.shape[1]
    tr = jnp.einsum("aij,bij->ab", k, k, precision=_HI)
    r = k.sum(2)  # K̃1
    s = r.sum(1)
    t = tr + s[:, None] * s[None, :] / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * jnp.matmul(r, r.T, precision=_HI)
    return t / (n * (n - 3))


@functools.partial(jax.jit, static_argnames=("kernel",))
def batch_hsic_terms(feats: Sequence[Array], threshold: float = 1.0, *, kernel: str = "linear") -> Array:
    """One batch's HSIC₁ of every pair of layers (the device half of `MinibatchCKA`).

    feats: L arrays (B, ...) — the layers of one model, or of two models concatenated ->
    (L, L), diagonal = HSIC₁(K_a, K_a). Each Gram matrix is computed once. Inputs may be sharded
    over the batch axis; jit inserts the reductions.
    """
    grams = []  # per layer: the Gram matrix of the centred features, diagonal zeroed
    for f in feats:
        f = _center(f.reshape(f.shape[0], -1).astype(jnp.float32))
        k = gram_linear(f) if kernel == "linear" else gram_rbf(f, threshold)
        grams.append(k * (1.0 - jnp.eye(k.shape[0], dtype=k.dtype)))
    return _pair_hsic(jnp.stack(grams))


class MinibatchCKA:
    """Layer × layer unbiased minibatch CKA, accumulated over batches (Nguyen et al. 2021, eq. 3).

    acc = MinibatchCKA(len(layers_x), len(layers_y))      # or MinibatchCKA(L) for one model
    for batch in data: acc.update(layers_x(batch), layers_y(batch))
    acc.result()        # (Lx, Ly) float64: x layers × y layers
    acc.result("xx")    # within x (also "yy", and "all" for the joint (Lx+Ly)² matrix)

    With two models, every pair of all Lx + Ly layers is accumulated from the same Gram matrices,
    so the within-model matrices come at no extra cost. Each update needs a batch of at least 4
    examples (HSIC₁ divides by n(n−3)). Sums are float64 on the host; see the module docstring
    for what is returned when HSIC terms are ≤ 0.
    """

    def __init__(
        self, num_layers_x: int, num_layers_y: int | None = None, *, kernel: str = "linear", rbf_threshold: float = 1.0
    ):
        _check(kernel, 4, False)
        self.same = num_layers_y is None
        self.shape = (num_layers_x, num_layers_x if self.same else num_layers_y)
        self.kernel, self.rbf_threshold = kernel, float(rbf_threshold)
        total = num_layers_x + (0 if self.same else num_layers_y)
        self.hsic = np.zeros((total, total), np.float64)  # Σ over batches of HSIC₁(K_a, K_b)
        self.num_batches = 0
        self.num_examples = 0

    def update(self, feats_x: Sequence[Array], feats_y: Sequence[Array] | None = None) -> None:
        """Adds one batch: lists of per-layer (B, ...) arrays (feats_y only for two models)."""
        feats_x = list(feats_x)
        if self.same and feats_y is not None:
            raise ValueError("this accumulator compares one model with itself: call update(feats_x)")
        feats_y = [] if self.same else list(feats_y if feats_y is not None else [])
        got = (len(feats_x), len(feats_x) if self.same else len(feats_y))
        if got != self.shape:
            raise ValueError(f"expected {self.shape} layers, got {got}")
        feats = feats_x + feats_y
        n = feats[0].shape[0]
        if any(f.shape[0] != n for f in feats):
            raise ValueError("every layer's features must have the same batch size")
        _check(self.kernel, n, True)
        terms = batch_hsic_terms(tuple(feats), self.rbf_threshold, kernel=self.kernel)
        self.hsic += np.asarray(jax.device_get(terms), np.float64)
        self.num_batches += 1
        self.num_examples += n

    def result(self, block: str = "xy") -> np.ndarray:
        """CKA matrix: `xy` (Lx, Ly) (for one model: within it), `xx`, `yy` or `all`; 0.0 where a
        layer's summed self-HSIC is ≤ 0 (never NaN)."""
        if not self.num_batches:
            raise ValueError("MinibatchCKA.result() before any update()")
        d = np.diag(self.hsic)
        full = _ratio(self.hsic, d[:, None], d[None, :], np)
        lx = self.shape[0]
        if self.same or block == "all":
            return full  # one model: "xy", "xx" and "yy" are all the within-model matrix
        blocks = {"xy": full[:lx, lx:], "xx": full[:lx, :lx], "yy": full[lx:, lx:]}
        if block not in blocks:
            raise ValueError(f"block must be one of {list(blocks)} or 'all', got {block!r}")
        return blocks[block]
