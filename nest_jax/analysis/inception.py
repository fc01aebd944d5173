"""Inception-v3 (Szegedy et al. 2016, CVPR, Figs. 5–7) as the FID feature extractor, in pure JAX.

The FID network is the 2015-12-05 TensorFlow graph of Heusel et al. (2017); its weights exist as
pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`. That graph differs from torchvision's
Inception-v3 in three places this definition follows: the average pools of the A, C and first E
blocks ignore padding when averaging (TensorFlow's `avg_pool`), and the last E block pools by max,
not average. Features are the 2048-d global average pool ("pool3").

Parameters are a flat dict keyed by the PyTorch state-dict names (`Mixed_5b.branch1x1.conv.weight`,
`…bn.running_mean`, …) with conv kernels stored HWIO, so a weights file loads by name. Nothing is
downloaded: `load_inception_weights(path)` reads a file the user supplies (`.pth` through
`torch.load(weights_only=True)`, `.npz` or `.safetensors` of the same names with conv kernels OIHW as
in PyTorch).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from nest_jax.convert.common import load_array_file
from nest_jax.errors import UserError

Array = jax.Array
BN_EPS = 1e-3
FID_SIZE = 299
WEIGHTS_HELP = (
    "FID Inception weights are not bundled and never downloaded: fetch pytorch-fid's "
    "pt_inception-2015-12-05-6726825d.pth (github.com/mseitzer/pytorch-fid/releases, tag fid_weights) on a "
    "machine with network and pass its path"
)


def _conv_specs() -> dict[str, tuple[int, int, tuple[int, int], int, tuple[int, int]]]:
    """name -> (in, out, kernel (kh, kw), stride, padding (ph, pw)) of every conv+BN+ReLU unit."""
    s: dict = {}

    def add(name, cin, cout, k, stride=1, pad=(0, 0)):
        s[name] = (cin, cout, (k, k) if isinstance(k, int) else k, stride, pad)

    add("Conv2d_1a_3x3", 3, 32, 3, 2)
    add("Conv2d_2a_3x3", 32, 32, 3)
    add("Conv2d_2b_3x3", 32, 64, 3, pad=(1, 1))
    add("Conv2d_3b_1x1", 64, 80, 1)
    add("Conv2d_4a_3x3", 80, 192, 3)
    for name, cin, pool in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)):  # A
        add(f"{name}.branch1x1", cin, 64, 1)
        add(f"{name}.branch5x5_1", cin, 48, 1)
        add(f"{name}.branch5x5_2", 48, 64, 5, pad=(2, 2))
        add(f"{name}.branch3x3dbl_1", cin, 64, 1)
        add(f"{name}.branch3x3dbl_2", 64, 96, 3, pad=(1, 1))
        add(f"{name}.branch3x3dbl_3", 96, 96, 3, pad=(1, 1))
        add(f"{name}.branch_pool", cin, pool, 1)
    add("Mixed_6a.branch3x3", 288, 384, 3, 2)  # B
    add("Mixed_6a.branch3x3dbl_1", 288, 64, 1)
    add("Mixed_6a.branch3x3dbl_2", 64, 96, 3, pad=(1, 1))
    add("Mixed_6a.branch3x3dbl_3", 96, 96, 3, 2)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):  # C
        add(f"{name}.branch1x1", 768, 192, 1)
        add(f"{name}.branch7x7_1", 768, c7, 1)
        add(f"{name}.branch7x7_2", c7, c7, (1, 7), pad=(0, 3))
        add(f"{name}.branch7x7_3", c7, 192, (7, 1), pad=(3, 0))
        add(f"{name}.branch7x7dbl_1", 768, c7, 1)
        add(f"{name}.branch7x7dbl_2", c7, c7, (7, 1), pad=(3, 0))
        add(f"{name}.branch7x7dbl_3", c7, c7, (1, 7), pad=(0, 3))
        add(f"{name}.branch7x7dbl_4", c7, c7, (7, 1), pad=(3, 0))
        add(f"{name}.branch7x7dbl_5", c7, 192, (1, 7), pad=(0, 3))
        add(f"{name}.branch_pool", 768, 192, 1)
    add("Mixed_7a.branch3x3_1", 768, 192, 1)  # D
    add("Mixed_7a.branch3x3_2", 192, 320, 3, 2)
    add("Mixed_7a.branch7x7x3_1", 768, 192, 1)
    add("Mixed_7a.branch7x7x3_2", 192, 192, (1, 7), pad=(0, 3))
    add("Mixed_7a.branch7x7x3_3", 192, 192, (7, 1), pad=(3, 0))
    add("Mixed_7a.branch7x7x3_4", 192, 192, 3, 2)
    for name, cin in (("Mixed_7b", 1280), ("Mixed_7c", 2048)):  # E
        add(f"{name}.branch1x1", cin, 320, 1)
        add(f"{name}.branch3x3_1", cin, 384, 1)
        add(f"{name}.branch3x3_2a", 384, 384, (1, 3), pad=(0, 1))
        add(f"{name}.branch3x3_2b", 384, 384, (3, 1), pad=(1, 0))
        add(f"{name}.branch3x3dbl_1", cin, 448, 1)
        add(f"{name}.branch3x3dbl_2", 448, 384, 3, pad=(1, 1))
        add(f"{name}.branch3x3dbl_3a", 384, 384, (1, 3), pad=(0, 1))
        add(f"{name}.branch3x3dbl_3b", 384, 384, (3, 1), pad=(1, 0))
        add(f"{name}.branch_pool", cin, 192, 1)
    return s


CONV_SPECS = _conv_specs()


def param_shapes() -> dict[str, tuple[int, ...]]:
    """Every parameter's name and shape (conv kernels HWIO); BN: weight, bias, running mean/var."""
    out = {}
    for name, (cin, cout, (kh, kw), _, _) in CONV_SPECS.items():
        out[f"{name}.conv.weight"] = (kh, kw, cin, cout)
        for p in ("weight", "bias", "running_mean", "running_var"):
            out[f"{name}.bn.{p}"] = (cout,)
    return out


