"""NesT blocks: blockify / deblockify and block aggregation (conv 3×3 → LayerNorm → max-pool 3×3/2).

Vocabulary: a *block* is one square region of b×b tokens; blocks and the tokens inside each block
are in raster order (row-major), as in the official code and timm.
"""

from __future__ import annotations

import math

import jax
from flax import nnx

from nest_jax.models import layers as L

Array = jax.Array
POOL_PADDINGS = ("tf_same", "symmetric")


def check_levels(config) -> None:
    """A frozen NesT (or NesT generator) config's per-level `dims`, `depths`, `heads` become int
    tuples of one length, each width divisible by its heads; ValueError otherwise."""
    for name in ("dims", "depths", "heads"):
        object.__setattr__(config, name, tuple(int(v) for v in getattr(config, name)))
    if not len(config.dims) == len(config.depths) == len(config.heads):
        raise ValueError(f"dims {config.dims}, depths {config.depths}, heads {config.heads}: one entry per level each")
    for d, h in zip(config.dims, config.heads):
        if d % h:
            raise ValueError(f"width {d} is not divisible by {h} heads")


def blockify(x: Array, block_size: int) -> Array:
    """Image to blocks. x: (B, H, W, C) -> (B, T, N, C), T = (H/b)(W/b), N = b·b."""
    b_, h, w, c = x.shape
    b = block_size
    if h % b or w % b:
        raise ValueError(f"block_size {b} must divide the feature map {h}×{w}")
    x = x.reshape(b_, h // b, b, w // b, b, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b_, (h // b) * (w // b), b * b, c)


def deblockify(x: Array, grid: int | tuple[int, int]) -> Array:
    """Blocks to image, the exact inverse of `blockify`. x: (B, T, N, C) -> (B, gh·b, gw·b, C).

    `grid` is the number of blocks per side (gh, gw) (an int for a square grid); b = sqrt(N).
    """
    gh, gw = L.to_hw(grid)
    b_, t, n, c = x.shape
    b = math.isqrt(n)
    if gh * gw != t or b * b != n:
        raise ValueError(f"cannot deblockify (B, T={t}, N={n}, C) onto a {gh}×{gw} grid of square blocks")
    x = x.reshape(b_, gh, gw, b, b, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b_, gh * b, gw * b, c)


def max_pool_3x3_s2(x: Array, padding: str = "tf_same") -> Array:
    """Max-pool 3×3 stride 2 with −inf padding. x: (B, H, W, C) -> (B, H', W', C); H' = H/2 on even H.

    `tf_same` (TensorFlow / flax `padding="SAME"`): output ceil(size/stride), the total padding
    split with the extra element AFTER — on an even input: (0, 1), bottom/right only.
    `symmetric` (PyTorch MaxPool2d(3, 2, padding=1), timm's non-`_jx` NesT): (1, 1).
    """
    pads = {"tf_same": "SAME", "symmetric": ((1, 1), (1, 1))}
    if padding not in pads:
        raise ValueError(f"pool_padding must be one of {POOL_PADDINGS}, got {padding!r}")
    return nnx.max_pool(x, (3, 3), strides=(2, 2), padding=pads[padding])


class BlockAggregation(nnx.Module):
    """Merges each 2×2 group of blocks into one: conv 3×3 (SAME, bias) → LayerNorm → max-pool 3×3/2.

    Works on the deblockified map: x (B, H, W, C_in) -> (B, H/2, W/2, C_out). The conv changes the
    width; the pool halves the resolution, so with a fixed block edge the block grid halves.
    """

    def __init__(self, in_dim: int, out_dim: int, *, padding: str = "tf_same", kernel_init=L.trunc_normal_02, **kw):
        """kw: `rngs`, `dtype`, `param_dtype` of the conv and the norm. `padding`: see `max_pool_3x3_s2`."""
        self.padding = padding
        # Stride 1, kernel 3: SAME is a symmetric pad of 1 in flax, TF and PyTorch alike.
        self.conv = L.conv(in_dim, out_dim, 3, padding="SAME", kernel_init=kernel_init, **kw)
        self.norm = L.layer_norm(out_dim, **kw)

    def __call__(self, x: Array) -> Array:
        if x.shape[1] % 2 or x.shape[2] % 2:
            raise ValueError(f"block aggregation needs an even feature map, got {x.shape[1]}×{x.shape[2]}")
        return max_pool_3x3_s2(self.norm(self.conv(x)), self.padding)
