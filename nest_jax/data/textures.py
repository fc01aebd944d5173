"""Procedural two-colour textures for the shapes × textures world (`nest_jax.data.shapes`).

Texture k (0 ≤ k < 20) is a binary pattern (stripes, checks, dots, rings, bricks, plaid, speckle,
…) painted in a colour pair; textures 0-9 and 10-19 use different pattern families, so no two
textures share both pattern and colours. Every texture has a random phase (drawn from the caller's
generator), so the same texture never appears twice pixel for pixel: the cue is the pattern, not a
template. Pure NumPy; values in [0, 1].
"""

from __future__ import annotations

import numpy as np

NUM_TEXTURES = 20
# Colours (RGB in [0, 1]); distinct hues so that texture is an easy cue.
PALETTE = (
    (0.9, 0.2, 0.2),
    (0.2, 0.3, 0.9),
    (0.95, 0.8, 0.1),
    (0.1, 0.7, 0.3),
    (0.8, 0.3, 0.9),
    (0.1, 0.8, 0.85),
    (0.95, 0.5, 0.1),
    (0.5, 0.3, 0.1),
    (0.95, 0.95, 0.95),
    (0.05, 0.05, 0.05),
)


def _pattern(k: int, y: np.ndarray, x: np.ndarray, size: int, p: float, rng) -> np.ndarray:
    """Binary pattern of texture k. 0-9: stripes (3 orientations), checks, dots, rings, grid, waves,
    noise; 10-19: fine stripes, nested squares, zigzag, bricks, offset dots, plaid, sawtooth, fine
    checks, wavy columns, speckle. Only the noise patterns draw from `rng`."""
    patterns = (
        lambda: np.sin(2 * np.pi * y / p) > 0,
        lambda: np.sin(2 * np.pi * x / p) > 0,
        lambda: np.sin(2 * np.pi * (x + y) / (p * 1.4)) > 0,
        lambda: (np.floor(y / (p / 2)) + np.floor(x / (p / 2))) % 2 == 0,
        lambda: np.hypot((y % p) - p / 2, (x % p) - p / 2) < p / 3.5,
        lambda: np.sin(2 * np.pi * (x - y) / (p * 1.4)) > 0,
        lambda: np.sin(2 * np.pi * np.hypot(y - size / 2, x - size / 2) / p) > 0,
        lambda: (np.abs((y % p) - p / 2) < 0.6) | (np.abs((x % p) - p / 2) < 0.6),
        lambda: np.sin(2 * np.pi * y / p + 2.0 * np.sin(2 * np.pi * x / p)) > 0,
        lambda: rng.random((size // 2 + 1, size // 2 + 1)).repeat(2, 0).repeat(2, 1)[:size, :size] > 0.5,
        lambda: np.sin(4 * np.pi * y / p) > 0,
        lambda: np.floor(np.maximum(np.abs(y - size / 2), np.abs(x - size / 2)) / (p / 2)) % 2 == 0,
        lambda: ((y + np.abs((x % p) - p / 2)) % p) < p / 2,
        lambda: ((y % (p / 2)) > 1.0) & (((x + np.floor(y / (p / 2)) * p / 2) % p) > 1.0),
        lambda: np.hypot((y % p) - p / 2, ((x + np.floor(y / p) * p / 2) % p) - p / 2) < p / 4,
        lambda: (np.sin(2 * np.pi * x / p) > 0.5) ^ (np.sin(2 * np.pi * y / p) > 0.5),
        lambda: (x % p) > (y % p),
        lambda: (np.floor(y / (p / 4)) + np.floor(x / (p / 4))) % 2 == 0,
        lambda: np.sin(2 * np.pi * x / p + 2.0 * np.sin(2 * np.pi * y / p)) > 0,
        lambda: rng.random((size, size)) > 0.6,
    )
    return patterns[k]()


def texture(k: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Texture k as (size, size, 3) floats in [0, 1]: its pattern in its colour pair, random phase."""
    if not 0 <= k < NUM_TEXTURES:
        raise ValueError(f"texture index must be in 0..{NUM_TEXTURES - 1}, got {k}")
    y, x = np.mgrid[:size, :size].astype(np.float64)
    period = max(size / 8.0, 3.0)
    py, px = rng.uniform(0, period, 2)
    y, x = y + py, x + px
    f = _pattern(k, y, x, size, period, rng)
    i1, i2 = (k, k * 3 + 5) if k < 10 else (k + 3, k * 7 + 2)  # the colour pair's palette entries
    c1 = np.asarray(PALETTE[i1 % len(PALETTE)])
    c2 = np.asarray(PALETTE[i2 % len(PALETTE)]) * 0.5 + 0.25
    return np.where(f[..., None], c1, c2)


def clutter_background(size: int, rng: np.random.Generator, num_blobs: int) -> np.ndarray:
    """A cluttered background (size, size, 3): smooth low-frequency luminance and colour variation,
    pixel noise, and `num_blobs` small ellipses each filled with a random, half-desaturated texture
    (distractors that belong to no class: their texture is random, their shape an ellipse)."""
    coarse = rng.normal(0.0, 0.12, (5, 5, 3))
    w = np.stack([np.interp(np.linspace(0, 4, size), np.arange(5), np.eye(5)[j]) for j in range(5)], 1)  # (size, 5)
    smooth = np.einsum("ai,bj,ijc->abc", w, w, coarse)  # bilinear upsampling of the coarse grid
    img = 0.5 + smooth + rng.normal(0.0, 0.04, (size, size, 1))
    y, x = np.mgrid[:size, :size].astype(np.float64) + 0.5
    for _ in range(num_blobs):
        ry, rx = rng.uniform(0.05, 0.13, 2) * size
        cy, cx = rng.uniform(0, size, 2)
        a = rng.uniform(0, np.pi)
        dy, dx = y - cy, x - cx
        u, v = np.cos(a) * dx + np.sin(a) * dy, -np.sin(a) * dx + np.cos(a) * dy
        blob = (u / rx) ** 2 + (v / ry) ** 2 <= 1.0
        t = texture(int(rng.integers(NUM_TEXTURES)), size, rng)
        t = 0.5 * t + 0.5 * t.mean(-1, keepdims=True)
        img = np.where(blob[..., None], t, img)
    return np.clip(img, 0.0, 1.0)
