"""Batched image operations the corruptions are built from (pure JAX, static shapes, jit-able).

Images are x: (B, H, W, C) float in [0, 1]. Each operation reproduces the exact arithmetic of the
library the published ImageNet-C code called (scipy.ndimage, OpenCV, Pillow), so that the
corruptions built on them match that code where it is deterministic:

- `gaussian_blur`: scipy.ndimage.gaussian_filter (kernel radius int(truncate·σ + 0.5), weights
  exp(−t²/2σ²) normalized), with scipy's boundary modes;
- `filter2d`: OpenCV's `filter2D` (correlation, BORDER_REFLECT_101);
- `clipped_zoom`: centre crop of ceil(n/z) pixels, `scipy.ndimage.zoom(order=1)` (corner-aligned
  linear resampling to round(crop·z) pixels), cropped back to n — as two-tap gathers per axis;
- `line_shift_blur`: the motion-blur kernel of the `imagecorruptions` package (Michaelis et al.
  2019): a one-sided Gaussian-weighted average of copies of the image shifted along a line at a
  given angle, borders replicated, stopping once a shift leaves the image;
- `pil_box_matrix` / `pil_nearest_matrix`: Pillow's BOX and NEAREST resize coefficients.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
# scipy.ndimage boundary mode -> numpy.pad mode.
SCIPY_PAD = {"nearest": "edge", "reflect": "symmetric", "mirror": "reflect", "constant": "constant", "wrap": "wrap"}


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """scipy.ndimage's 1-D Gaussian weights: radius int(truncate·σ + 0.5), normalized to sum 1."""
    radius = int(truncate * float(sigma) + 0.5)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * t**2 / float(sigma) ** 2)
    return w / w.sum()


def gaussian_blur(
    x: Array, sigma: float | tuple[float, float], *, truncate: float = 4.0, mode: str = "nearest"
) -> Array:
    """scipy.ndimage.gaussian_filter over H and W only (skimage's `gaussian` with channels last).

    sigma: one value or (σ_rows, σ_cols). mode: scipy's boundary mode (skimage's default "nearest").
    """
    for axis, s in zip((1, 2), (sigma, sigma) if np.isscalar(sigma) else sigma):  # correlate rows, then columns
        w = gaussian_kernel1d(s, truncate)
        r, n = (len(w) - 1) // 2, x.shape[axis]
        xp = jnp.pad(x, [(r, r) if a == axis else (0, 0) for a in range(x.ndim)], mode=SCIPY_PAD[mode])
        x = 0.0
        for i, wi in enumerate(w):  # a short static loop: XLA fuses it into one pass
            x = x + float(wi) * jax.lax.slice_in_dim(xp, i, i + n, axis=axis)
    return x


def filter2d(x: Array, kernel: np.ndarray) -> Array:
    """OpenCV `filter2D` (correlation, centre anchor, BORDER_REFLECT_101) per channel.

    x: (B, H, W, C); kernel: (kh, kw) with odd sides. Computed as a circular convolution by FFT on
    the reflect-padded image (the wrap-around only touches the padding that is cropped away):
    XLA:CPU's grouped convolutions are ~25× slower for the 17–21-px defocus disks.
    """
    kh, kw = kernel.shape
    b, h, w, c = x.shape
    ph, pw = kh // 2, kw // 2
    xp = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), mode="reflect")
    hp, wp = xp.shape[1:3]
    k = jnp.fft.rfft2(jnp.asarray(kernel[::-1, ::-1], jnp.float32), s=(hp, wp))  # flip: correlation
    y = jnp.fft.irfft2(
        jnp.fft.rfft2(xp.astype(jnp.float32), axes=(1, 2)) * k[None, :, :, None], s=(hp, wp), axes=(1, 2)
    )
    return y[:, 2 * ph : 2 * ph + h, 2 * pw : 2 * pw + w].astype(x.dtype)


