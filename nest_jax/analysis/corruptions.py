"""The 15 ImageNet-C corruptions (Hendrycks & Dietterich 2019) at 5 severities, batched in JAX.

    corrupt(name, key, images, severity) -> images'      images: (B, H, W, C) float in [0, 1]

Parameters are the published ones, in the size-independent form of the `imagecorruptions` package
(Michaelis et al. 2019, "Benchmarking Robustness in Object Detection"), which generalizes the
ImageNet-C code from 224 px to any size ≥ 32 px; `docs/robustness.md` lists them. Everything
except JPEG is a jit-able function of (key, images); random choices come from `key` (one draw per
image), so a batch is corrupted in one compiled call. How each one relates to the package:

- exact up to float rounding (deterministic): defocus_blur, zoom_blur, brightness, contrast,
  pixelate, jpeg_compression (host side, Pillow, like the package);
- same algorithm, different random stream: gaussian_noise, shot_noise, impulse_noise, fog (the
  plasma fractal is the same diamond-square recursion), elastic_transform (the package's
  size-relative variant, not the original 224-px affine+elastic code), motion_blur (the package's
  kernel exactly; only the random angle is drawn by JAX), snow (same layers, zoom and motion blur);
- approximations (documented): glass_blur swaps no pixels sequentially — each pixel instead takes
  the value at an independent random offset in [−d, d), iterated as often; frost blends with a
  frost texture — the package's photographs when `frost_textures` are given (see
  `load_package_frost_textures`), else a procedural texture of bright crystal veins from a plasma
  fractal, which has different statistics from real frost.

Greyscale images (C = 1) are supported; brightness then adds to the value directly and snow uses
the image itself as its luma, as the package does.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from nest_jax.analysis import image_ops as ops

Array = jax.Array

DETERMINISTIC = ("defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression")
APPROXIMATE = ("glass_blur", "frost")

# Severity parameters 1..5 (Hendrycks & Dietterich 2019, as in the imagecorruptions package).
PARAMS = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),  # σ
    "shot_noise": (60, 25, 12, 5, 3),  # photons per unit intensity λ
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),  # salt-and-pepper fraction
    "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),  # disk radius, alias blur σ
    "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),  # σ, max shift, iterations
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),  # radius, σ
    "zoom_blur": ((1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03)),  # arange
    "snow": (
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    ),
    "frost": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),  # image weight, frost weight
    "fog": ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)),  # strength, wibble decay
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),  # added to the HSV value
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),  # factor on the deviation from the channel mean
    "elastic_transform": (250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12),  # α
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),  # downscale factor
    "jpeg_compression": (25, 18, 15, 10, 7),  # quality
}
CORRUPTIONS = tuple(PARAMS)  # the paper's order: noise, blur, weather, digital


def _p(name: str, severity: int):
    if not 1 <= int(severity) <= 5:
        raise ValueError(f"severity must be 1..5, got {severity}")
    return PARAMS[name][int(severity) - 1]


def _pd(name: str, severity) -> Array:
    """A parameter (a scalar, or a row that unpacks) looked up with a traced severity: one compiled
    program serves all five."""
    return jnp.asarray(PARAMS[name], jnp.float32)[jnp.asarray(severity, jnp.int32) - 1]


def _clip(x: Array) -> Array:
    return jnp.clip(x, 0.0, 1.0)


# --- noise -----------------------------------------------------------------------------------------
def gaussian_noise(key, x, severity):
    return _clip(x + _pd("gaussian_noise", severity) * jax.random.normal(key, x.shape, x.dtype))


def poisson_inverse_cdf(key: Array, mu: Array, max_count: int) -> Array:
    """Poisson(mu) samples by inverting the CDF with `max_count` static steps (exact while
    mu + 10·√mu < max_count; jax.random.poisson's per-element loops are ~10× slower on CPU)."""
    u = jax.random.uniform(key, mu.shape, mu.dtype)
    p = jnp.exp(-mu)
    cdf, count = p, jnp.zeros_like(mu)
    for k in range(1, max_count + 1):  # unrolled: XLA fuses the whole recursion into one pass
        count = count + (u > cdf).astype(mu.dtype)
        p = p * (mu / k)
        cdf = cdf + p
    return count


def shot_noise(key, x, severity):
    lam = _p("shot_noise", severity)
    top = int(np.ceil(lam + 10 * np.sqrt(lam) + 10))
    return _clip(poisson_inverse_cdf(key, x.astype(jnp.float32) * lam, top).astype(x.dtype) / lam)


def impulse_noise(key, x, severity):
    """Salt and pepper per element (skimage `random_noise(mode="s&p")`, half salt, half pepper)."""
    k1, k2 = jax.random.split(key)
    flip = jax.random.bernoulli(k1, _pd("impulse_noise", severity), x.shape)
    salt = jax.random.bernoulli(k2, 0.5, x.shape)
    return jnp.where(flip, salt.astype(x.dtype), x)


# --- blur ------------------------------------------------------------------------------------------
def disk_kernel(radius: int, alias_blur: float) -> np.ndarray:
    """The defocus kernel: a normalized disk (on a 17×17 grid up to radius 8), Gaussian-smoothed
    with a 3×3 (radius ≤ 8) or 5×5 OpenCV Gaussian of σ = alias_blur, BORDER_REFLECT_101."""
    half = 8 if radius <= 8 else radius
    t = np.arange(-half, half + 1)
    yy, xx = np.meshgrid(t, t)
    disk = (xx**2 + yy**2 <= radius**2).astype(np.float64)
    disk /= disk.sum()
    k = 3 if radius <= 8 else 5
    g = np.exp(-((np.arange(k) - (k - 1) / 2) ** 2) / (2 * alias_blur**2))
    g /= g.sum()
    padded = np.pad(disk, k // 2, mode="reflect")
    rows = sum(g[i] * padded[i : i + disk.shape[0]] for i in range(k))
    return sum(g[i] * rows[:, i : i + disk.shape[1]] for i in range(k)).astype(np.float32)


def defocus_blur(key, x, severity):
    del key
    return _clip(ops.filter2d(x, disk_kernel(*_p("defocus_blur", severity))))


def glass_blur(key, x, severity):
    """Approximation: blur, then `iterations` rounds of independent local displacements in
    [−d, d) (the package swaps pixel pairs sequentially, which has no parallel form), blur again."""
    sigma, d, iterations = _p("glass_blur", severity)
    b, h, w, _ = x.shape
    x = ops.gaussian_blur(x, sigma)
    offsets = jax.random.randint(key, (iterations, 2, b, h, w), -d, d)
    for off in offsets:
        rows = jnp.clip(jnp.arange(h)[None, :, None] + off[0], 0, h - 1)
        cols = jnp.clip(jnp.arange(w)[None, None, :] + off[1], 0, w - 1)
        x = jax.vmap(lambda img, r, c: img[r, c])(x, rows, cols)
    return _clip(ops.gaussian_blur(x, sigma))


def motion_blur(key, x, severity):
    radius, sigma = _p("motion_blur", severity)
    angle = jax.random.uniform(key, (x.shape[0],), minval=-45.0, maxval=45.0)
    return _clip(ops.line_shift_blur(x, radius, sigma, angle))


def zoom_blur(key, x, severity):
    del key
    zooms = np.arange(*_p("zoom_blur", severity))
    total = x + sum(ops.clipped_zoom(x, float(z)) for z in zooms)
    return _clip(total / (len(zooms) + 1))


# --- weather ---------------------------------------------------------------------------------------
def plasma_fractal(key: Array, size: int, decay) -> Array:
    """Diamond-square height map (size a power of 2), min–max normalized to [0, 1].  -> (size, size).

    Each level adds uniform noise of amplitude wibble² (wibble = 100, divided by `decay` per level),
    as the ImageNet-C code does; all levels' noise is drawn in one call (compiles much faster).
    """
    levels = max(int(np.log2(size)), 1)
    noise = jax.random.uniform(key, (levels, 3, max(size // 2, 1), max(size // 2, 1)), minval=-1.0, maxval=1.0)
    m = jnp.zeros((size, size), jnp.float32)
    step, wibble, level = size, jnp.float32(100.0), 0
    while step >= 2:
        half = step // 2
        n = size // step
        amp = wibble * wibble
        corners = m[::step, ::step]
        sq = corners + jnp.roll(corners, -1, axis=0)
        sq = sq + jnp.roll(sq, -1, axis=1)
        m = m.at[half::step, half::step].set(sq / 4 + amp * noise[level, 0, :n, :n])
        centres, corners = m[half::step, half::step], m[::step, ::step]
        s1 = centres + jnp.roll(centres, 1, axis=0) + corners + jnp.roll(corners, -1, axis=1)
        m = m.at[::step, half::step].set(s1 / 4 + amp * noise[level, 1, :n, :n])
        s2 = centres + jnp.roll(centres, 1, axis=1) + corners + jnp.roll(corners, -1, axis=0)
        m = m.at[half::step, ::step].set(s2 / 4 + amp * noise[level, 2, :n, :n])
        step, wibble, level = half, wibble / decay, level + 1
    m = m - m.min()
    return m / m.max()


def fog(key, x, severity):
    strength, decay = _pd("fog", severity)
    b, h, w, _ = x.shape
    peak = x.max(axis=(1, 2, 3), keepdims=True)
    size = 1 << (max(h, w) - 1).bit_length()
    maps = jax.vmap(lambda k: plasma_fractal(k, size, decay))(jax.random.split(key, b))
    x = x + strength * maps[:, :h, :w, None]
    return _clip(x * peak / (peak + strength))


def snow(key, x, severity):
    loc, scale, zoom, thresh, radius, sigma, keep = _p("snow", severity)
    b, h, w, _ = x.shape
    k1, k2 = jax.random.split(key)
    layer = loc + scale * jax.random.normal(k1, (b, h, w, 1), x.dtype)
    layer = ops.clipped_zoom(layer, zoom)
    layer = jnp.clip(jnp.where(layer < thresh, 0.0, layer), 0.0, 1.0)
    angle = jax.random.uniform(k2, (b,), minval=-135.0, maxval=-45.0)
    layer = jnp.round(ops.line_shift_blur(layer, radius, sigma, angle) * 255.0) / 255.0
    x = keep * x + (1 - keep) * jnp.maximum(x, ops.rgb_to_gray(x) * 1.5 + 0.5)
    return _clip(x + layer + layer[:, ::-1, ::-1])


def procedural_frost(key: Array, size: int) -> Array:
    """A frost-like texture (size, size, 3) in [0, 1]: bright crystal veins where a plasma fractal
    crosses its median over a pale bluish-white base. An approximation (its mean ≈ 0.6 and spread
    ≈ 0.14 are set to those of the package's photographs); pass real textures for actual frost."""
    m = plasma_fractal(key, size, 1.6)
    veins = jnp.clip(1.0 - jnp.abs(m - jnp.median(m)) * 4.0, 0.0, 1.0) ** 2
    grey = 0.5 + 0.4 * veins + 0.25 * (m - 0.5)
    tint = jnp.asarray([0.9, 0.95, 1.0], jnp.float32)
    return jnp.clip(grey[..., None] * tint, 0.0, 1.0)


def load_package_frost_textures() -> np.ndarray | None:
    """The `imagecorruptions` package's frost photographs (the five it samples from), if installed.

    Read with Pillow from the package's folder (the package itself is not imported). Returns a
    list of uint8 (h, w, 3) RGB arrays, or None when the package is absent.
    """
    import importlib.util
    import pathlib

    from PIL import Image

    spec = importlib.util.find_spec("imagecorruptions")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = pathlib.Path(list(spec.submodule_search_locations)[0]) / "frost"
    names = ["frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg"]
    return [np.asarray(Image.open(folder / n).convert("RGB")) for n in names]


def prepare_frost_textures(textures, h: int, w: int) -> np.ndarray:
    """Rescales each texture (Pillow bicubic) by 1.1 × the factor that makes it cover h × w (as the
    package does), then crops all to a common size.  -> float32 (n, H', W', 3) in [0, 1]."""
    from PIL import Image

    out = []
    for t in textures:
        th, tw = t.shape[:2]
        s = 1.1 * max(1.0, h / th, w / tw) if (th < h or tw < w) else 1.1
        size = (int(np.ceil(tw * s)), int(np.ceil(th * s)))
        out.append(np.asarray(Image.fromarray(t).resize(size, Image.BICUBIC), np.float32) / 255.0)
    ch, cw = min(o.shape[0] for o in out), min(o.shape[1] for o in out)
    return np.stack([o[:ch, :cw] for o in out])


def frost(key, x, severity, textures: Array | None = None):
    """c0·x + c1·frost, the frost a random crop of a random texture (prepared, (n, H', W', 3))."""
    a, c = _pd("frost", severity)
    b, h, w, ch = x.shape
    k1, k2, k3 = jax.random.split(key, 3)
    if textures is None:
        size = 1 << (max(h, w) - 1).bit_length()
        src, idx = jax.vmap(lambda k: procedural_frost(k, size))(jax.random.split(k1, b)), jnp.arange(b)
    else:
        src = jnp.asarray(textures, x.dtype)
        idx = jax.random.randint(k1, (b,), 0, src.shape[0])
    oy = jax.random.randint(k2, (b,), 0, src.shape[1] - h + 1)
    ox = jax.random.randint(k3, (b,), 0, src.shape[2] - w + 1)
    crop = jax.vmap(lambda i, y0, x0: jax.lax.dynamic_slice(src[i], (y0, x0, 0), (h, w, 3)))(idx, oy, ox)
    if ch == 1:
        crop = ops.rgb_to_gray(crop)
    return _clip(a * x + c * crop)


def brightness(key, x, severity):
    """HSV value + c. Hue and saturation fixed make RGB proportional to V, so the HSV round trip is
    the scaling rgb·V'/V (V = max channel; black pixels become grey V')."""
    del key
    c = _pd("brightness", severity)
    if x.shape[-1] == 1:
        return _clip(x + c)
    v = x.max(axis=-1, keepdims=True)
    v_new = jnp.clip(v + c, 0.0, 1.0)
    return _clip(jnp.where(v > 0, x * v_new / jnp.where(v > 0, v, 1.0), v_new))


# --- digital ---------------------------------------------------------------------------------------
def contrast(key, x, severity):
    del key
    c = _pd("contrast", severity)
    mean = x.mean(axis=(1, 2), keepdims=True)
    return _clip((x - mean) * c + mean)


def elastic_transform(key, x, severity):
    """The package's size-relative elastic warp: uniform displacements in ±0.005·H, smoothed by a
    Gaussian of σ = 0.01·(H, W) (truncate 3, reflect), times α; bilinear resampling, reflect."""
    alpha = _pd("elastic_transform", severity)
    b, h, w, _ = x.shape
    m = h * 0.005
    noise = jax.random.uniform(key, (b, h, w, 2), x.dtype, -m, m)
    d = ops.gaussian_blur(noise, (0.01 * h, 0.01 * w), truncate=3.0, mode="reflect") * alpha
    rows = jnp.arange(h, dtype=x.dtype)[None, :, None] + d[..., 1]
    cols = jnp.arange(w, dtype=x.dtype)[None, None, :] + d[..., 0]
    return _clip(jax.vmap(ops.bilinear_sample)(x, rows, cols))


def pixelate(key, x, severity):
    """Pillow BOX downscale to int(size·c), NEAREST upscale back."""
    del key
    c = _p("pixelate", severity)
    h, w = x.shape[1:3]
    sh, sw = int(h * c), int(w * c)
    small = ops.resize_separable(x, ops.pil_box_matrix(h, sh), ops.pil_box_matrix(w, sw))
    return _clip(ops.resize_separable(small, ops.pil_nearest_matrix(sh, h), ops.pil_nearest_matrix(sw, w)))


def jpeg_compression(key, x, severity):
    """Host side (a real JPEG encoder): Pillow at quality 25/18/15/10/7. Not jit-able."""
    del key
    q = _p("jpeg_compression", severity)
    arr = np.asarray(np.clip(np.asarray(x, np.float32) * 255.0 + 0.5, 0, 255), np.uint8)
    from PIL import Image

    out = []
    for img in arr:
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, "JPEG", quality=q)
        dec = np.asarray(Image.open(buf))
        out.append(dec[..., None] if dec.ndim == 2 else dec)
    return jnp.asarray(np.stack(out).astype(np.float32) / 255.0)


FUNCTIONS: dict[str, Callable] = {n: globals()[n] for n in CORRUPTIONS}


# Corruptions whose severity changes only scalar values (not shapes or loop counts) take the
# severity as a traced argument: one compiled program serves all five severities.
TRACED_SEVERITY = ("gaussian_noise", "impulse_noise", "fog", "brightness", "contrast", "elastic_transform")


@functools.cache
def _jitted(name: str, severity: int | None) -> Callable:
    return jax.jit(FUNCTIONS[name] if severity is None else functools.partial(FUNCTIONS[name], severity=severity))


def corrupt(name: str, key: Array, images: Array, severity: int, *, frost_textures=None) -> Array:
    """Applies corruption `name` at `severity` (1..5) to images (B, H, W, C) in [0, 1].

    Compiled once per (name, severity, shape); `jpeg_compression` runs on the host.
    frost_textures: prepared textures (`prepare_frost_textures`) for `frost`, else procedural.
    """
    if name not in FUNCTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {list(CORRUPTIONS)}")
    if name == "jpeg_compression":
        return jpeg_compression(key, images, severity)
    _p(name, severity)  # checks the severity
    if name == "frost":
        textures = None if frost_textures is None else jnp.asarray(frost_textures)
        return _jitted(name, None)(key, images, jnp.int32(severity), textures)
    if name in TRACED_SEVERITY:
        return _jitted(name, None)(key, images, jnp.int32(severity))
    return _jitted(name, int(severity))(key, images)