def params_from_state_dict(state: Mapping[str, np.ndarray]) -> dict[str, Array]:
    """PyTorch-named arrays (conv weights OIHW) -> our params (HWIO); `fc.*`, counters ignored."""
    shapes = param_shapes()
    missing = [k for k in shapes if k not in state]
    if missing:
        raise UserError(
            f"the Inception weights lack {len(missing)} parameters (first: {missing[0]}); expected "
            "pytorch-fid's FID Inception (pt_inception-2015-12-05) state dict"
        )
    out = {}
    for name, shape in shapes.items():
        a = np.asarray(state[name], np.float32)
        if name.endswith("conv.weight"):
            a = a.transpose(2, 3, 1, 0)
        if a.shape != shape:
            raise UserError(f"Inception parameter {name} has shape {a.shape}, expected {shape}")
        out[name] = jnp.asarray(a)
    return out


def load_inception_weights(path: str | None) -> dict[str, Array]:
    """Reads the FID Inception weights from `.pth` (torch, weights_only), `.npz` (no pickle) or
    `.safetensors`, local or on any `etils.epath` path; a pickled, truncated or object-holding
    file is one `UserError` line (`nest_jax.convert.common.load_array_file`)."""
    if not path:
        raise UserError(f"no Inception weights file given. {WEIGHTS_HELP}")
    p = epath.Path(path)
    if not p.exists():
        raise UserError(f"Inception weights file {path} does not exist. {WEIGHTS_HELP}")
    if "://" not in str(path):
        return params_from_state_dict(load_array_file(path))
    with tempfile.TemporaryDirectory() as tmp:  # the readers take local files
        local = os.path.join(tmp, p.name)
        with open(local, "wb") as f:
            f.write(p.read_bytes())
        return params_from_state_dict(load_array_file(local))


# ---- layers ----------------------------------------------------------------------------------
def _unit(params: Mapping[str, Array], name: str, x: Array) -> Array:
    """conv (no bias) → BatchNorm (eval, eps 1e-3) → ReLU. x: (B, H, W, C) NHWC."""
    _, _, _, stride, (ph, pw) = CONV_SPECS[name]
    y = jax.lax.conv_general_dilated(
        x,
        params[f"{name}.conv.weight"],
        (stride, stride),
        ((ph, ph), (pw, pw)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    scale = params[f"{name}.bn.weight"] * jax.lax.rsqrt(params[f"{name}.bn.running_var"] + BN_EPS)
    return jax.nn.relu((y - params[f"{name}.bn.running_mean"]) * scale + params[f"{name}.bn.bias"])


def _max_pool(x: Array, stride: int, pad: int = 0) -> Array:
    pads = ((0, 0), (pad, pad), (pad, pad), (0, 0))
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, stride, stride, 1), pads)


def _avg_pool_same_excl(x: Array) -> Array:
    """3×3 stride-1 average over the valid (unpadded) pixels only: TensorFlow's SAME avg_pool."""
    pads = ((0, 0), (1, 1), (1, 1), (0, 0))
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pads)
    count = jax.lax.reduce_window(jnp.ones_like(x[:1, :, :, :1]), 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pads)
    return total / count


def _chain(p, x, prefix: str, suffixes) -> Array:
    """The units `prefix + s` for s in `suffixes`, applied in turn."""
    for s in suffixes:
        x = _unit(p, prefix + s, x)
    return x


def _block_a_or_c(p, n, x, towers):
    """Blocks A and C: 1×1, the `towers` ((prefix, suffixes) of each), and a pooled 1×1 branch."""
    b = [_chain(p, x, f"{n}.{prefix}", suffixes) for prefix, suffixes in towers]
    pooled = _unit(p, f"{n}.branch_pool", _avg_pool_same_excl(x))
    return jnp.concatenate([_unit(p, f"{n}.branch1x1", x), *b, pooled], axis=-1)