def linear_zoom_taps(n: int, zoom: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`clipped_zoom` along one axis as two-tap interpolation: output i = (1 − f_i)·x[lo_i] + f_i·x[hi_i].

    Crop the centre ceil(n/zoom) pixels, resample them like scipy.ndimage.zoom(order=1) (corner-
    aligned) to round(crop·zoom) pixels, keep the first n.
    """
    crop = int(math.ceil(n / float(zoom)))
    top = (n - crop) // 2
    out = int(round(crop * float(zoom)))
    scale = (crop - 1) / (out - 1) if out > 1 else 1.0
    c = np.arange(min(n, out)) * scale
    lo = np.minimum(np.floor(c).astype(int), crop - 1)
    hi = np.minimum(lo + 1, crop - 1)
    return top + lo, top + hi, (c - lo).astype(np.float32)


def clipped_zoom(x: Array, zoom: float) -> Array:
    """Zooms into the centre of every image by `zoom` ≥ 1, keeping the size.  (B, H, W, C) -> same."""
    for axis in (1, 2):
        lo, hi, f = linear_zoom_taps(x.shape[axis], zoom)
        f = jnp.asarray(f, x.dtype).reshape([len(f) if a == axis else 1 for a in range(x.ndim)])
        x = jnp.take(x, jnp.asarray(lo), axis=axis) * (1 - f) + jnp.take(x, jnp.asarray(hi), axis=axis) * f
    return x


def line_shift_blur(x: Array, radius: int, sigma: float, angle_deg: Array) -> Array:
    """The `imagecorruptions` motion-blur kernel, one angle per image (degrees, (B,)).

    Tap i (0 ≤ i < 2·radius+1) has weight ∝ exp(−i²/2σ²) and shifts the image by
    (dy, dx) = (−ceil(i·sin θ − 0.5), −ceil(i·cos θ − 0.5)) (the unit step along the line, as the
    package computes it from the point (w·sin θ, w·cos θ)); out-of-image samples take the nearest
    border pixel. As in the package, the taps stop at the first shift as long as the image.
    """
    b, h, w, _ = x.shape
    width = 2 * radius + 1
    k = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2))
    k = jnp.asarray(k / k.sum(), x.dtype)
    theta = jnp.deg2rad(angle_deg.astype(jnp.float32))[:, None]  # (B, 1)
    i = jnp.arange(width, dtype=jnp.float32)[None]
    dy = -jnp.ceil(i * jnp.sin(theta) - 0.5).astype(jnp.int32)  # (B, width)
    dx = -jnp.ceil(i * jnp.cos(theta) - 0.5).astype(jnp.int32)
    inside = (jnp.abs(dy) < h) & (jnp.abs(dx) < w)
    valid = jnp.cumprod(inside.astype(jnp.int32), axis=1).astype(x.dtype)  # the package's `break`
    rows = jnp.clip(jnp.arange(h)[None, None, :] - dy[:, :, None], 0, h - 1)  # (B, width, H)
    cols = jnp.clip(jnp.arange(w)[None, None, :] - dx[:, :, None], 0, w - 1)  # (B, width, W)

    def one(img, r, c, wts):  # img (H, W, C); r (width, H); c (width, W); wts (width,)
        shifted = img[r[:, :, None], c[:, None, :]]  # (width, H, W, C)
        return jnp.einsum("t,thwc->hwc", wts, shifted)

    return jax.vmap(one)(x, rows, cols, k[None] * valid)


def pil_box_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of Pillow's BOX downscale along one axis (Resample.c's coefficients:
    output pixel centre (j + 0.5)·scale, box support scale/2, weights taken at input pixel centres)."""
    scale = n_in / n_out
    fscale = max(scale, 1.0)
    support = 0.5 * fscale
    m = np.zeros((n_out, n_in))
    for j in range(n_out):
        centre = (j + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), n_in)
        for i in range(lo, hi):
            t = (i - centre + 0.5) / fscale
            m[j, i] = 1.0 if -0.5 < t <= 0.5 else 0.0
        m[j] /= max(m[j].sum(), 1e-12)
    return m


def pil_nearest_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) selection matrix of Pillow's NEAREST resize: source floor((j + 0.5)·n_in/n_out)."""
    m = np.zeros((n_out, n_in))
    src = np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(int), n_in - 1)
    m[np.arange(n_out), src] = 1.0
    return m


def resize_separable(x: Array, mh: np.ndarray, mw: np.ndarray) -> Array:
    """Applies per-axis resampling matrices (out_h, H), (out_w, W) to x (B, H, W, C).

    Two separate contractions (rows, then columns): one three-operand einsum lets XLA:CPU pick a
    contraction order several times slower."""
    hi = jax.lax.Precision.HIGHEST
    y = jnp.einsum("ih,bhwc->biwc", jnp.asarray(mh, x.dtype), x, precision=hi)
    return jnp.einsum("jw,biwc->bijc", jnp.asarray(mw, x.dtype), y, precision=hi)


def rgb_to_gray(x: Array) -> Array:
    """ITU-R 601 luma (OpenCV's RGB2GRAY weights).  (B, H, W, 3) -> (B, H, W, 1); grey passes through."""
    if x.shape[-1] == 1:
        return x
    return (x * jnp.asarray([0.299, 0.587, 0.114], x.dtype)).sum(-1, keepdims=True)


def reflect_index(i: Array, n: int) -> Array:
    """scipy's "reflect" boundary for integer indices (d c b a | a b c d | d c b a)."""
    k = jnp.mod(i, 2 * n)
    return jnp.where(k >= n, 2 * n - 1 - k, k)


def bilinear_sample(x: Array, rows: Array, cols: Array, outside: str = "reflect") -> Array:
    """Samples x (H, W, C) at float coordinates rows, cols (H', W') bilinearly. Pixels outside x:
    scipy's order-1 "reflect" boundary (outside="reflect") or zero (outside="zero")."""
    h, w = x.shape[:2]
    r0, c0 = jnp.floor(rows), jnp.floor(cols)
    fr, fc = (rows - r0)[..., None], (cols - c0)[..., None]
    r0, c0 = r0.astype(jnp.int32), c0.astype(jnp.int32)

    def at(r, c):
        if outside == "reflect":
            return x[reflect_index(r, h), reflect_index(c, w)]
        inside = ((r >= 0) & (r < h) & (c >= 0) & (c < w))[..., None]
        return jnp.where(inside, x[jnp.clip(r, 0, h - 1), jnp.clip(c, 0, w - 1)], 0.0)

    top = at(r0, c0) * (1 - fc) + at(r0, c0 + 1) * fc
    bottom = at(r0 + 1, c0) * (1 - fc) + at(r0 + 1, c0 + 1) * fc
    return top * (1 - fr) + bottom * fr
