"""Transfer from frozen features: linear probes, the "ensemble" of tokens, few-shot classifiers
(Naseer et al. 2021, Section 3.6; big_vision's few-shot evaluator).

Features (ViT/DeiT; `extract_features`):
  "cls"            the last layer's class token after the final norm (the head's input);
  "ensemble"       the class tokens of the last 4 layers, each through the final norm, concatenated
                   (the paper's best: 4·D features);
  "ensemble_patch" the same plus the mean of the final patch tokens (5·D);
  "pre_logits"     what the head reads, for every model (NesT, ResNet too).

Classifiers:
  `train_linear`   the paper's linear probe: AdamW lr 5e-4, weight decay 0.05, 10 epochs, batch
                   256, no augmentation (features fixed, so each epoch is a shuffle of them);
  `episodes`       N-way K-shot episodes, a logistic-regression classifier trained per episode
                   (Adam, all episodes in one vmapped jitted call), accuracy on Q queries per class;
  `ridge_few_shot` big_vision's closed-form few-shot: K shots per class, features standardized by
                   the shots' mean and std, a constant bias feature appended, ±1 one-hot targets,
                   ridge regression with l2 = 1024 solved in its dual form W = Xᵀ(XXᵀ + λI)⁻¹Y
                   (N shots ≪ D), for K = 1, 5, 10, 25 and several seeds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from nest_jax.analysis.forward import as_list, batch_mask, normalize
from nest_jax.analysis.per_block_tokens import is_vit
from nest_jax.errors import UserError

Array = jax.Array
FEATURES = ("cls", "ensemble", "ensemble_patch", "pre_logits")


@nnx.jit(static_argnames=("kind",))
def features_of(model, images: Array, kind: str = "cls") -> Array:
    """Frozen features (B, F) of normalized images (B, H, W, C); see the module docstring."""
    if kind == "pre_logits":
        _, inter = model(images, train=False, capture=("pre_logits",))
        return inter["pre_logits"]
    if not is_vit(model) or "cls" not in model.config.prefix_tokens:
        raise UserError(f"features {kind!r} need a ViT/DeiT with a class token; use kind='pre_logits'")
    c = model.config
    _, inter = model(images, train=False, capture=("layers",))
    i = c.token_index("cls")
    if kind == "cls":
        return model.norm(inter["layers"][-1])[:, i]
    if kind not in ("ensemble", "ensemble_patch"):
        raise ValueError(f"kind must be one of {FEATURES}, got {kind!r}")
    feats = [model.norm(z)[:, i] for z in inter["layers"][-4:]]
    if kind == "ensemble_patch":
        feats.append(model.norm(inter["layers"][-1])[:, c.num_prefix :].mean(axis=1))
    return jnp.concatenate(feats, axis=-1)


def extract_features(
    model, batches: Iterable[dict], *, mean: tuple, std: tuple, kind: str = "cls"
) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, F) float32, labels (N,)) over batches of [0, 1] images, padding removed."""
    fs, ys = [], []
    for b in as_list(batches):
        keep = batch_mask(b) > 0
        f = features_of(model, normalize(jnp.asarray(b["image"]), mean, std), kind=kind)
        fs.append(np.asarray(f, np.float32)[keep])
        ys.append(np.asarray(b["label"])[keep])
    return np.concatenate(fs), np.concatenate(ys)


