"""ResNet baselines and teachers: ResNet-50 v1.5 (BatchNorm), BiT ResNet-v2 (weight-standardized
convs + GroupNorm, pre-activation) and the BiT stem of the hybrid ViT (R50+ViT-B/16).

All NHWC. Parameter paths follow one scheme for every variant: `stem/conv`, `stem/norm`,
`stages/{i}/{j}/{conv1,norm1,conv2,norm2,conv3,norm3}`, `stages/{i}/0/downsample/{conv,norm}`,
`norm` (pre-activation nets only), `head`. Conv kernels are HWIO, named `kernel`.

Intermediates (`capture`): `layers` = every residual block's output (B, h, w, C); `residuals` =
`block_in` (the shortcut added, after any projection) and `block_branch` (the residual branch,
before the sum and the final ReLU of v1 blocks); `features` = each stage's output map; for pre-activation
nets the last entry is taken after the final norm + ReLU (the map the head pools), since a
pre-activation stage output is an un-normalized residual sum. `pre_logits` = pooled (B, C).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from nest_jax.models import layers as L
from nest_jax.models.intermediates import Capture, Model, finish, maybe_recorder
from nest_jax.models.registry import register_variant

Array = jax.Array

BN_EPS = 1e-5
BN_MOMENTUM = 0.9  # flax convention: PyTorch's momentum 0.1 is flax's 0.9
GN_EPS = 1e-5  # timm GroupNormAct default
WS_EPS = 1e-8  # timm's StdConv2d eps for BiT and the hybrid (eps=1e-8)
GN_GROUPS = 32

# torchvision/timm: kaiming normal, fan_out, gain sqrt(2) (ReLU), untruncated.
kaiming_fan_out = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


class Conv(nnx.Module):
    """Bias-free conv, optionally weight-standardized (BiT).

    `padding="torch"`: symmetric k//2 on each side (PyTorch's `padding=k//2`);
    `padding="same"`: TF SAME (extra pixel bottom/right on stride 2), as in timm's StdConv2dSame.
    Weight standardization: each output filter's kernel (kh, kw, C_in) is shifted and scaled to
    zero mean / unit (biased) variance before the conv, computed in the parameter dtype.

    x: (B, H, W, C_in) -> (B, H/stride, W/stride, C_out)
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: str = "torch",
        standardize: bool = False,
        rngs: nnx.Rngs,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
    ):
        if padding not in ("torch", "same"):
            raise ValueError(f"padding must be 'torch' or 'same', got {padding!r}")
        k = kernel_size
        shape = (k, k, in_chans, out_chans)
        self.kernel = L.param(rngs, kaiming_fan_out, shape, param_dtype, None, None, "conv_in", "conv_out")
        self.stride = stride
        self.padding = "SAME" if padding == "same" else ((k // 2, k // 2), (k // 2, k // 2))
        self.standardize = standardize
        self.dtype = dtype

    def __call__(self, x: Array) -> Array:
        w = self.kernel[...]
        if self.standardize:
            mean = w.mean(axis=(0, 1, 2), keepdims=True)
            var = w.var(axis=(0, 1, 2), keepdims=True)
            w = (w - mean) * jax.lax.rsqrt(var + WS_EPS)
        dt = self.dtype or x.dtype
        return jax.lax.conv_general_dilated(
            x.astype(dt),
            w.astype(dt),
            (self.stride, self.stride),
            self.padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )


def apply_norm(norm: nnx.Module, x: Array, train: bool) -> Array:
    """BatchNorm uses batch statistics (and updates its running ones) only when training."""
    if isinstance(norm, nnx.BatchNorm):
        return norm(x, use_running_average=not train)
    return norm(x)


@dataclasses.dataclass(frozen=True)
class Parts:
    """How a ResNet flavour builds its convs and norms (shared by the blocks and the stems)."""

    norm: str = "batch"  # "batch" | "group"
    standardize: bool = False  # weight-standardized convs (BiT)
    padding: str = "torch"  # "torch" | "same"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def conv(self, cin: int, cout: int, k: int, stride: int = 1, *, rngs: nnx.Rngs) -> Conv:
        kw = dict(padding=self.padding, standardize=self.standardize, dtype=self.dtype, param_dtype=self.param_dtype)
        return Conv(cin, cout, k, stride=stride, rngs=rngs, **kw)

    def norm_layer(self, chans: int, *, zero_scale: bool = False, rngs: nnx.Rngs) -> nnx.Module:
        """`batch`: BatchNorm (eps 1e-5, PyTorch momentum 0.1); `group`: GroupNorm, 32 groups, eps 1e-5."""
        scale_init = nnx.initializers.zeros if zero_scale else nnx.initializers.ones
        kw = dict(
            scale_init=L.axes(scale_init, "conv_out"),
            bias_init=L.axes(nnx.initializers.zeros, "conv_out"),
            use_fast_variance=False,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            rngs=rngs,
        )
        if self.norm == "batch":
            # Deviation: flax updates the running variance with the biased batch variance, PyTorch with
            # the unbiased one (factor n/(n-1), n = B·H·W: < 0.1% for any realistic batch).
            return nnx.BatchNorm(chans, momentum=BN_MOMENTUM, epsilon=BN_EPS, **kw)
        if self.norm == "group":
            return nnx.GroupNorm(chans, num_groups=GN_GROUPS, epsilon=GN_EPS, **kw)
        raise ValueError(f"norm must be 'batch' or 'group', got {self.norm!r}")


class Downsample(nnx.Module):
    """Projection shortcut: 1x1 conv with the block's stride, then a norm (none when pre-activated)."""

    def __init__(self, cin: int, cout: int, stride: int, parts: Parts, *, with_norm: bool, rngs: nnx.Rngs):
        self.conv = parts.conv(cin, cout, 1, stride, rngs=rngs)
        self.norm = parts.norm_layer(cout, rngs=rngs) if with_norm else None

    def __call__(self, x: Array, *, train: bool = False) -> Array:
        x = self.conv(x)
        return x if self.norm is None else apply_norm(self.norm, x, train)


class _Bottleneck(nnx.Module):
    """What both bottleneck flavours share: width C_out / 4, the stride in the 3x3 conv, a projection
    shortcut when the shape changes (with a norm unless pre-activated), stochastic depth."""

    preact = False

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int,
        parts: Parts,
        *,
        drop_path: float = 0.0,
        zero_init_last: bool = False,
        rngs: nnx.Rngs,
    ):
        self.layers(cin, cout // 4, cout, stride, parts, zero_init_last, rngs)
        needs_proj = stride != 1 or cin != cout
        proj = Downsample(cin, cout, stride, parts, with_norm=not self.preact, rngs=rngs) if needs_proj else None
        self.downsample = proj
        self.drop_path = L.DropPath(drop_path, rngs=rngs)

    def _add(self, shortcut: Array, branch: Array, train: bool, rec) -> Array:
        """shortcut + DropPath(branch) (ReLU'd unless pre-activated); `rec` records both terms."""
        branch = self.drop_path(branch, train=train)
        if rec is not None:
            rec.append("block_in", shortcut)
            rec.append("block_branch", branch)
        return branch + shortcut if self.preact else jax.nn.relu(branch + shortcut)


class Bottleneck(_Bottleneck):
    """Post-activation bottleneck, v1.5 (stride in the 3x3 conv); also the hybrid's BiT block.

    y = ReLU(shortcut(x) + norm3(conv3(ReLU(norm2(conv2(ReLU(norm1(conv1(x)))))))))
    x: (B, H, W, C_in) -> (B, H/stride, W/stride, C_out), bottleneck width C_out / 4.
    """

    def layers(self, cin, mid, cout, stride, parts, zero_init_last, rngs):
        self.conv1 = parts.conv(cin, mid, 1, rngs=rngs)
        self.norm1 = parts.norm_layer(mid, rngs=rngs)
        self.conv2 = parts.conv(mid, mid, 3, stride, rngs=rngs)
        self.norm2 = parts.norm_layer(mid, rngs=rngs)
        self.conv3 = parts.conv(mid, cout, 1, rngs=rngs)
        # Zero-init of the last norm's scale makes each block start as the identity (Goyal et al.).
        self.norm3 = parts.norm_layer(cout, zero_scale=zero_init_last, rngs=rngs)

    def __call__(self, x: Array, *, train: bool = False, rec=None) -> Array:
        shortcut = x if self.downsample is None else self.downsample(x, train=train)
        y = jax.nn.relu(apply_norm(self.norm1, self.conv1(x), train))
        y = jax.nn.relu(apply_norm(self.norm2, self.conv2(y), train))
        return self._add(shortcut, apply_norm(self.norm3, self.conv3(y), train), train, rec)


class PreActBottleneck(_Bottleneck):
    """Pre-activation bottleneck (ResNet v2 / BiT), stride in the 3x3 conv.

    p = ReLU(norm1(x)); y = shortcut + conv3(ReLU(norm3(conv2(ReLU(norm2(conv1(p)))))))
    where shortcut = conv(p) when projecting, else x.
    x: (B, H, W, C_in) -> (B, H/stride, W/stride, C_out)
    """

    preact = True

    def layers(self, cin, mid, cout, stride, parts, zero_init_last, rngs):
        del zero_init_last  # the last op is a conv; BiT trains from the plain init
        self.norm1 = parts.norm_layer(cin, rngs=rngs)
        self.conv1 = parts.conv(cin, mid, 1, rngs=rngs)
        self.norm2 = parts.norm_layer(mid, rngs=rngs)
        self.conv2 = parts.conv(mid, mid, 3, stride, rngs=rngs)
        self.norm3 = parts.norm_layer(mid, rngs=rngs)
        self.conv3 = parts.conv(mid, cout, 1, rngs=rngs)

    def __call__(self, x: Array, *, train: bool = False, rec=None) -> Array:
        p = jax.nn.relu(apply_norm(self.norm1, x, train))
        shortcut = x if self.downsample is None else self.downsample(p, train=train)
        y = self.conv2(jax.nn.relu(apply_norm(self.norm2, self.conv1(p), train)))
        return self._add(shortcut, self.conv3(jax.nn.relu(apply_norm(self.norm3, y, train))), train, rec)


class Stem(nnx.Module):
    """Root: 7x7/2 conv (64 ch) [-> norm -> ReLU] -> 3x3/2 max-pool.  (B, H, W, C) -> (B, H/4, W/4, 64).

    pool padding: `torch` pads 1 with -inf (MaxPool2d(3, 2, 1)); `zero` pads 1 with zeros then pools
    VALID (timm BiT "fixed" stem: its pre-activation stem output can be negative, so the pad value
    matters); `same` is TF SAME with -inf (the hybrid's official JAX code).
    """

    def __init__(self, in_chans: int, parts: Parts, *, with_norm: bool, pool_pad: str, rngs: nnx.Rngs, width: int = 64):
        self.conv = parts.conv(in_chans, width, 7, 2, rngs=rngs)
        self.norm = parts.norm_layer(width, rngs=rngs) if with_norm else None
        self.pool_pad = pool_pad

    def __call__(self, x: Array, *, train: bool = False) -> Array:
        x = self.conv(x)
        if self.norm is not None:
            x = jax.nn.relu(apply_norm(self.norm, x, train))
        if self.pool_pad == "zero":
            x, padding = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), "VALID"
        else:
            padding = "SAME" if self.pool_pad == "same" else ((1, 1), (1, 1))
        return nnx.max_pool(x, (3, 3), strides=(2, 2), padding=padding)


def make_stages(
    block: Callable[..., nnx.Module],
    layers: Sequence[int],
    widths: Sequence[int],
    parts: Parts,
    *,
    drop_path_rate: float,
    zero_init_last: bool,
    rngs: nnx.Rngs,
) -> nnx.List:
    """Stages of bottlenecks; stage i > 0 halves the resolution in its first block.

    Drop-path rates rise linearly over all blocks (timm ResNet).
    """
    rates = L.drop_path_rates(drop_path_rate, sum(layers))
    stages, cin, k = [], 64, 0
    for i, (depth, width) in enumerate(zip(layers, widths)):
        blocks = []
        for j in range(depth):
            stride = 2 if (i > 0 and j == 0) else 1
            blocks.append(
                block(cin, width, stride, parts, drop_path=rates[k], zero_init_last=zero_init_last, rngs=rngs)
            )
            cin, k = width, k + 1
        stages.append(nnx.List(blocks))
    return nnx.List(stages)


def run_stages(stages: nnx.List, x: Array, *, train: bool, rec=None) -> list[Array]:
    """Returns every stage's output map; `rec` records each residual block (`layers`, residuals)."""
    outs = []
    for stage in stages:
        for blk in stage:
            x = blk(x, train=train, rec=rec)
            if rec is not None:
                rec.append("layers", x)
        outs.append(x)
    return outs


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
    """`kind="v1"`: post-activation ResNet v1.5 with BatchNorm (torchvision/timm `resnet50`);
    `kind="bit"`: pre-activation ResNet v2 with weight standardization and GroupNorm (BiT)."""

    kind: str = "v1"
    layers: tuple[int, ...] = (3, 4, 6, 3)
    widths: tuple[int, ...] = (256, 512, 1024, 2048)
    num_classes: int = 1000
    in_chans: int = 3
    img_size: int | tuple[int, int] = 224  # fully convolutional: recorded only
    drop_path_rate: float = 0.0
    zero_init_last: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        if self.kind not in ("v1", "bit"):
            raise ValueError(f"kind must be 'v1' or 'bit', got {self.kind!r}")
        if len(self.layers) != len(self.widths):
            raise ValueError(f"layers {self.layers} and widths {self.widths} must have the same length")

    @property
    def parts(self) -> Parts:
        if self.kind == "v1":
            return Parts("batch", False, "torch", self.dtype, self.param_dtype)
        return Parts("group", True, "torch", self.dtype, self.param_dtype)


class ResNet(Model):
    """x: (B, H, W, C) image -> logits (B, classes); global average pool then a linear head.

    Eval mode (the default, `model.eval()`, `train=False`) normalizes with BatchNorm's running
    statistics; train mode with the batch's, updating the running ones.
    """

    def __init__(self, config: ResNetConfig, *, rngs: nnx.Rngs):
        self.config = c = config
        parts = c.parts
        bit = c.kind == "bit"
        self.stem = Stem(c.in_chans, parts, with_norm=not bit, pool_pad="zero" if bit else "torch", rngs=rngs)
        self.stages = make_stages(
            PreActBottleneck if bit else Bottleneck,
            c.layers,
            c.widths,
            parts,
            drop_path_rate=c.drop_path_rate,
            zero_init_last=c.zero_init_last,
            rngs=rngs,
        )
        self.norm = parts.norm_layer(c.widths[-1], rngs=rngs) if bit else None
        # Head: normal(0.01), zero bias (timm ResNetV2; torchvision's default Linear init differs
        # only in scale and matters only when training from scratch).
        kw = dict(dtype=c.dtype, param_dtype=c.param_dtype, rngs=rngs)
        self.head = L.classifier(c.widths[-1], c.num_classes, nnx.initializers.normal(0.01), **kw)

    def __call__(self, x: Array, *, train: bool | None = None, capture: Capture = None):
        train = self.training(train)
        rec = maybe_recorder(capture)
        feats = run_stages(self.stages, self.stem(x, train=train), train=train, rec=rec)
        if self.norm is not None:
            feats[-1] = jax.nn.relu(apply_norm(self.norm, feats[-1], train))
        pooled = feats[-1].mean(axis=(1, 2))
        if rec is not None:
            for f in feats:
                rec.append("features", f)
            rec.set("pre_logits", pooled)
        return finish(pooled if self.head is None else self.head(pooled), rec)


class BiTStem(nnx.Module):
    """The hybrid ViT's backbone (R50+ViT-B/16): BiT ResNet without pre-activation.

    Weight-standardized convs with TF SAME padding, GroupNorm; root 7x7/2 conv -> GN -> ReLU ->
    max-pool 3x3/2 SAME, then post-activation bottleneck stages `layers` (3, 4, 9 for R50+ViT;
    the 4th stage of R50 is dropped), widths 256, 512, 1024, … — timm's `vit_base_r50_s16_224`.

    x: (B, H, W, C) -> (B, H/16, W/16, out_chans) for three stages (stride 4 · 2^(stages-1)).
    """

    def __init__(
        self,
        in_chans: int,
        layers: Sequence[int] = (3, 4, 9),
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        parts = Parts("group", True, "same", dtype, param_dtype)
        widths = tuple(256 * 2**i for i in range(len(layers)))
        self.out_chans = widths[-1]
        self.stem = Stem(in_chans, parts, with_norm=True, pool_pad="same", rngs=rngs)
        self.stages = make_stages(
            Bottleneck, layers, widths, parts, drop_path_rate=0.0, zero_init_last=False, rngs=rngs
        )

    def __call__(self, x: Array, *, train: bool = False) -> Array:
        return run_stages(self.stages, self.stem(x, train=train), train=train)[-1]


_V1_DOC = "ResNet-50 v1.5 (torchvision/timm `resnet50`): BatchNorm, stride in the 3x3 conv. 25,557,032 params."
_BIT_DOC = "BiT-M R50x1 (timm `resnetv2_50x1_bit`): pre-activation, weight-standardized convs, GroupNorm 32."
for _name, _kind, _doc in (("resnet50", "v1", _V1_DOC), ("resnetv2_50x1_bit", "bit", _BIT_DOC)):
    register_variant(_name, ResNet, ResNetConfig, dict(kind=_kind, layers=(3, 4, 6, 3)), _doc)
