"""FID (Heusel et al. 2017, NeurIPS, eq. 6) and KID (Bińkowski et al. 2018, ICLR, §3 and App. D).

Features come from a pluggable extractor (a jitted function images (B, H, W, C) in [-1, 1] ->
(B, D)); their statistics are accumulated batch by batch in float64 on the host:

  FID = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^{1/2})

Matrix square root: by default the trace is taken through a symmetric eigen-decomposition,
Tr (Σ₁Σ₂)^{1/2} = Σᵢ √λᵢ(Σ₁^{1/2} Σ₂ Σ₁^{1/2}), since Σ₁Σ₂ is similar to that symmetric positive
semi-definite matrix. Everything stays real, float64 and defined when the covariances are
singular (fewer samples than feature dimensions), where `scipy.linalg.sqrtm` of the non-symmetric
product can return complex parts or fail (pytorch-fid then adds 1e-6 to the diagonals).
`method="sqrtm"` reproduces the SciPy computation for comparison.

KID: unbiased MMD² with the cubic polynomial kernel k(x, y) = (xᵀy / d + 1)³, averaged over random
subsets of `subset_size` from each set; returns mean and standard deviation over subsets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nest_jax.errors import UserError

Extractor = Callable[[jax.Array], jax.Array]


class FeatureStats:
    """Running count, sum and sum of outer products of features, float64 on the host.

    Optionally keeps the features themselves (float32) for KID.
    """

    def __init__(self, keep_features: bool = False):
        self.n = 0
        self.sum: np.ndarray | None = None
        self.outer: np.ndarray | None = None
        self.keep = keep_features
        self.features: list[np.ndarray] = []

    def update(self, feats: Any) -> None:
        """feats: (B, D)."""
        f = np.asarray(jax.device_get(feats), np.float64)
        if self.sum is None:
            self.sum = np.zeros(f.shape[1])
            self.outer = np.zeros((f.shape[1], f.shape[1]))
        self.n += f.shape[0]
        self.sum += f.sum(axis=0)
        self.outer += f.T @ f
        if self.keep:
            self.features.append(f.astype(np.float32))

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """(μ (D,), Σ (D, D)) with the unbiased (n − 1) covariance, as numpy.cov and pytorch-fid."""
        if self.n < 2:
            raise ValueError(f"need at least 2 samples for a covariance, have {self.n}")
        mu = self.sum / self.n
        cov = (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)
        return mu, cov

    def all_features(self) -> np.ndarray:
        return np.concatenate(self.features) if self.features else np.zeros((0, 0), np.float32)


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray, method: str = "eigh") -> float:
    """Tr (Σ₁Σ₂)^{1/2} in float64 (see the module docstring for the two methods)."""
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if method == "eigh":
        w, v = np.linalg.eigh((s1 + s1.T) / 2)
        r = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T  # Σ₁^{1/2}
        m = r @ s2 @ r
        return float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None))))
    if method == "sqrtm":
        import scipy.linalg

        return float(np.real(np.trace(scipy.linalg.sqrtm(s1 @ s2))))
    raise ValueError(f"method must be 'eigh' or 'sqrtm', got {method!r}")


def frechet_distance(mu1, sigma1, mu2, sigma2, method: str = "eigh") -> float:
    """Fréchet distance between N(μ₁, Σ₁) and N(μ₂, Σ₂) (Dowson & Landau 1982), float64."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    if mu1.shape != mu2.shape or np.shape(sigma1) != np.shape(sigma2):
        raise ValueError(f"statistics differ in shape: μ {mu1.shape} vs {mu2.shape}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2, method))


def fid_from_stats(a: FeatureStats, b: FeatureStats, method: str = "eigh") -> float:
    return frechet_distance(*a.mean_cov(), *b.mean_cov(), method=method)


def polynomial_mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int = 3, coef: float = 1.0) -> float:
    """Unbiased MMD² with k(a, b) = (aᵀb / d + coef)^degree. x: (m, d), y: (n, d)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    kxx, kyy, kxy = ((a @ b.T / x.shape[1] + coef) ** degree for a, b in ((x, x), (y, y), (x, y)))
    m, n = len(x), len(y)
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2.0 * kxy.mean()
    )


def kid(
    x: np.ndarray, y: np.ndarray, *, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID: mean and std of the unbiased polynomial MMD² over `num_subsets` random subsets.

    Each subset draws `min(subset_size, len(x), len(y))` rows without replacement from each set.
    """
    rng = np.random.default_rng(seed)
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set, have {len(x)} and {len(y)}")
    vals = [
        polynomial_mmd2_unbiased(x[rng.choice(len(x), m, replace=False)], y[rng.choice(len(y), m, replace=False)])
        for _ in range(num_subsets)
    ]
    return float(np.mean(vals)), float(np.std(vals))


