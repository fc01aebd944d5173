"""Pieces of the trainer against hand calculations: distillation losses, decay masks, layer ids,
schedules, and rematerialization."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from nest_jax.models import create_model
from nest_jax.train import losses, optim
from nest_jax.train.config_base import base_config
from nest_jax.train.remat import remat_layers


def _np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_deit_distillation_losses_match_float64():
    rng = np.random.default_rng(0)
    s_cls, s_dist, t = (rng.normal(size=(5, 7)) * 3 for _ in range(3))
    y = np.eye(7)[rng.integers(0, 7, 5)] * 0.9 + 0.1 / 7
    ce = lambda s, q: -(q * _np_log_softmax(s)).sum(-1).mean()  # noqa: E731
    tau, alpha = 2.0, 0.3
    pt, ps = _np_log_softmax(t / tau), _np_log_softmax(s_dist / tau)
    kl = (np.exp(pt) * (pt - ps)).sum(-1).mean() * tau**2
    out = {"cls": jnp.asarray(s_cls, jnp.float32), "dist": jnp.asarray(s_dist, jnp.float32)}
    soft = ml_collections.ConfigDict(dict(kind="soft", alpha=alpha, tau=tau))
    loss, logits = losses.classification_loss(out, jnp.asarray(y), teachers={"dist": (jnp.asarray(t), soft)})
    np.testing.assert_allclose(float(loss), (1 - alpha) * ce(s_cls, y) + alpha * kl, rtol=1e-5)
    np.testing.assert_allclose(logits, (s_cls + s_dist) / 2, rtol=1e-5)
    loss, _ = losses.classification_loss(
        out, jnp.asarray(y), teachers={"dist": (jnp.asarray(t), soft)}, kl_reduction="deit"
    )
    np.testing.assert_allclose(float(loss), (1 - alpha) * ce(s_cls, y) + alpha * kl / 7, rtol=1e-5)
    hard = ml_collections.ConfigDict(dict(kind="hard", alpha=0.5))
    loss, _ = losses.classification_loss(out, jnp.asarray(y), teachers={"dist": (jnp.asarray(t), hard)})
    np.testing.assert_allclose(float(loss), 0.5 * ce(s_cls, y) + 0.5 * ce(s_dist, np.eye(7)[t.argmax(-1)]), rtol=1e-5)


def test_eval_metrics_mask_padding():
    logits = jnp.array([[0.0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [0, 0, 9, 0, 0, 0]])
    m = losses.eval_metrics(logits, jnp.array([5, 0, 0]), jnp.array([1.0, 1.0, 0.0]))
    assert float(m["top1"]) == 2 and float(m["count"]) == 2
    m = losses.eval_metrics(logits, jnp.array([0, 5, 2]), jnp.array([1.0, 1.0, 1.0]))
    assert float(m["top1"]) == 1 and float(m["top5"]) == 1  # labels ranked last are outside the top 5


def _vit():
    return nnx.eval_shape(
        lambda: create_model(
            "vit_tiny_patch16_224", num_classes=4, img_size=8, patch_size=4, dim=16, depth=2, num_heads=2, mlp_dim=32
        )
    )


def test_decay_masks_follow_the_nest_and_timm_rules():
    params = nnx.to_pure_dict(nnx.state(_vit(), nnx.Param))
    nest, timm = optim.decay_mask(params, "nest"), optim.decay_mask(params, "timm")
    assert not nest["pos_embed"] and nest["cls_token"] and nest["layers"][0]["attn"]["qkv_bias"]
    assert nest["norm"]["scale"] and nest["head"]["bias"]
    assert not timm["pos_embed"] and not timm["cls_token"] and not timm["layers"][0]["attn"]["qkv_bias"]
    assert not timm["norm"]["scale"] and not timm["head"]["bias"] and not timm["layers"][1]["mlp"]["fc1"]["bias"]
    assert timm["layers"][0]["attn"]["qkv"] and timm["head"]["kernel"] and timm["patch_embed"]["proj"]["kernel"]


def test_layer_ids_for_layer_wise_lr_decay():
    params = nnx.to_pure_dict(nnx.state(_vit(), nnx.Param))
    ids, count = optim.layer_ids(params)
    assert count == 4
    assert ids["patch_embed"]["proj"]["kernel"] == 0 and ids["pos_embed"] == 0 and ids["cls_token"] == 0
    assert ids["layers"][0]["attn"]["qkv"] == 1 and ids["layers"][1]["mlp"]["fc2"]["bias"] == 2
    assert ids["norm"]["scale"] == 3 and ids["head"]["kernel"] == 3


def test_warmup_cosine_schedule_endpoints():
    opt = base_config().optimizer
    opt.update(dict(schedule="cosine", warmup_init_lr=1e-6, min_lr=1e-5))
    s = optim.make_schedule(opt, peak_lr=1e-3, total_steps=100, warmup_steps=10)
    np.testing.assert_allclose(
        [float(s(0)), float(s(5)), float(s(10)), float(s(100))], [1e-6, 1e-6 + (1e-3 - 1e-6) / 2, 1e-3, 1e-5], rtol=1e-5
    )
    opt.update(dict(lr=None, base_lr=2.5e-4, base_batch=256))
    assert optim.resolve_lr(opt, 1024) == 1e-3


def test_remat_layers_leave_gradients_unchanged():
    def grads(remat):
        m = create_model(
            "vit_tiny_patch16_224",
            num_classes=4,
            img_size=8,
            patch_size=4,
            dim=16,
            depth=2,
            num_heads=2,
            mlp_dim=32,
            drop_path_rate=0.3,
            rngs=nnx.Rngs(params=0, dropout=1),
        )
        if remat:
            assert remat_layers(m, policy=remat) == 2
        g, p, rest = nnx.split(m, nnx.Param, ...)

        @jax.jit
        def f(p, rest):
            model = nnx.merge(g, p, jax.tree.map(lambda x: x, rest))
            nnx.reseed(model, dropout=jax.random.key(3))
            return jnp.sum(model(jnp.ones((4, 8, 8, 3)), train=True) ** 2)

        return jax.grad(f)(p, rest)

    plain = jax.tree.leaves(grads(False))
    for policy in ("nothing_saveable", "dots_with_no_batch_dims_saveable"):
        for a, b in zip(plain, jax.tree.leaves(grads(policy))):
            np.testing.assert_allclose(a, b, atol=1e-6, err_msg=policy)
    with np.testing.assert_raises(ValueError):
        remat_layers(_vit(), policy="everything")


def test_three_head_loss_weights_match_hand_computation():
    """cls learns the labels, dist a soft teacher (α₁), shape a hard teacher (α₂):
    L = (1 − α₁ − α₂)·CE(cls, y) + α₁·τ²·KL(t₁‖s_dist) + α₂·CE(s_shape, argmax t₂)."""
    rng = np.random.default_rng(1)
    s_cls, s_dist, s_shape, t1, t2 = (rng.normal(size=(6, 5)) * 2 for _ in range(5))
    y = np.eye(5)[rng.integers(0, 5, 6)] * 0.9 + 0.02
    ce = lambda s, q: -(q * _np_log_softmax(s)).sum(-1).mean()  # noqa: E731
    a1, a2, tau = 0.3, 0.2, 3.0
    p1, ps = _np_log_softmax(t1 / tau), _np_log_softmax(s_dist / tau)
    kl = (np.exp(p1) * (p1 - ps)).sum(-1).mean() * tau**2
    expected = (1 - a1 - a2) * ce(s_cls, y) + a1 * kl + a2 * ce(s_shape, np.eye(5)[t2.argmax(-1)])
    out = {k: jnp.asarray(v, jnp.float32) for k, v in (("cls", s_cls), ("dist", s_dist), ("shape", s_shape))}
    teachers = {
        "dist": (jnp.asarray(t1), ml_collections.ConfigDict(dict(kind="soft", alpha=a1, tau=tau))),
        "shape": (jnp.asarray(t2), ml_collections.ConfigDict(dict(kind="hard", alpha=a2, tau=1.0))),
    }
    loss, logits = losses.classification_loss(out, jnp.asarray(y), teachers=teachers)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(logits, (s_cls + s_dist + s_shape) / 3, rtol=1e-5)
    # Only dist distilled: cls and shape share the labels' weight 1 − α₁ equally.
    loss, _ = losses.classification_loss(out, jnp.asarray(y), teachers={"dist": teachers["dist"]})
    np.testing.assert_allclose(float(loss), (1 - a1) * (ce(s_cls, y) + ce(s_shape, y)) / 2 + a1 * kl, rtol=1e-5)
    # No teacher: the mean CE of the three heads.
    loss, _ = losses.classification_loss(out, jnp.asarray(y))
    np.testing.assert_allclose(float(loss), (ce(s_cls, y) + ce(s_dist, y) + ce(s_shape, y)) / 3, rtol=1e-5)


def test_layer_ids_on_nest_follow_levels_bottom_up():
    model = nnx.eval_shape(
        lambda: create_model(
            "nest_tiny_cifar",
            num_classes=4,
            img_size=8,
            block_size=2,
            dims=(8, 8, 8),
            depths=(1, 2, 1),
            heads=(2, 2, 2),
        )
    )
    ids, count = optim.layer_ids(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    got = {optim.path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(ids)[0]}
    # By hand: stem 0; level 0's table and layer -> 1; level 1's aggregation and first layer -> 2,
    # its second layer -> 3; level 2's aggregation, table and layer -> 4; final norm and head -> 5.
    expected = {
        "patch_embed": 0,
        "levels/0/pos_embed": 1,
        "levels/0/layers/0": 1,
        "levels/1/pos_embed": 2,
        "levels/1/pool": 2,
        "levels/1/layers/0": 2,
        "levels/1/layers/1": 3,
        "levels/2/pos_embed": 4,
        "levels/2/pool": 4,
        "levels/2/layers/0": 4,
        "norm": 5,
        "head": 5,
    }
    assert count == 6
    for path, i in got.items():
        prefix = next(p for p in sorted(expected, key=len, reverse=True) if path == p or path.startswith(p + "/"))
        assert i == expected[prefix], (path, i)
    assert {p.split("/")[0] for p in got} == {"patch_embed", "levels", "norm", "head"}
