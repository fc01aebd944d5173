"""Fine-tuning from a training workdir (pos-embed resize, head re-init) and distillation with a
frozen teacher inside the jitted step, checked against a hand computation of the DeiT loss."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from nest_jax.convert import assign_params, load_params
from nest_jax.train.checkpoint import Checkpointer
from nest_jax.train.distill import load_teachers
from nest_jax.train.init_from import initialize_from
from nest_jax.train.sharding import make_mesh, path_str
from nest_jax.train.trainer import build_model, make_trainer, shard_batch
from tests._train_helpers import SyntheticData, tiny_config


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A training workdir holding one checkpoint of a 1-layer ViT (8 px, 4 classes), written by the
    loop's Checkpointer; its seed differs from the students' so loaded weights differ from fresh ones."""
    workdir = tmp_path_factory.mktemp("teacher")
    cfg = tiny_config()
    cfg.seed = 7
    tr = make_trainer(
        cfg, make_mesh({"data": 1}, devices=jax.devices()[:1]), num_classes=4, num_train_steps=3, warmup_steps=0
    )
    ckpt = Checkpointer(str(workdir), async_save=False)
    ckpt.save(3, tr.init_state())
    ckpt.close()
    return workdir


def _flat(tree):
    return {path_str(p): np.asarray(jax.device_get(v)) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_finetune_resizes_position_embedding_and_reinitializes_the_head(teacher_dir):
    trained = load_params(teacher_dir).params
    cfg = tiny_config()
    cfg.dataset.image_size = 12  # 2×2 -> 3×3 patches
    cfg.init_from.update(dict(checkpoint=str(teacher_dir), source="nest_jax", resize_method="bicubic"))
    mesh = make_mesh({"data": 1}, devices=jax.devices()[:1])
    tr = make_trainer(cfg, mesh, num_classes=3, num_train_steps=3, warmup_steps=0)
    fresh = _flat(tr.init_state()["params"])
    got = _flat(initialize_from(cfg, tr, tr.init_state(), num_classes=3)["params"])
    assert got["pos_embed"].shape == (1, 1 + 9, 16) and trained["pos_embed"].shape == (1, 1 + 4, 16)
    np.testing.assert_array_equal(got["pos_embed"][:, :1], trained["pos_embed"][:, :1])  # cls slot kept
    assert got["head/kernel"].shape == (16, 3)
    # Re-initialized: the fresh init, drawn eagerly here and under jit in init_state (last-ulp differences).
    np.testing.assert_allclose(got["head/kernel"], fresh["head/kernel"], rtol=1e-5, atol=1e-7)
    for k, v in trained.items():
        if not (k.startswith("head/") or k == "pos_embed"):
            np.testing.assert_array_equal(got[k], v, err_msg=k)


def test_hard_distillation_step_uses_the_frozen_teacher(teacher_dir):
    cfg = tiny_config()
    cfg.model.name = "deit_tiny_distilled_patch16_224"
    cfg.model.overrides.drop_path_rate = 0.0
    cfg.mix.label_smoothing = 0.0
    cfg.distill = ml_collections.ConfigDict(
        dict(
            dist=dict(
                model="vit_tiny_patch16_224",
                checkpoint=str(teacher_dir),
                source="nest_jax",
                kind="hard",
                alpha=0.5,
                tau=1.0,
                img_size=None,
                use_ema=False,
                overrides=dict(patch_size=4, dim=16, depth=1, num_heads=2, mlp_dim=32),
            )
        )
    )
    mesh = make_mesh({"data": 1}, devices=jax.devices()[:1])
    teachers, t_params = load_teachers(cfg, mesh, num_classes=4)
    tr = make_trainer(cfg, mesh, num_classes=4, num_train_steps=3, warmup_steps=0, teachers=teachers)
    state, rest = tr.init_state(), tr.init_rest()
    batch = next(SyntheticData().train_iterator(None, global_batch_size=16, seed=0, process_index=0, process_count=1))
    student = build_model(cfg, 4, nnx.Rngs(0))
    assign_params(student, _flat(state["params"]))
    _, recorded = student(jnp.asarray(batch["image"]), train=True, capture="heads")
    out = recorded["heads"]
    t_graph, _, _ = teachers["dist"]
    t_logits = nnx.merge(t_graph, *t_params["dist"])(jnp.asarray(batch["image"]), train=False)
    teacher_before = _flat(t_params["dist"][0])

    def ce(logits, labels):
        logp = jax.nn.log_softmax(np.asarray(logits, np.float64), -1)
        return -np.mean(np.take_along_axis(np.asarray(logp), np.asarray(labels)[:, None], -1))

    assert np.any(np.asarray(jnp.argmax(t_logits, -1)) != batch["label"])  # the teacher's labels matter
    expected = 0.5 * ce(out["cls"], batch["label"]) + 0.5 * ce(out["dist"], jnp.argmax(t_logits, -1))

    _, metrics = tr.train_step(state, shard_batch(batch, tr.batch_sharding), rest, t_params)
    np.testing.assert_allclose(float(metrics["loss"]), expected, rtol=1e-5)
    for k, v in _flat(t_params["dist"][0]).items():  # the teacher did not move
        np.testing.assert_array_equal(v, teacher_before[k], err_msg=k)
