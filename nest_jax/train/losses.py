"""Classification and DeiT distillation losses (Touvron et al. 2021; docs/recipes.md). All losses are computed in float32.

Distillation, with student logits per prefix token (s_cls, s_dist, s_shape), soft/smoothed/mixed
targets y, a frozen teacher per distilled token t ∈ T and the heads without a teacher U:

    L = (1 − Σ_{t∈T} α_t) · (1/|U|) Σ_{u∈U} CE(s_u, y) + Σ_{t∈T} α_t · L_kd(s_t, teacher_t)

One teacher on `dist` (U = {cls}): the DeiT formula (1 − α)·CE(s_cls, y) + α·L_kd(s_dist).
Three heads, teachers on `dist` (α₁) and `shape` (α₂): (1 − α₁ − α₂)·CE(s_cls, y) + α₁·L_kd,dist +
α₂·L_kd,shape. No teacher at all: the mean CE of every head. The labels keep weight 1 − Σα however
many heads learn them, so adding a teacher never changes the weight of another.
  hard: L_kd = CE(s_t, argmax teacher) — the teacher's label is not smoothed.
  soft: L_kd = τ² · KL(softmax(teacher/τ) ‖ softmax(s_t/τ)).
KL normalization: by default (`kl_reduction="batchmean"`) the KL is summed over classes and
averaged over the batch — a true per-example KL. DeiT's reference code divides the summed KL by
batch × classes instead (`kl_reduction="deit"`), which is the batchmean value / num_classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array


def softmax_cross_entropy(logits: Array, targets: Array) -> Array:
    """logits (B, K), targets (B, K) rows summing to 1 -> per-example loss (B,)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.sum(targets.astype(jnp.float32) * logp, axis=-1)


def soft_distillation(student: Array, teacher: Array, tau: float, reduction: str = "batchmean") -> Array:
    """τ² · KL(softmax(t/τ) ‖ softmax(s/τ)), a scalar. student, teacher: (B, K)."""
    s = jax.nn.log_softmax(student.astype(jnp.float32) / tau, axis=-1)
    t = jax.nn.log_softmax(teacher.astype(jnp.float32) / tau, axis=-1)
    kl = jnp.sum(jnp.exp(t) * (t - s), axis=-1)  # (B,)
    if reduction == "batchmean":
        return kl.mean() * tau**2
    if reduction == "deit":
        return kl.mean() / student.shape[-1] * tau**2
    raise ValueError(f"kl_reduction must be 'batchmean' or 'deit', got {reduction!r}")


def hard_distillation(student: Array, teacher: Array) -> Array:
    """CE(s, argmax t), a scalar. student, teacher: (B, K)."""
    labels = jax.nn.one_hot(jnp.argmax(teacher, axis=-1), student.shape[-1])
    return softmax_cross_entropy(student, labels).mean()


def classification_loss(
    outputs: Array | Mapping[str, Array],
    targets: Array,
    *,
    teachers: Mapping[str, tuple[Array, Any]] | None = None,
    kl_reduction: str = "batchmean",
) -> tuple[Array, Array]:
    """Training loss and the logits used for the accuracy metric.

    outputs: logits (B, K), or a dict token name -> logits (a ViT/DeiT with several prefix tokens:
      its `capture="heads"`). teachers: token name -> (teacher logits (B, K), cfg with kind/alpha/tau).
    Returns (scalar loss, logits (B, K) the model would predict with at inference: the mean of the
    heads' raw logits).
    """
    teachers = dict(teachers or {})
    if not isinstance(outputs, Mapping):
        if teachers:
            raise ValueError(
                f"distillation teachers {sorted(teachers)} configured, but the model has "
                "no distillation/shape token (use a *_distilled model)"
            )
        return softmax_cross_entropy(outputs, targets).mean(), outputs
    if unknown := set(teachers) - set(outputs):
        raise ValueError(f"teachers for tokens {sorted(unknown)}, but the model's tokens are {sorted(outputs)}")
    alpha_total = sum(float(cfg.alpha) for _, cfg in teachers.values())
    label_heads = [name for name in outputs if name not in teachers]
    if not label_heads:
        raise ValueError(f"every head {sorted(outputs)} has a teacher; at least one must learn the labels")
    terms = []
    for name, logits in outputs.items():
        if name in teachers:
            t_logits, cfg = teachers[name]
            t_logits = jax.lax.stop_gradient(t_logits)
            if cfg.kind == "hard":
                kd = hard_distillation(logits, t_logits)
            elif cfg.kind == "soft":
                kd = soft_distillation(logits, t_logits, float(cfg.tau), kl_reduction)
            else:
                raise ValueError(f"distillation kind must be 'hard' or 'soft', got {cfg.kind!r}")
            terms.append(float(cfg.alpha) * kd)
        else:
            terms.append((1.0 - alpha_total) / len(label_heads) * softmax_cross_entropy(logits, targets).mean())
    return sum(terms), sum(outputs.values()) / len(outputs)


def eval_metrics(logits: Array, labels: Array, mask: Array) -> dict[str, Array]:
    """Masked sums over the batch: loss, top-1 and top-5 correct, count. logits (B, K), labels (B,)."""
    logits = logits.astype(jnp.float32)
    mask = mask.astype(jnp.float32)
    loss = softmax_cross_entropy(logits, jax.nn.one_hot(labels, logits.shape[-1]))
    topk = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
    top1 = (topk[:, 0] == labels).astype(jnp.float32)
    top5 = jnp.any(topk == labels[:, None], axis=-1).astype(jnp.float32)
    sums = {name: jnp.sum(v * mask) for name, v in (("loss", loss), ("top1", top1), ("top5", top5))}
    return sums | {"count": jnp.sum(mask)}