def _block_b(p, n, x):
    b3 = _chain(p, x, f"{n}.branch3x3dbl_", "123")
    return jnp.concatenate([_unit(p, f"{n}.branch3x3", x), b3, _max_pool(x, 2)], axis=-1)


def _block_d(p, n, x):
    b3, b7 = _chain(p, x, f"{n}.branch3x3_", "12"), _chain(p, x, f"{n}.branch7x7x3_", "1234")
    return jnp.concatenate([b3, b7, _max_pool(x, 2)], axis=-1)


def _block_e(p, n, x, pool: str):
    b3 = _unit(p, f"{n}.branch3x3_1", x)
    b3 = jnp.concatenate([_unit(p, f"{n}.branch3x3_2a", b3), _unit(p, f"{n}.branch3x3_2b", b3)], axis=-1)
    bd = _chain(p, x, f"{n}.branch3x3dbl_", "12")
    bd = jnp.concatenate([_unit(p, f"{n}.branch3x3dbl_3a", bd), _unit(p, f"{n}.branch3x3dbl_3b", bd)], axis=-1)
    pooled = _avg_pool_same_excl(x) if pool == "avg" else _max_pool(x, 1, 1)
    return jnp.concatenate([_unit(p, f"{n}.branch1x1", x), b3, bd, _unit(p, f"{n}.branch_pool", pooled)], axis=-1)


def inception_pool3(params: Mapping[str, Array], x: Array) -> Array:
    """x: (B, H, W, 3) in [-1, 1] (already at the network's resolution) -> pool3 features (B, 2048)."""
    p = params
    x = _max_pool(_chain(p, x, "Conv2d_", ("1a_3x3", "2a_3x3", "2b_3x3")), 2)
    x = _max_pool(_chain(p, x, "Conv2d_", ("3b_1x1", "4a_3x3")), 2)
    for n in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
        x = _block_a_or_c(p, n, x, (("branch5x5_", "12"), ("branch3x3dbl_", "123")))
    x = _block_b(p, "Mixed_6a", x)
    for n in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
        x = _block_a_or_c(p, n, x, (("branch7x7_", "123"), ("branch7x7dbl_", "12345")))
    x = _block_d(p, "Mixed_7a", x)
    x = _block_e(p, "Mixed_7b", x, "avg")
    x = _block_e(p, "Mixed_7c", x, "max")
    return x.mean(axis=(1, 2))


def resize_bilinear(x: Array, size: int, mode: str = "tf_legacy") -> Array:
    """Bilinear resize of (B, H, W, C) to (B, size, size, C).

    tf_legacy: TensorFlow 1's `resize_bilinear(align_corners=False)`, which the FID reference graph
      runs: source coordinate = dst · (in/out), no half-pixel offset (so the image shifts by up to
      half a pixel). half_pixel: source = (dst + 0.5) · (in/out) − 0.5, clamped at 0 (PyTorch's
      `F.interpolate(align_corners=False)`, which pytorch-fid uses).
    """
    if mode not in ("tf_legacy", "half_pixel"):
        raise ValueError(f"resize mode must be 'tf_legacy' or 'half_pixel', got {mode!r}")

    def axis_weights(n_in: int) -> Array:
        scale = n_in / size
        dst = jnp.arange(size, dtype=jnp.float32)
        src = dst * scale if mode == "tf_legacy" else jnp.maximum((dst + 0.5) * scale - 0.5, 0.0)
        lo = jnp.minimum(jnp.floor(src).astype(jnp.int32), n_in - 1)
        hi = jnp.minimum(lo + 1, n_in - 1)
        frac = src - lo
        return jax.nn.one_hot(lo, n_in) * (1 - frac)[:, None] + jax.nn.one_hot(hi, n_in) * frac[:, None]

    wh, ww = axis_weights(x.shape[1]), axis_weights(x.shape[2])
    return jnp.einsum("oh,bhwc,pw->bopc", wh, x.astype(jnp.float32), ww, precision=jax.lax.Precision.HIGHEST)


def inception_features(params: Mapping[str, Array], images: Array, *, resize: str = "tf_legacy") -> Array:
    """FID features. images: (B, H, W, C) in [-1, 1], C = 1 or 3 -> (B, 2048).

    Grey images are repeated to RGB; images are resized to 299×299 bilinearly (`resize_bilinear`)
    unless already that size.
    """
    if images.shape[-1] == 1:
        images = jnp.repeat(images, 3, axis=-1)
    if images.shape[1:3] != (FID_SIZE, FID_SIZE):
        images = resize_bilinear(images, FID_SIZE, resize)
    return inception_pool3(params, images.astype(jnp.float32))
