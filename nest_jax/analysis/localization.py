"""Spatial localization of final-layer tokens (Raghu et al. 2021, §6, Fig. 11).

For a final-layer spatial token at grid position (i, j), the map is the CKA, over images, between
that token's representation and the input patch representation at every position (k, l): the
embedded patches entering the first layer (patch embedding + position embedding; the position
embedding is the same for every image, so centring removes it and the comparison is about image
content). A token that stays localized is most similar to its own input patch.

The CKA is the unbiased minibatch estimator (`nest_jax.analysis.cka.MinibatchCKA`) with one
"layer" per token position: `LocalizationCKA.update(inter)` per batch, `result()` ->
(gh, gw, gh, gw) with [i, j] the map of the token at (i, j).
"""

from __future__ import annotations

import numpy as np

from nest_jax.analysis.cka import MinibatchCKA


class LocalizationCKA:
    """Accumulates the (N, N) token-position CKA between final-layer and input patch tokens."""

    def __init__(self, grid_hw: tuple[int, int], num_prefix: int = 0):
        self.grid_hw, self.num_prefix = tuple(grid_hw), num_prefix
        n = grid_hw[0] * grid_hw[1]
        self.acc = MinibatchCKA(n, n)

    def update(self, inter: dict) -> None:
        if not inter.get("attn_in") or not inter.get("layers"):
            raise ValueError("localization needs a transformer captured with ('layers', 'residuals')")
        # input patch tokens and final-layer tokens, each (B, N, D), spatial tokens only (ViT)
        patches, final = inter["attn_in"][0][:, self.num_prefix :], inter["layers"][-1][:, self.num_prefix :]
        n = final.shape[1]
        self.acc.update([final[:, i] for i in range(n)], [patches[:, i] for i in range(n)])

    def result(self) -> np.ndarray:
        gh, gw = self.grid_hw
        return self.acc.result().reshape(gh, gw, gh, gw)


def localization_score(maps: np.ndarray) -> float:
    """Fraction of positions whose most similar input patch is their own: maps (gh, gw, gh, gw)."""
    gh, gw = maps.shape[:2]
    flat = maps.reshape(gh * gw, gh * gw)
    return float(np.mean(np.argmax(flat, 1) == np.arange(gh * gw)))
