"""Object segmentation from a ViT's last-layer attention (Naseer et al. 2021, §3.3 and Table 3:
"shape-biased ViT offers automated object segmentation"; thresholding after Caron et al. 2021,
DINO, §4.2.1 / Fig. 3).

For a prefix token (class or shape token) the last layer's attention from that token to the
patch tokens is, per image and head, a distribution over the grid (prefix keys are dropped; the
rest is renormalized). The mask keeps the patches holding the top `fraction` of that mass: sort
the attention ascending, cumulate, keep every patch whose cumulative mass exceeds 1 − fraction
(DINO's `th_attn = cumval > 1 - threshold`). With `heads="mean"` the heads' attentions are
averaged first (one mask per image); `heads="each"` gives one mask per head. The patch mask is
upsampled to pixels by nearest neighbour (each patch → its patch_size × patch_size pixels) and
compared with the ground-truth object mask by the Jaccard index |P ∩ G| / |P ∪ G| (1 when both are
empty), averaged over images.

Shapes: attention (B, h, T, T) with T = num_prefix + gh·gw; masks (B, H, W) bool.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

from nest_jax.analysis.forward import normalize
from nest_jax.analysis.occlusion import mass_mask
from nest_jax.analysis.shape_bias import shapes_world_images
from nest_jax.errors import UserError
from nest_jax.train.evaluators import EvalData, register_evaluator
from nest_jax.viz.segmentation import plot_segmentation

HEAD_MODES = ("mean", "each")


def token_attention(weights, token_index: int, num_prefix: int) -> np.ndarray:
    """Attention of prefix token `token_index` to the patches, rows summing to 1: (B, h, N)."""
    a = np.asarray(weights, np.float64)[:, :, token_index, num_prefix:]
    return a / np.maximum(a.sum(-1, keepdims=True), np.finfo(np.float64).tiny)


def keep_mass(attention: np.ndarray, fraction: float) -> np.ndarray:
    """DINO's threshold: True on the patches holding the top `fraction` of the mass (the rule of
    salient PatchDrop, `occlusion.mass_mask`). attention (..., N) non-negative -> bool (..., N)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    a = np.asarray(attention, np.float32)
    return np.asarray(mass_mask(jnp.asarray(a.reshape(-1, a.shape[-1])), float(fraction))).reshape(a.shape)


def upsample(mask: np.ndarray, grid_hw: tuple[int, int], patch_size: int) -> np.ndarray:
    """Patch masks (..., gh·gw) -> pixel masks (..., gh·p, gw·p) (nearest neighbour)."""
    gh, gw = grid_hw
    m = np.asarray(mask).reshape(*mask.shape[:-1], gh, gw)
    return np.repeat(np.repeat(m, patch_size, -2), patch_size, -1)


