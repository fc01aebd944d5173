"""Mixup / CutMix with label smoothing, on device inside the jitted train step (pure jax, no TF).

Two samplings of the mixing weight, per batch one of mixup or CutMix (CutMix with probability
`switch_prob` when both are on):

- "nest" (official NesT code; docs/recipes.md): per-example w = U^(1/α) / 2 ∈ [0, ½].
  Mixup: weight of the own image λ = max(w, 1 − w) ≥ ½, partner = a random permutation of the
  batch. CutMix: the own image is kept inside a box of sides ⌊√w·H⌋ × ⌊√w·W⌋ lying fully inside
  the image, the reversed batch fills the rest.
- "beta" (DeiT / timm Mixup, mode "batch"): one λ ~ Beta(α, α) per batch, partner = the flipped
  (reversed) batch. Mixup: λ·x + (1 − λ)·x_partner. CutMix: a box of sides ⌊√(1−λ)·H⌋ ×
  ⌊√(1−λ)·W⌋ centred uniformly, clipped to the image, filled from the partner. λ is drawn without
  a data-dependent loop (`beta`), so the step holds no `while` that a GPU would run from the host.

In both, the target weight of the own label is the own image's actual pixel share for CutMix
(timm's `correct_lam`; the official NesT used w itself, which the integer box only approximates).
Labels are smoothed before mixing: y·(1 − s) + s/K. Every target row sums to 1.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

GAMMA_PROPOSALS = 16


def smooth_one_hot(labels: jax.Array, num_classes: int, smoothing: float) -> jax.Array:
    """labels (B,) int → (B, K) float32: 1 − s + s/K on the label, s/K elsewhere."""
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    return one_hot * (1.0 - smoothing) + smoothing / num_classes


def _box_mask(h: int, w: int, top, left, box_h, box_w) -> jax.Array:
    """(B, H, W) bool: True inside rows [top, top+box_h) × cols [left, left+box_w), per example
    ((1, H, W) for scalar bounds: one box for the whole batch)."""
    rows = jnp.arange(h)[None, :, None]
    cols = jnp.arange(w)[None, None, :]
    top, left, box_h, box_w = (jnp.reshape(v, (-1, 1, 1)) for v in (top, left, box_h, box_w))
    return (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)


def _mix_targets(targets, partner_targets, lam):
    return lam[:, None] * targets + (1.0 - lam[:, None]) * partner_targets


def _mixup_nest(rng, images, targets, alpha):
    k_w, k_perm = jax.random.split(rng)
    b = images.shape[0]
    w = jax.random.uniform(k_w, (b,)) ** (1.0 / alpha) / 2.0
    lam = jnp.maximum(w, 1.0 - w)
    perm = jax.random.permutation(k_perm, b)
    lam_x = lam.astype(images.dtype)[:, None, None, None]
    mixed = lam_x * images + (1.0 - lam_x) * images[perm]
    return mixed, _mix_targets(targets, targets[perm], lam)


def _cutmix_nest(rng, images, targets, alpha):
    k_w, k_y, k_x = jax.random.split(rng, 3)
    b, h, w_img = images.shape[:3]
    w = jax.random.uniform(k_w, (b,)) ** (1.0 / alpha) / 2.0
    box_h = jnp.floor(jnp.sqrt(w) * h).astype(jnp.int32)
    box_w = jnp.floor(jnp.sqrt(w) * w_img).astype(jnp.int32)
    top = jax.random.randint(k_y, (b,), 0, h - box_h + 1)
    left = jax.random.randint(k_x, (b,), 0, w_img - box_w + 1)
    keep = _box_mask(h, w_img, top, left, box_h, box_w)[..., None]
    mixed = jnp.where(keep, images, images[::-1])
    return mixed, _mix_targets(targets, targets[::-1], (box_h * box_w).astype(jnp.float32) / (h * w_img))


def log_gamma(key: jax.Array, alpha: float) -> jax.Array:
    """log G for one draw G ~ Gamma(α, 1), α > 0, without a data-dependent loop. → () float32

    Marsaglia & Tsang (2000), "A simple method for generating gamma variables", §3 (squeeze
    acceptance) with GAMMA_PROPOSALS proposals drawn at once and the first accepted one kept, and
    §6 for α < 1: G = G' · U^(1/α) with G' ~ Gamma(α + 1), taken in logs so that small α does not
    underflow. A proposal is accepted with probability > 0.95 (its shape is ≥ 1), so all of them
    are rejected with probability < 0.05^16 ≈ 1.5e-21; only then does the draw differ from the
    Gamma distribution (it is log d, near the mode). `jax.random.gamma` loops until acceptance: an
    HLO `while` whose predicate a GPU copies to the host on every trip.
    """
    k_normal, k_accept, k_boost = jax.random.split(key, 3)
    shape = alpha + 1.0 if alpha < 1.0 else alpha
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    x = jax.random.normal(k_normal, (GAMMA_PROPOSALS,))
    u = jax.random.uniform(k_accept, (GAMMA_PROPOSALS,))
    v = (1.0 + c * x) ** 3
    log_v = jnp.log(jnp.where(v > 0, v, 1.0))
    accepted = (v > 0) & (jnp.log(u) < 0.5 * x**2 + d - d * v + d * log_v)
    log_g = math.log(d) + jnp.where(jnp.any(accepted), log_v[jnp.argmax(accepted)], 0.0)
    if alpha < 1.0:
        tiny = jnp.finfo(jnp.float32).tiny
        log_g = log_g + jnp.log(jnp.maximum(jax.random.uniform(k_boost), tiny)) / alpha
    return log_g


def beta(key: jax.Array, alpha: float) -> jax.Array:
    """λ ~ Beta(α, α) = G₁ / (G₁ + G₂) for independent G₁, G₂ ~ Gamma(α), loop-free. → () float32"""
    k1, k2 = jax.random.split(key)
    return jax.nn.sigmoid(log_gamma(k1, alpha) - log_gamma(k2, alpha))


def _mixup_beta(rng, images, targets, alpha):
    lam = beta(rng, alpha)
    mixed = lam.astype(images.dtype) * images + (1.0 - lam.astype(images.dtype)) * images[::-1]
    return mixed, _mix_targets(targets, targets[::-1], jnp.full(images.shape[:1], lam))


def _cutmix_beta(rng, images, targets, alpha):
    k_lam, k_y, k_x = jax.random.split(rng, 3)
    b, h, w = images.shape[:3]
    cut = jnp.sqrt(1.0 - beta(k_lam, alpha))
    cut_h, cut_w = (cut * h).astype(jnp.int32), (cut * w).astype(jnp.int32)
    cy, cx = jax.random.randint(k_y, (), 0, h), jax.random.randint(k_x, (), 0, w)
    y1, y2 = jnp.clip(cy - cut_h // 2, 0, h), jnp.clip(cy + cut_h // 2, 0, h)
    x1, x2 = jnp.clip(cx - cut_w // 2, 0, w), jnp.clip(cx + cut_w // 2, 0, w)
    paste = _box_mask(h, w, y1, x1, y2 - y1, x2 - x1)[..., None]
    mixed = jnp.where(paste, images[::-1], images)
    lam = 1.0 - ((y2 - y1) * (x2 - x1)).astype(jnp.float32) / (h * w)
    return mixed, _mix_targets(targets, targets[::-1], jnp.full((b,), lam))


_SAMPLERS = {"nest": (_mixup_nest, _cutmix_nest), "beta": (_mixup_beta, _cutmix_beta)}


def mix_batch(
    rng: jax.Array,
    images: jax.Array,
    labels: jax.Array,
    *,
    num_classes: int,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    switch_prob: float = 0.5,
    label_smoothing: float = 0.0,
    sampling: str = "nest",
):
    """images (B, H, W, C), labels (B,) int → (mixed images (B, H, W, C), targets (B, K) float32).

    All keyword arguments are static (Python numbers / strings); jittable and deterministic in
    `rng` (fold it from the step). With both alphas 0 only label smoothing is applied."""
    if sampling not in _SAMPLERS:
        raise ValueError(f"sampling={sampling!r}; expected 'nest' or 'beta'")
    mixup, cutmix = _SAMPLERS[sampling]
    targets = smooth_one_hot(labels, num_classes, label_smoothing)
    k_switch, k_mix = jax.random.split(rng)
    if mixup_alpha > 0 and cutmix_alpha > 0:
        # Both branches are computed and one is selected: a `lax.cond` on a traced predicate makes
        # GPUs copy the predicate to the host and wait for it inside every step, while the two
        # branches cost a few elementwise passes over the batch. Same key, same result as a cond.
        use_cutmix = jax.random.uniform(k_switch) < switch_prob
        cut_images, cut_targets = cutmix(k_mix, images, targets, cutmix_alpha)
        mix_images, mix_targets = mixup(k_mix, images, targets, mixup_alpha)
        return (jnp.where(use_cutmix, cut_images, mix_images), jnp.where(use_cutmix, cut_targets, mix_targets))
    if cutmix_alpha > 0:
        return cutmix(k_mix, images, targets, cutmix_alpha)
    if mixup_alpha > 0:
        return mixup(k_mix, images, targets, mixup_alpha)
    return images, targets
