"""bfloat16 compute for every family against float32, and the train step's on-device pieces
(mixup/CutMix, EMA under gradient accumulation) against independent recomputations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nest_jax.models import create_model
from nest_jax.train.mixing import mix_batch
from nest_jax.train.sharding import make_mesh, path_str
from nest_jax.train.trainer import make_trainer, shard_batch
from tests._train_helpers import SyntheticData, tiny_config

# Small members of each family (16 px images), parameters float32 in both runs.
FAMILIES = {
    "vit": ("vit_tiny_patch16_224", dict(img_size=16, patch_size=4, dim=32, depth=2, num_heads=2, mlp_dim=64)),
    "deit": (
        "deit_tiny_distilled_patch16_224",
        dict(img_size=16, patch_size=4, dim=32, depth=2, num_heads=2, mlp_dim=64),
    ),
    "nest": ("nest_tiny_cifar", dict(img_size=16, block_size=4, dims=(32, 32, 32), depths=(1, 1, 1), heads=(2, 2, 2))),
    "resnet": ("resnet50", dict(img_size=16, layers=(1, 1), widths=(64, 128))),
}
# bf16 keeps 8 mantissa bits (relative step 2^-8 ≈ 0.4%); a few layers of rounding stay within
# 5% of the logits' spread, which a wrong cast (e.g. a float32 path silently skipped) would not.
TOL = 0.05


def _mesh():
    return make_mesh({"data": 1}, devices=jax.devices()[:1])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_bf16_forward_matches_float32(family):
    name, kw = FAMILIES[family]
    x = jax.random.normal(jax.random.key(0), (4, 16, 16, 3))
    f32 = create_model(name, num_classes=10, rngs=nnx.Rngs(0), **kw)
    b16 = create_model(name, num_classes=10, rngs=nnx.Rngs(0), dtype=jnp.bfloat16, **kw)
    run = nnx.jit(lambda m, x: m(x))
    want, got = np.asarray(run(f32, x), np.float64), run(b16, x)
    assert got.dtype == jnp.bfloat16  # the computation really ran in bf16
    spread = np.ptp(want)
    assert spread > 1e-3
    np.testing.assert_allclose(np.asarray(got, np.float64), want, atol=TOL * spread)


def _train_cfg(family, dtype):
    name, kw = FAMILIES[family]
    cfg = tiny_config()
    cfg.model.name = name
    cfg.model.overrides = dict({k: v for k, v in kw.items() if k != "img_size"}, dtype=dtype)
    if family in ("vit", "deit"):
        cfg.model.overrides.drop_path_rate = 0.0
    cfg.dataset.image_size = 16
    cfg.optimizer.ema_decay = 0.0
    return cfg


@pytest.mark.slow  # eight train-step compilations
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_bf16_train_step_matches_float32(family):
    data = SyntheticData(image_size=16)
    batch = next(data.train_iterator(None, global_batch_size=16, seed=0, process_index=0, process_count=1))
    out = {}
    for dtype in ("float32", "bfloat16"):
        tr = make_trainer(_train_cfg(family, dtype), _mesh(), num_classes=4, num_train_steps=4, warmup_steps=0)
        state = tr.init_state()
        init = jax.tree.map(np.asarray, state["params"])
        state, m = tr.train_step(state, shard_batch(batch, tr.batch_sharding), tr.init_rest(), {})
        assert jax.tree.leaves(state["params"])[0].dtype == jnp.float32  # master weights stay float32
        delta = jax.tree.map(lambda a, b: np.asarray(a, np.float64) - b, state["params"], init)
        out[dtype] = (float(m["loss"]), float(m["grad_norm"]), delta)
    (l32, g32, d32), (l16, g16, d16) = out["float32"], out["bfloat16"]
    np.testing.assert_allclose(l16, l32, rtol=TOL)
    np.testing.assert_allclose(g16, g32, rtol=0.1)
    # The first Adam step moves each weight by ≈ lr·sign(g): the directions must agree.
    a, b = (
        np.concatenate([x.ravel() for x in jax.tree.leaves(d32)]),
        np.concatenate([x.ravel() for x in jax.tree.leaves(d16)]),
    )
    assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.9


def test_mixing_inside_the_jitted_step_matches_a_recomputation():
    """The step's loss equals CE(model(mixed), mixed targets) with the mix drawn from the step key."""
    cfg = tiny_config()
    cfg.model.overrides.drop_path_rate = 0.0
    cfg.mix.update(dict(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, sampling="nest"))
    tr = make_trainer(cfg, _mesh(), num_classes=4, num_train_steps=4, warmup_steps=0)
    state, rest = tr.init_state(), tr.init_rest()
    batch = next(SyntheticData().train_iterator(None, global_batch_size=16, seed=0, process_index=0, process_count=1))
    params = jax.tree.map(np.asarray, state["params"])
    model = tr.model(jax.tree.map(jnp.asarray, params), None, rest)
    key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), 0)
    images, targets = mix_batch(
        jax.random.split(key)[0],
        jnp.asarray(batch["image"]),
        jnp.asarray(batch["label"]),
        num_classes=4,
        mixup_alpha=0.8,
        cutmix_alpha=1.0,
        label_smoothing=0.1,
    )
    assert not np.allclose(images, batch["image"])  # something was mixed
    logits = np.asarray(model(images, train=True), np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    expected = -np.mean(np.sum(np.asarray(targets, np.float64) * logp, -1))
    _, m = tr.train_step(state, shard_batch(batch, tr.batch_sharding), rest, {})
    np.testing.assert_allclose(float(m["loss"]), expected, rtol=1e-5)


def test_ema_moves_only_on_optimizer_updates_under_accumulation():
    cfg = tiny_config()
    cfg.optimizer.update(dict(accum_steps=2, ema_decay=0.5))
    tr = make_trainer(cfg, _mesh(), num_classes=4, num_train_steps=8, warmup_steps=0)
    state, rest = tr.init_state(), tr.init_rest()
    flat = lambda t: {path_str(p): np.asarray(v, np.float64) for p, v in jax.tree_util.tree_flatten_with_path(t)[0]}  # noqa: E731
    ema = flat(state["params"])
    it = SyntheticData().train_iterator(None, global_batch_size=16, seed=0, process_index=0, process_count=1)
    for step in range(1, 5):
        before = flat(state["params"])
        state, _ = tr.train_step(state, shard_batch(next(it), tr.batch_sharding), rest, {})
        params = flat(state["params"])
        if step % 2:  # a micro-batch only: parameters and EMA stay
            assert all(np.array_equal(params[k], before[k]) for k in params)
        else:
            assert any(not np.array_equal(params[k], before[k]) for k in params)
            ema = {k: 0.5 * ema[k] + 0.5 * params[k] for k in ema}
        got = flat(state["ema"])
        for k in ema:
            np.testing.assert_allclose(got[k], ema[k], rtol=1e-6, atol=1e-7, err_msg=f"step {step}: {k}")