def train_linear(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    *,
    lr: float = 5e-4,
    weight_decay: float = 0.05,
    epochs: int = 10,
    batch_size: int = 256,
    seed: int = 0,
) -> dict:
    """Linear classifier on fixed features with AdamW (the paper's settings). -> {"w", "b"}."""
    n, d = x.shape
    params = {"w": jnp.zeros((d, num_classes)), "b": jnp.zeros((num_classes,))}
    tx = optax.adamw(lr, weight_decay=weight_decay)
    state = tx.init(params)

    @jax.jit
    def step(params, state, xb, yb, mb):
        def loss(p):
            logp = jax.nn.log_softmax(xb @ p["w"] + p["b"])
            return -(jnp.take_along_axis(logp, yb[:, None], -1)[:, 0] * mb).sum() / jnp.maximum(mb.sum(), 1.0)

        g = jax.grad(loss)(params)
        updates, state = tx.update(g, state, params)
        return optax.apply_updates(params, updates), state

    rng = np.random.default_rng(seed)
    steps = -(-n // batch_size)
    for _ in range(epochs):
        order = rng.permutation(n)
        for s in range(steps):
            idx = order[s * batch_size : (s + 1) * batch_size]
            pad = batch_size - len(idx)  # one compiled shape: pad the last batch, mask it out
            xb = np.concatenate([x[idx], np.zeros((pad, d), x.dtype)])
            yb = np.concatenate([y[idx], np.zeros(pad, y.dtype)])
            mb = np.concatenate([np.ones(len(idx)), np.zeros(pad)]).astype(np.float32)
            params, state = step(params, state, xb, yb, mb)
    return params


def linear_accuracy(params: dict, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(np.asarray(x @ params["w"] + params["b"]), -1) == y))


def train_test_features(model, train_batches, test_batches, **kw) -> tuple[np.ndarray, ...]:
    """(x, y, x_test, y_test): `extract_features(model, batches, **kw)` of both splits."""
    return (*extract_features(model, train_batches, **kw), *extract_features(model, test_batches, **kw))


def run_linear_probe(model, train_batches, test_batches, *, num_classes: int, kinds=FEATURES[:3], **kw) -> dict:
    """Test top-1 of the linear probe on each feature kind.  -> {"top1": {kind: acc}}.

    kw: `mean`, `std` of `extract_features`; the rest goes to `train_linear`.
    """
    train_batches, test_batches = as_list(train_batches), as_list(test_batches)
    norm = dict(mean=kw.pop("mean"), std=kw.pop("std"))
    out = {}
    for kind in kinds:
        x, y, xt, yt = train_test_features(model, train_batches, test_batches, kind=kind, **norm)
        out[kind] = linear_accuracy(train_linear(x, y, num_classes, **kw), xt, yt)
    return {"top1": out}


@jax.jit
def ridge_fit_predict(x: Array, y_onehot: Array, x_test: Array, l2: float) -> Array:
    """Closed-form ridge in dual form on standardized features with a bias feature -> test scores."""
    mu = x.mean(0, keepdims=True)
    sd = x.std(0, keepdims=True) + 1e-5  # a single shot has zero spread: the epsilon keeps it finite
    x, x_test = (jnp.concatenate([(a - mu) / sd, jnp.ones((a.shape[0], 1), x.dtype)], 1) for a in (x, x_test))
    targets = 2.0 * y_onehot - 1.0
    gram = x @ x.T + l2 * jnp.eye(x.shape[0], dtype=x.dtype)
    w = x.T @ jnp.linalg.solve(gram, targets)
    return x_test @ w


