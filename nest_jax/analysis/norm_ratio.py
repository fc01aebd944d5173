"""Ratio of norms ‖z‖ / ‖f(z)‖ of the residual stream and its branch (Raghu et al. 2021, §5, Fig. 8).

For every sub-layer z ← z + f(z), with z the residual stream entering it and f(z) the attention or
MLP branch output (ResNets: the shortcut and the residual branch of each block), the L2 norm over
the channel axis is taken per token. The ratio reported is

    ratio = mean_tokens,images ‖z‖ / mean_tokens,images ‖f(z)‖

(a ratio of mean norms, so one token with a vanishing branch cannot dominate; a branch that is
exactly zero everywhere gives +inf). It is reported separately for each prefix token (`cls`, …)
and for the spatial tokens. Large ratios mean the skip connection dominates: the layer changes its
input little. `NormSums` accumulates the two means over batches.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def _token_norms(h: Array, family: str, prefix: int) -> dict[str, Array]:
    """h (B, P+N, D) | (B, T, N, C) | (B, h, w, C) -> {group: per-token L2 norms over channels}."""
    norms = jnp.linalg.norm(h.astype(jnp.float32), axis=-1)
    if family != "vit":
        return {"spatial": norms}
    return {**{f"token{i}": norms[:, i] for i in range(prefix)}, "spatial": norms[:, prefix:]}


def norm_sums(inter: dict, family: str, prefix: int, token_names: tuple[str, ...] = ()) -> dict[str, Array]:
    """One batch's sums of ‖z‖ and ‖f(z)‖: {f"{branch}/{group}": (layers, 2) [Σ‖z‖, Σ‖f(z)‖]} and
    {f"count/{group}": tokens per layer}. branch ∈ {attn, mlp} (transformers) or {block} (ResNets)."""
    pairs = (
        [("block", "block_in", "block_branch")]
        if family == "resnet"
        else [("attn", "attn_in", "attn_branch"), ("mlp", "mlp_in", "mlp_branch")]
    )
    names = {f"token{i}": n for i, n in enumerate(token_names)}
    out, counts = {}, {}
    for branch, zk, fk in pairs:
        rows: dict[str, list] = {}
        for z, f in zip(inter[zk], inter[fk]):
            nz, nf = _token_norms(z, family, prefix), _token_norms(f, family, prefix)
            for g in nz:
                rows.setdefault(names.get(g, g), []).append(jnp.stack([nz[g].sum(), nf[g].sum()]))
                counts[f"count/{names.get(g, g)}"] = jnp.asarray(nz[g].size, jnp.float32)
        out.update({f"{branch}/{g}": jnp.stack(v) for g, v in rows.items()})
    out.update(counts)
    return out


class NormSums:
    """Accumulates `norm_sums` over batches (float64 on the host); `ratios()` -> {key: (layers,)}."""

    def __init__(self):
        self.sums: dict[str, np.ndarray] = {}

    def update(self, sums: dict) -> None:
        for k, v in jax.device_get(sums).items():
            self.sums[k] = self.sums.get(k, 0.0) + np.asarray(v, np.float64)

    def ratios(self) -> dict[str, np.ndarray]:
        out = {}
        for k, v in self.sums.items():
            if k.startswith("count/"):
                continue
            with np.errstate(divide="ignore", invalid="ignore"):
                out[k] = np.where(v[:, 1] > 0, v[:, 0] / np.where(v[:, 1] > 0, v[:, 1], 1.0), np.inf)
        return out


def norm_ratios(inter: dict, family: str, prefix: int = 0, token_names: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """‖z‖/‖f(z)‖ per layer of one batch's intermediates (captured with `residuals`).

    Returns {f"{branch}/{group}": (layers,)}, branch ∈ {attn, mlp} | {block}, group ∈ prefix token
    names (`cls`, …) and `spatial`.
    """
    acc = NormSums()
    acc.update(norm_sums(inter, family, prefix, token_names))
    return acc.ratios()
