"""Class activation maps (CAM, Zhou et al. 2016) for NesT, and weakly-supervised localization.

NesT's head is LayerNorm → mean over tokens → Dense, so with F = LN(A_top) — the top level's output
map AFTER the final LayerNorm `model.norm`, shape (B, H_top, W_top, C) — the logit is

    Y_c = (1/N) Σ_{x,y} Σ_k W[k, c] F_k(x, y) + b_c,   N = H_top·W_top tokens,

and CAM_c(x, y) = Σ_k W[k, c] F_k(x, y) (no bias) decomposes it exactly: mean(CAM_c) + b_c = Y_c.
(Using the map BEFORE the LayerNorm would break that identity: the norm is not linear.)
The CAM lives on the top level's token grid (14×14 for nest_tiny at 224, 4×4 for the CIFAR NesT);
it is upsampled to the image bilinearly (`jax.image.resize`, half-pixel centres).

Localization follows the CAM paper's recipe: normalize the map to [0, 1] (min–max), keep pixels at
or above `threshold`, take the bounding box of the largest 8-connected component (`mode="largest"`)
or of all kept pixels (`mode="tight"`). Boxes are (y0, x0, y1, x1), half-open, in pixels.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from scipy import ndimage

Array = jax.Array


@flax.struct.dataclass
class CAMResult:
    """target (B,), logits (B, classes), cam (B, H_top, W_top) on the token grid, upsampled (B, H, W)."""

    target: Array
    logits: Array
    cam: Array
    upsampled: Array


@nnx.jit
def class_activation_map(model, images: Array, *, target: Array | None = None) -> CAMResult:
    """CAM of class `target` (B,) (None = predicted class).  images: (B, H, W, 3) -> CAMResult."""
    logits, inter = model(images, train=False, capture=("features",))
    c = jnp.argmax(logits, -1) if target is None else target
    f = model.norm(inter["features"][-1])  # (B, h, w, C): exactly what the head averages
    w = model.head.kernel[...][:, c].T  # (B, C)
    cam = jnp.einsum("bhwk,bk->bhw", f, w)
    up = jax.image.resize(cam, (cam.shape[0], *images.shape[1:3]), "bilinear")
    return CAMResult(target=c, logits=logits, cam=cam, upsampled=up)


def box_from_cam(cam: np.ndarray, threshold: float = 0.2, mode: str = "largest") -> tuple[int, int, int, int]:
    """Bounding box (y0, x0, y1, x1) of a CAM's high region.  cam: (H, W).

    The map is min–max normalized; pixels ≥ `threshold` are kept (0.2 as in Zhou et al. 2016; 0.5 is
    stricter). mode "largest": box of the largest 8-connected component of kept pixels (the CAM
    paper); "tight": box of all kept pixels. A constant map gives the whole image.
    """
    cam = np.asarray(cam, np.float64)
    lo, hi = cam.min(), cam.max()
    if hi - lo <= 0:
        return 0, 0, cam.shape[0], cam.shape[1]
    mask = (cam - lo) / (hi - lo) >= threshold
    if mode == "largest":
        labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
        sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
        mask = labels == 1 + int(np.argmax(sizes))
    elif mode != "tight":
        raise ValueError(f"mode must be 'largest' or 'tight', got {mode!r}")
    rows, cols = np.nonzero(mask)
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


def box_iou(a, b) -> np.ndarray:
    """Intersection over union of half-open boxes (..., 4) = (y0, x0, y1, x1); broadcasts."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    inter_h = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    inter_w = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = inter_h * inter_w
    area = lambda z: np.clip(z[..., 2] - z[..., 0], 0, None) * np.clip(z[..., 3] - z[..., 1], 0, None)
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
