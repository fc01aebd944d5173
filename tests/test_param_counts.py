"""Exact parameter counts: ViTs against the published table (docs/models.md), DeiT / ResNet / hybrid
against timm's own models. Shapes only (`nnx.eval_shape`, timm on the meta device): no memory."""

import math

import jax
import pytest
from flax import nnx

from nest_jax.models import create_model, list_models

# docs/models.md: 224 px, 1000 classes, class token, no pre-logits.
VIT_COUNTS = {
    "vit_tiny_patch16_224": 5_717_416,
    "vit_small_patch16_224": 22_050_664,
    "vit_small_patch32_224": 22_878_952,
    "vit_base_patch16_224": 86_567_656,
    "vit_base_patch32_224": 88_224_232,
    "vit_base_patch8_224": 86_576_872,
    "vit_large_patch16_224": 304_326_632,
    "vit_large_patch32_224": 306_535_400,
    "vit_huge_patch14_224": 632_045_800,
}


def count(name: str, **kw) -> int:
    """Number of trainable parameters (nnx.Param; BatchNorm statistics are not parameters)."""
    model = nnx.eval_shape(lambda: create_model(name, rngs=nnx.Rngs(0), **kw))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.fixture(scope="module")
def timm_count():
    import timm
    import torch

    def f(name: str, **kw) -> int:
        with torch.device("meta"):
            m = timm.create_model(name, pretrained=False, **kw)
        return sum(p.numel() for p in m.parameters())

    return f


@pytest.mark.parametrize("name", sorted(VIT_COUNTS))
def test_vit_param_counts_match_published_table(name):
    assert name in list_models(), f"{name} is in the paper's table but not registered"
    assert count(name) == VIT_COUNTS[name]


@pytest.mark.parametrize("size", ["tiny", "small", "base"])
def test_deit_param_counts_match_timm(size, timm_count):
    for suffix in ("", "_distilled"):
        name = f"deit_{size}{suffix}_patch16_224"
        assert count(name) == timm_count(name), name


@pytest.mark.parametrize("size,dim", [("tiny", 192), ("small", 384)])
def test_shape_token_param_counts(size, dim, timm_count):
    # A shape token is a distillation token with another teacher: (cls, shape) has exactly the
    # distilled model's count; all three tokens add one token, one position slot and one head.
    distilled = timm_count(f"deit_{size}_distilled_patch16_224")
    assert count(f"deit_{size}_shape_patch16_224") == distilled
    assert count(f"deit_{size}_distilled_shape_patch16_224") == distilled + dim + dim + (dim * 1000 + 1000)


def test_resnet50_param_count_matches_timm(timm_count):
    assert count("resnet50") == 25_557_032 == timm_count("resnet50")


def test_bit_resnetv2_param_count_matches_timm(timm_count):
    assert count("resnetv2_50x1_bit") == timm_count("resnetv2_50x1_bit")


def test_hybrid_vit_param_count_matches_timm(timm_count):
    # timm's default config for this name is the 21k feature extractor (num_classes=0): ask for 1000.
    assert count("vit_base_r50_s16_224") == timm_count("vit_base_r50_s16_224", num_classes=1000)
