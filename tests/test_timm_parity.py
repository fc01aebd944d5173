"""timm -> nest_jax: same random weights, same input, same logits (float32, eval mode, <= 1e-4).

timm initializes biases to 0 and norms to (1, 0), which would hide a transposed bias or a swapped
scale/bias: every 1-D parameter is perturbed, and BatchNorm running statistics are randomized.
Our models are built from shapes only and filled from the checkpoint (no initializer runs).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import timm
import torch
from flax import nnx

from nest_jax.convert.timm import load_timm, timm_vit_to_params
from nest_jax.models import create_model

TOL = 1e-4


def randomized_timm(name: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return randomize(timm.create_model(name, pretrained=False, **kw).eval())


def randomize(model):
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def empty_model(name: str, **kw) -> nnx.Module:
    """The model's structure with zero-filled variables: loading needs no random init (which compiles
    one XLA program per distinct parameter shape)."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: create_model(name, rngs=nnx.Rngs(0), **kw)))

    def fill(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.key(0)
        return jnp.asarray(np.zeros(x.shape, x.dtype))

    return nnx.merge(graphdef, jax.tree.map(fill, state))


def inputs(size: int, seed: int = 1):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))
    return x, jnp.asarray(x.numpy().transpose(0, 2, 3, 1))  # NCHW for torch, NHWC for us


@nnx.jit
def forward(model, x):
    return model(x)


@nnx.jit
def forward_eval_and_train(model, x):
    return model(x), model(x, train=True, capture="heads")


def check_logits(name: str, size: int = 224, seed: int = 0, **kw):
    tm = randomized_timm(name, seed, **kw)
    ours = empty_model(name, img_size=size, **{k: v for k, v in kw.items() if k != "img_size"})
    load_timm(ours, tm.state_dict())
    x_t, x_j = inputs(size)
    with torch.no_grad():
        ref = tm(x_t).numpy()
    out = np.asarray(forward(ours, x_j))
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=0, atol=TOL)
    assert np.abs(ref).max() > 0.1  # the comparison is not between near-zero vectors
    return tm, ours, x_t, x_j


def test_vit_small_matches_timm():
    check_logits("vit_small_patch16_224")


def test_deit_small_matches_timm():
    check_logits("deit_small_patch16_224", seed=1)


def test_deit_small_distilled_matches_timm_both_heads():
    tm = randomized_timm("deit_small_distilled_patch16_224")
    ours = empty_model("deit_small_distilled_patch16_224")
    load_timm(ours, tm.state_dict())
    x_t, x_j = inputs(224)
    with torch.no_grad():
        ref = tm(x_t).numpy()  # eval: the mean of the two heads' raw logits
        f = tm.forward_features(x_t)  # (B, 2 + N, D) after the final norm: [cls, dist, patches]
        want = {"cls": tm.head(f[:, 0]).numpy(), "dist": tm.head_dist(f[:, 1]).numpy()}
    out, (out_train, recorded) = forward_eval_and_train(ours, x_j)  # no dropout: train mode is deterministic
    np.testing.assert_allclose(np.asarray(out), ref, rtol=0, atol=TOL)
    np.testing.assert_allclose(np.asarray(out_train), ref, rtol=0, atol=TOL)  # one return shape in both modes
    got = recorded["heads"]
    assert set(got) == {"cls", "dist"}
    for k in want:
        np.testing.assert_allclose(np.asarray(got[k]), want[k], rtol=0, atol=TOL)
    assert np.abs(want["cls"] - want["dist"]).max() > 0.1  # the heads differ: a swap would be caught


def test_resnet50_matches_timm_with_batchnorm_running_stats():
    check_logits("resnet50")


def test_bit_resnetv2_matches_timm():
    # One block per stage keeps it fast; built like timm's `resnetv2_50x1_bit` (fixed stem, StdConv2d
    # eps 1e-8), whose factory fixes the depth.
    from functools import partial

    from timm.layers import StdConv2d
    from timm.models.resnetv2 import ResNetV2

    torch.manual_seed(0)
    tm = ResNetV2(layers=(1, 1, 1, 1), stem_type="fixed", conv_layer=partial(StdConv2d, eps=1e-8)).eval()
    randomize(tm)
    ours = empty_model("resnetv2_50x1_bit", layers=(1, 1, 1, 1))
    load_timm(ours, tm.state_dict())
    x_t, x_j = inputs(96)
    with torch.no_grad():
        ref = tm(x_t).numpy()
    np.testing.assert_allclose(np.asarray(forward(ours, x_j)), ref, rtol=0, atol=TOL)
    assert np.abs(ref).max() > 0.1


def test_hybrid_vit_matches_timm():
    # Two transformer layers at 64 px keep it fast; the BiT stem and the 1x1 patch embedding are whole.
    check_logits("vit_base_r50_s16_224", size=64, img_size=64, depth=2, num_classes=1000)


def test_shape_token_reads_distillation_token_and_head():
    tm = randomized_timm("deit_tiny_distilled_patch16_224", img_size=32, depth=1)
    sd = tm.state_dict()
    ours = nnx.eval_shape(lambda: create_model("deit_tiny_shape_patch16_224", img_size=32, depth=1))
    arrays = timm_vit_to_params(sd, ours)
    np.testing.assert_array_equal(arrays["shape_token"], sd["dist_token"].numpy())
    np.testing.assert_array_equal(arrays["head_shape/kernel"], sd["head_dist.weight"].numpy().T)
    assert "dist_token" not in arrays


def test_wrong_shapes_raise_naming_parameter_and_both_shapes(tmp_path):
    tm = randomized_timm("deit_tiny_patch16_224", img_size=32, depth=1)
    sd = {k: v.numpy() for k, v in tm.state_dict().items()}
    ours = empty_model("deit_tiny_patch16_224", img_size=32, depth=1)
    bad = dict(sd, **{"head.weight": np.zeros((10, 192), np.float32)})
    with pytest.raises(ValueError, match=r"'head/kernel'.*\(192, 10\).*\(192, 1000\)"):
        load_timm(ours, bad)
    with pytest.raises(ValueError, match=r"'pos_embed'.*\(1, 5, 192\).*\(1, 17, 192\)"):
        load_timm(empty_model("deit_tiny_patch16_224", img_size=64, depth=1), sd)
    # The file path branch (.safetensors) loads the same values as the in-memory dict.
    from safetensors.numpy import save_file

    save_file(sd, str(tmp_path / "m.safetensors"))
    load_timm(ours, tmp_path / "m.safetensors")
    np.testing.assert_array_equal(np.asarray(ours.pos_embed[...]), sd["pos_embed"])


def test_wrong_batchnorm_statistic_shape_is_named():
    ours = empty_model("resnet50", num_classes=10)
    sd = {k: v.numpy() for k, v in randomized_timm("resnet50", num_classes=10).state_dict().items()}
    sd["bn1.running_var"] = np.ones((65,), np.float32)
    with pytest.raises(ValueError, match=r"'stem/norm/var'.*\(65,\).*\(64,\)"):
        load_timm(ours, sd)
    del sd["bn1.running_var"]
    with pytest.raises(ValueError, match=r"no value for model statistic 'stem/norm/var'"):
        load_timm(ours, sd)
