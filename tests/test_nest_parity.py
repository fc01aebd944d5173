"""NesT matches timm's PyTorch NesT with the same (randomized) weights: nest_tiny with both pool
paddings (`nest_tiny_jx` ↔ tf_same, `nest_tiny` ↔ symmetric) and a CIFAR-size multi-head model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import timm.models.nest as timm_nest
import torch
from flax import nnx

from nest_jax.convert.nest import load_timm_nest  # noqa: E402
from nest_jax.models import create_model  # noqa: E402


def randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter random (biases, norms and position embeddings too), so layout bugs show."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            is_norm_scale = name.endswith("weight") and p.ndim == 1
            p.copy_(1.0 + 0.2 * noise if is_norm_scale else 0.05 * noise)
    return module.eval()


def abstract_model(name: str, **kw):
    """Model structure without a random init (which compiles one program per shape: slow on CPU)."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: create_model(name, rngs=nnx.Rngs(0), **kw)))

    def fill(s):
        if jax.dtypes.issubdtype(s.dtype, jax.dtypes.prng_key):
            return jax.random.key(0)
        return jnp.zeros(s.shape, s.dtype)

    return nnx.merge(graphdef, jax.tree.map(fill, state))


def logits_both(tm: torch.nn.Module, model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    load_timm_nest(model, tm.state_dict())
    with torch.no_grad():
        ref = tm(torch.from_numpy(x)).numpy()
    ours = nnx.jit(lambda m, x: m(x))(model, jnp.asarray(x.transpose(0, 2, 3, 1)))
    return np.asarray(ours), ref


def test_nest_tiny_matches_timm_both_paddings():
    x = np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype(np.float32)
    results = {}
    for timm_name, padding in (("nest_tiny_jx", "tf_same"), ("nest_tiny", "symmetric")):
        tm = randomize(timm_nest.__dict__[timm_name](pretrained=False, drop_path_rate=0.0), seed=1)
        model = abstract_model("nest_tiny", gelu="exact", pool_padding=padding)
        ours, ref = logits_both(tm, model, x)
        results[padding] = ours
        assert np.abs(ours - ref).max() < 1e-4, (padding, np.abs(ours - ref).max())
    # Same weights, other padding: the outputs really differ (the option is not a no-op).
    assert np.abs(results["tf_same"] - results["symmetric"]).max() > 1e-3


def test_cifar_multi_head_matches_timm():
    tm = randomize(
        timm_nest.Nest(
            img_size=32,
            in_chans=3,
            patch_size=1,
            num_levels=4,
            embed_dims=(192,) * 4,
            num_heads=(3,) * 4,
            depths=(3,) * 4,
            num_classes=10,
            pad_type="same",
            drop_path_rate=0.0,
        ),
        seed=2,
    )
    model = abstract_model("nest_tiny_cifar", num_classes=10, attention="multi_head", gelu="exact")
    x = np.random.default_rng(3).normal(size=(2, 3, 32, 32)).astype(np.float32)
    ours, ref = logits_both(tm, model, x)
    assert np.abs(ours - ref).max() < 1e-4, np.abs(ours - ref).max()


def test_timm_import_rejects_wrong_shapes_and_multi_query():
    tm = timm_nest.Nest(
        img_size=32,
        patch_size=1,
        num_levels=4,
        embed_dims=(16,) * 4,
        num_heads=(2,) * 4,
        depths=(1,) * 4,
        num_classes=10,
    )
    sd = tm.state_dict()
    model = abstract_model(
        "nest_tiny_cifar", num_classes=10, attention="multi_head", dims=(16,) * 4, heads=(2,) * 4, depths=(1,) * 4
    )
    load_timm_nest(model, sd)
    sd["levels.1.pos_embed"] = torch.zeros(1, 16, 9, 16)
    with pytest.raises(ValueError, match=r"'levels/1/pos_embed'.*\(1, 16, 9, 16\).*\(1, 16, 16, 16\)"):
        load_timm_nest(model, sd)
    mq = abstract_model("nest_tiny_cifar", num_classes=10, dims=(16,) * 4, heads=(2,) * 4, depths=(1,) * 4)
    with pytest.raises(ValueError, match="multi-head attention only"):
        load_timm_nest(mq, tm.state_dict())