def accumulate(
    extract: Extractor, batches: Iterable[np.ndarray], *, keep_features: bool = False, gather: Callable | None = None
) -> FeatureStats:
    """Runs `extract` over image batches (B, H, W, C) in [-1, 1]; padding rows may be masked by
    passing (images, mask) tuples. `gather((features, mask))`: every process's rows (multi-host)."""
    stats = FeatureStats(keep_features)
    for batch in batches:
        images, mask = batch if isinstance(batch, tuple) else (batch, None)
        f = np.asarray(jax.device_get(extract(jnp.asarray(images))))
        if gather is not None:
            f, mask = gather((f, np.ones(len(f)) if mask is None else np.asarray(mask)))
        stats.update(f if mask is None else f[np.asarray(mask) > 0])
    return stats


# ---- feature extractors ------------------------------------------------------------------------
def classifier_extractor(
    model: Any, *, mean: tuple[float, ...], std: tuple[float, ...], capture: str = "pre_logits"
) -> Extractor:
    """Features of a nest_jax classifier: images in [-1, 1] are mapped to [0, 1] and normalized with
    the classifier's (mean, std), then its `capture="pre_logits"` vector is returned (B, D)."""
    from flax import nnx

    graphdef, state = nnx.split(model)
    mean_a, std_a = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)

    @jax.jit
    def extract(images):
        x = ((images + 1.0) / 2.0 - mean_a) / std_a
        return nnx.merge(graphdef, state)(x, train=False, capture=capture)[1][capture].astype(jnp.float32)

    return extract


def classifier_from_workdir(workdir: str, *, use_ema: bool = False) -> Extractor:
    """The default extractor: a classifier trained with the main job on the same data.

    `workdir` is that run's workdir: its `config.json` (written by the training loop) rebuilds the
    model and the input normalization, its latest checkpoint (read by `nest_jax.load_params`; its EMA
    parameters with use_ema) gives the parameters.
    """
    import json

    import ml_collections
    from etils import epath
    from flax import nnx

    from nest_jax.convert.load import load_into, load_params
    from nest_jax.data.preprocess import mean_std
    from nest_jax.train.trainer import build_model

    how = (
        "train one with e.g. `python -m nest_jax.main --config=configs/digits_nest_tiny.py --workdir=DIR` and pass DIR"
    )
    path = epath.Path(workdir or "")
    if not workdir or not (path / "config.json").exists() or not (path / "checkpoints").exists():
        raise UserError(f"no classifier run (config.json + checkpoints/) in {workdir!r}: {how}")
    config = ml_collections.ConfigDict(json.loads((path / "config.json").read_text()))
    weights = load_params(workdir, ema=use_ema)
    num_classes = int(np.shape(weights.params["head/bias"])[0]) if "head/bias" in weights.params else 0
    model = build_model(config, num_classes, nnx.Rngs(0))
    load_into(model, weights)
    mean, std = mean_std(config.dataset)
    return classifier_extractor(model, mean=mean, std=std)


def inception_extractor(weights: str, *, resize: str = "tf_legacy") -> Extractor:
    """Inception-v3 pool3 features with the FID weights read from `weights` (see inception.py)."""
    from nest_jax.analysis.inception import inception_features, load_inception_weights

    params = load_inception_weights(weights)
    return jax.jit(lambda images: inception_features(params, images, resize=resize))