def jaccard(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-image Jaccard index of bool masks (..., H, W) -> (...); 1 where both are empty."""
    p, t = np.asarray(pred, bool), np.asarray(truth, bool)
    inter = (p & t).sum((-2, -1))
    union = (p | t).sum((-2, -1))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def attention_masks(
    weights, token_index: int, num_prefix: int, grid_hw, patch_size: int, fraction: float = 0.6, heads: str = "mean"
) -> np.ndarray:
    """Pixel masks from one layer's attention: (B, H, W) with heads="mean", (B, h, H, W) with "each"."""
    if heads not in HEAD_MODES:
        raise ValueError(f"heads must be one of {HEAD_MODES}, got {heads!r}")
    a = token_attention(weights, token_index, num_prefix)
    if a.shape[-1] != grid_hw[0] * grid_hw[1]:
        raise ValueError(f"attention over {a.shape[-1]} patches does not match a {grid_hw[0]}×{grid_hw[1]} grid")
    if heads == "mean":
        a = a.mean(1)
    return upsample(keep_mass(a, fraction), grid_hw, patch_size)


@nnx.jit(static_argnames=("mean", "std"))
def last_layer_attention(model, images, *, mean: tuple, std: tuple):
    """The last layer's attention weights (B, h, T, T) of images (B, H, W, C) in [0, 1]."""
    return model(normalize(images, mean, std), train=False, capture=("attention",))[1]["attention"][-1]


def run_segmentation(
    model,
    images: np.ndarray,
    masks: np.ndarray,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    tokens: Sequence[str] = ("cls", "shape"),
    fraction: float = 0.6,
    batch_size: int = 64,
    num_examples: int = 6,
) -> dict:
    """Jaccard index of last-layer attention masks against object masks, per prefix token.

    model: a ViT/DeiT (`config.prefix_tokens`); images (N, H, W, C) in [0, 1]; masks (N, H, W) bool.
    Tokens the model lacks are left out. Returns {"jaccard_<token>": mean, "jaccard_<token>_heads":
    (h,) per head, "examples": {"image", "truth", "<token>" masks} of the first `num_examples`}.
    """
    cfg = model.config
    present = [t for t in tokens if t in getattr(cfg, "prefix_tokens", ())]
    if not present:
        raise UserError(
            f"segmentation needs a ViT/DeiT with one of the prefix tokens {list(tokens)}; "
            f"{type(model).__name__} has {list(getattr(cfg, 'prefix_tokens', ()))}"
        )
    h, w = images.shape[1:3]
    gh, gw = cfg.grid
    if (gh * cfg.stride, gw * cfg.stride) != (h, w):
        raise UserError(f"segmentation: images are {h}×{w} but the model's grid covers {gh * cfg.stride}² pixels")
    per_mean, per_head, first = ({t: [] for t in present} for _ in range(3))
    geometry = (cfg.num_prefix, (gh, gw), cfg.stride, fraction)
    for s in range(0, len(images), batch_size):
        x = jnp.asarray(images[s : s + batch_size], jnp.float32)
        att = np.asarray(last_layer_attention(model, x, mean=tuple(mean), std=tuple(std)))
        truth = masks[s : s + batch_size]
        for t in present:
            masks_of = lambda heads: attention_masks(att, cfg.token_index(t), *geometry, heads)
            m = masks_of("mean")
            per_mean[t].append(jaccard(m, truth))
            per_head[t].append(jaccard(masks_of("each"), truth[:, None]))
            first[t].append(m[: max(0, num_examples - s)])
    out: dict = {"fraction": float(fraction), "examples_count": len(images)}
    ex = {"image": np.asarray(images[:num_examples], np.float32), "truth": np.asarray(masks[:num_examples])}
    for t in present:
        out[f"jaccard_{t}"] = float(np.concatenate(per_mean[t]).mean())
        out[f"jaccard_{t}_heads"] = np.concatenate(per_head[t]).mean(0)
        ex[t] = np.concatenate(first[t])[:num_examples]
    out["examples"] = ex
    return out


@register_evaluator("segmentation")
class Segmentation:
    """Jaccard index of class/shape-token attention masks against the object masks of the
    procedural shapes world (the run's world settings, `variant` images of the test split)."""

    def __init__(
        self,
        model_fn: Callable,
        data: EvalData,
        *,
        fraction: float = 0.6,
        num_images: int = 128,
        variant: str = "natural",
        tokens: tuple[str, ...] = ("cls", "shape"),
        batch_size: int = 64,
    ):
        if data.dataset.name != "shapes":
            raise UserError("segmentation needs object masks: a config whose dataset.name is 'shapes'")
        if not 0.0 < fraction <= 1.0 or num_images < 1:
            raise UserError(f"segmentation: need 0 < fraction <= 1 and num_images >= 1, got {fraction}, {num_images}")
        self.model_fn, self.data, self.fraction, self.num_images = model_fn, data, float(fraction), int(num_images)
        self.variant, self.tokens, self.batch_size = variant, tuple(tokens), int(batch_size)

    def stimuli(self) -> tuple[np.ndarray, np.ndarray]:
        images, a = shapes_world_images(self.data, self.variant, self.num_images, masks=True)
        return images, a["mask"]

    def run(self, state: dict, step: int) -> dict:
        images, masks = self.stimuli()
        kw = dict(mean=self.data.mean, std=self.data.std, tokens=self.tokens, fraction=self.fraction)
        return run_segmentation(self.model_fn(state), images, masks, batch_size=self.batch_size, **kw)

    def figures(self, results: dict) -> dict:
        return {f"segmentation_{k}": plot_segmentation(r) for k, r in results.items() if "examples" in r}
