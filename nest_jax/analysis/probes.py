"""Linear probes on frozen representations: closed-form ridge and a short logistic regression.

Ridge (the few-shot linear evaluation of big_vision, Kolesnikov et al.): features are whitened per
dimension with the training set's mean and standard deviation, a constant bias feature is
appended (of magnitude `BIAS`, so that the L2 penalty on its weight is negligible and the bias is
effectively unregularized), targets are one-hot rescaled to ±1, and

    W = (XᵀX + λI)⁻¹ Xᵀ Y   when n ≥ d (primal),     W = Xᵀ (XXᵀ + λI)⁻¹ Y   when d > n (dual),

which are the same solution. The prediction is argmax XW.

Logistic: the same whitened features and bias, softmax cross-entropy with a small L2 penalty,
`steps` full-batch Adam steps (optax), jitted as one `lax.scan`.

Per-token probes (Raghu et al. 2021, §6): one ridge probe is fitted on all final-layer spatial
tokens of the training images (each token labelled with its image's class) and its accuracy is
measured at each token position separately on the test images.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array
BIAS = 100.0
_HI = jax.lax.Precision.HIGHEST


def _whiten(x_train: Array, x_test: Array) -> tuple[Array, Array]:
    x_train, x_test = x_train.astype(jnp.float32), x_test.astype(jnp.float32)
    mean = x_train.mean(0, keepdims=True)
    std = x_train.std(0, keepdims=True) + 1e-5
    pad = lambda x: jnp.pad((x - mean) / std, ((0, 0), (0, 1)), constant_values=BIAS)
    return pad(x_train), pad(x_test)


@jax.jit(static_argnames=("num_classes",))
def ridge_probe(
    x_train: Array, y_train: Array, x_test: Array, y_test: Array, *, num_classes: int, l2: float = 1.0
) -> Array:
    """Test accuracy of the closed-form ridge probe. x: (n, d) float, y: (n,) int -> scalar."""
    return jnp.mean(_ridge_predict(x_train, y_train, x_test, num_classes, l2) == y_test)


def _ridge_predict(x_train: Array, labels: Array, x_test: Array, num_classes: int, l2: float) -> Array:
    """Classes (n_test,) predicted by the ridge weights (d, K) fitted onto ±1 one-hot targets for the
    whitened x_train (n, d): primal when n ≥ d, else dual."""
    x, x_test = _whiten(x_train, x_test)
    y = 2.0 * jax.nn.one_hot(labels, num_classes) - 1.0
    n, d = x.shape
    if n >= d:
        a = jnp.matmul(x.T, x, precision=_HI) + l2 * jnp.eye(d)
        w = jnp.linalg.solve(a, jnp.matmul(x.T, y, precision=_HI))
    else:
        a = jnp.matmul(x, x.T, precision=_HI) + l2 * jnp.eye(n)
        w = jnp.matmul(x.T, jnp.linalg.solve(a, y), precision=_HI)
    return jnp.argmax(jnp.matmul(x_test, w, precision=_HI), -1)


@jax.jit(static_argnames=("num_classes", "steps"))
def logistic_probe(
    x_train: Array,
    y_train: Array,
    x_test: Array,
    y_test: Array,
    *,
    num_classes: int,
    steps: int = 100,
    lr: float = 0.05,
    l2: float = 1e-4,
) -> Array:
    """Test accuracy of a softmax regression trained by `steps` full-batch Adam steps."""
    x_train, x_test = _whiten(x_train, x_test)
    x_train, x_test = x_train.at[:, -1].set(1.0), x_test.at[:, -1].set(1.0)  # plain bias for SGD
    tx = optax.adam(lr)
    w = jnp.zeros((x_train.shape[1], num_classes))

    def loss(w):
        ce = optax.softmax_cross_entropy_with_integer_labels(x_train @ w, y_train).mean()
        return ce + l2 * jnp.sum(w[:-1] ** 2)

    def step(carry, _):
        w, opt = carry
        upd, opt = tx.update(jax.grad(loss)(w), opt, w)
        return (optax.apply_updates(w, upd), opt), None

    (w, _), _ = jax.lax.scan(step, (w, tx.init(w)), None, length=steps)
    return jnp.mean(jnp.argmax(x_test @ w, -1) == y_test)


def layer_probes(
    train_feats: list, y_train, test_feats: list, y_test, *, num_classes: int, kind: str = "ridge", **kw
) -> np.ndarray:
    """Accuracy of one probe per layer: lists of (n, d) features -> (layers,)."""
    probe = {"ridge": ridge_probe, "logistic": logistic_probe}.get(kind)
    if probe is None:
        raise ValueError(f"kind must be 'ridge' or 'logistic', got {kind!r}")
    y_train, y_test = jnp.asarray(y_train), jnp.asarray(y_test)
    accs = [float(probe(a, y_train, b, y_test, num_classes=num_classes, **kw)) for a, b in zip(train_feats, test_feats)]
    return np.array(accs)


@jax.jit(static_argnames=("num_classes",))
def token_probe(
    tokens_train: Array, y_train: Array, tokens_test: Array, y_test: Array, *, num_classes: int, l2: float = 1.0
) -> Array:
    """Per-position accuracy of one ridge probe on individual spatial tokens.

    tokens: (n, N, D) final-layer spatial tokens; y: (n,) -> (N,) test accuracy at each position.
    """
    n, t, d = tokens_train.shape
    pred = _ridge_predict(
        tokens_train.reshape(n * t, d), jnp.repeat(y_train, t), tokens_test.reshape(-1, d), num_classes, l2
    )
    return jnp.mean(pred.reshape(tokens_test.shape[:2]) == y_test[:, None], axis=0)