def sample_shots(y: np.ndarray, shots: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of `shots` random examples of every class (without replacement)."""
    idx = []
    for c in range(num_classes):
        pool = np.flatnonzero(y == c)
        if len(pool) < shots:
            raise ValueError(f"class {c} has {len(pool)} examples, fewer than {shots} shots")
        idx.append(rng.choice(pool, shots, replace=False))
    return np.concatenate(idx)


def check_shots(shots: Sequence[int], seeds: int) -> None:
    """UserError unless `shots` is a non-empty sequence of counts >= 1 and `seeds` >= 1."""
    if not shots or not all(int(k) == k and k >= 1 for k in shots):
        raise UserError(f"few_shot: shots={tuple(shots)} must be counts of at least 1, e.g. shots=(1,5)")
    if int(seeds) < 1:
        raise UserError(f"few_shot: seeds={seeds} must be at least 1, e.g. seeds=3")


def ridge_few_shot(
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int,
    *,
    shots: Sequence[int] = (1, 5, 10, 25),
    seeds: int = 3,
    l2: float = 1024.0,
) -> dict:
    """big_vision-style few-shot accuracy: {shots: [accuracy per seed]} and the means."""
    check_shots(shots, seeds)
    out, means = {}, {}
    for k in shots:
        accs = []
        for s in range(seeds):
            idx = sample_shots(y, k, num_classes, np.random.default_rng([s, k]))
            x_shots, y_shots = jnp.asarray(x[idx], jnp.float32), jax.nn.one_hot(y[idx], num_classes)
            scores = ridge_fit_predict(x_shots, y_shots, jnp.asarray(x_test, jnp.float32), l2)
            accs.append(float(np.mean(np.argmax(np.asarray(scores), -1) == y_test)))
        out[str(k)], means[str(k)] = accs, float(np.mean(accs))
    return {"per_seed": out, "mean": means}


def episodes(
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_way: int = 5,
    k_shot: int = 5,
    queries: int = 15,
    num_episodes: int = 100,
    steps: int = 100,
    lr: float = 0.01,
    seed: int = 0,
) -> dict:
    """N-way K-shot episodes with a logistic-regression classifier on L2-normalized features.

    Each episode draws N classes, K support and Q query examples per class (disjoint); all
    episodes train and evaluate in one vmapped, jitted call. -> {"accuracy", "ci95", "episodes"}.
    """
    classes = np.unique(y)
    if len(classes) < n_way:
        raise ValueError(f"{n_way}-way episodes need {n_way} classes, the features have {len(classes)}")
    rng = np.random.default_rng(seed)
    sx, qx = [], []
    xn = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)
    for _ in range(num_episodes):
        chosen = rng.choice(classes, n_way, replace=False)
        s_i, q_i = [], []
        for c in chosen:
            pool = rng.permutation(np.flatnonzero(y == c))
            if len(pool) < k_shot + queries:
                raise ValueError(f"class {c} has {len(pool)} examples, fewer than {k_shot}+{queries}")
            s_i.append(pool[:k_shot])
            q_i.append(pool[k_shot : k_shot + queries])
        sx.append(xn[np.concatenate(s_i)])
        qx.append(xn[np.concatenate(q_i)])
    sy, qy = ([np.repeat(np.arange(n_way), r)] * num_episodes for r in (k_shot, queries))  # labels 0..N-1
    stacked = (jnp.asarray(np.stack(a)) for a in (sx, sy, qx, qy))
    acc = np.asarray(_episode_accuracy(*stacked, n_way=n_way, steps=steps, lr=lr))
    return {
        "accuracy": float(acc.mean()),
        "ci95": float(1.96 * acc.std() / np.sqrt(len(acc))),
        "episodes": num_episodes,
    }


@jax.jit(static_argnames=("n_way", "steps", "lr"))
def _episode_accuracy(sx, sy, qx, qy, *, n_way: int, steps: int, lr: float):
    tx = optax.adam(lr)

    def one(sx, sy, qx, qy):
        params = {"w": jnp.zeros((sx.shape[-1], n_way)), "b": jnp.zeros((n_way,))}

        def loss(p):
            logp = jax.nn.log_softmax((sx @ p["w"] + p["b"]) * 10.0)  # temperature: features are unit norm
            return -jnp.take_along_axis(logp, sy[:, None], -1).mean()

        def body(_, carry):
            p, s = carry
            u, s = tx.update(jax.grad(loss)(p), s, p)
            return optax.apply_updates(p, u), s

        params, _ = jax.lax.fori_loop(0, steps, body, (params, tx.init(params)))
        return jnp.mean(jnp.argmax(qx @ params["w"] + params["b"], -1) == qy)

    return jax.vmap(one)(sx, sy, qx, qy)


def run_few_shot(model, train_batches, test_batches, *, mean, std, num_classes: int, kind="cls", **ridge_kw) -> dict:
    """big_vision-style ridge few-shot on the model's frozen features (`ridge_few_shot`'s settings)."""
    features = train_test_features(model, train_batches, test_batches, mean=mean, std=std, kind=kind)
    return ridge_few_shot(*features, num_classes, **ridge_kw)
