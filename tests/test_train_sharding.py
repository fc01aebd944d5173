"""Shape-first shardings: axis fallbacks are reported (or refused with sharding.strict), regex rules
override logical names, optimizer moments follow their parameter, and checkpoint weights (teachers,
init_from) land directly in their target shardings on the 8-device test mesh."""

import logging

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from nest_jax.convert.checkpoint import save_params
from nest_jax.errors import UserError
from nest_jax.models import create_model
from nest_jax.train import sharding as shd
from nest_jax.train.config_base import base_config, teacher
from nest_jax.train.distill import load_teachers
from nest_jax.train.init_from import initialize_from
from nest_jax.train.trainer import make_trainer
from tests._train_helpers import tiny_config

VIT = dict(patch_size=4, depth=1, mlp_dim=64)


def _abstract_vit(dim, heads=2):
    model = nnx.eval_shape(
        lambda: create_model("vit_tiny_patch16_224", num_classes=10, img_size=8, dim=dim, num_heads=heads, **VIT)
    )
    return nnx.state(model, nnx.Param)


def test_fit_spec_drops_uneven_and_reused_axes_and_reports_them():
    mesh = shd.make_mesh({"data": 1, "fsdp": 4, "tensor": 2})
    dropped = []
    assert shd._fit_spec(("fsdp", "tensor"), (8, 6), mesh, dropped) == P("fsdp", "tensor")
    assert dropped == []
    assert shd._fit_spec(("fsdp", "tensor"), (10, 6), mesh, dropped) == P(None, "tensor")
    assert dropped == [(0, "fsdp", "size 10 is not divisible by 4")]
    dropped.clear()
    # An axis may split one dimension only; an unknown name is ignored silently (not in this mesh).
    assert shd._fit_spec(("tensor", "tensor", "pipeline"), (4, 4, 4), mesh, dropped) == P("tensor", None, None)
    assert dropped == [(1, "tensor", "already used by another dimension")]
    dropped.clear()
    # Two axes on one dimension: the product must divide it (8 = 4 * 2 does, 12 does not).
    assert shd._fit_spec((("fsdp", "tensor"),), (8,), mesh, dropped) == P(("fsdp", "tensor"))
    assert shd._fit_spec((("fsdp", "tensor"),), (12,), mesh, dropped) == P("fsdp")
    assert dropped == [(0, "tensor", "size 12 is not divisible by 8")]


def test_width_100_vit_on_fsdp_8_warns_once_per_parameter_or_refuses_when_strict(caplog):
    params = _abstract_vit(100)
    mesh = shd.make_mesh({"data": 1, "fsdp": 8, "tensor": 1})
    with caplog.at_level(logging.WARNING, logger="nest_jax.train.sharding"):
        sh = shd.param_shardings(params, mesh)
    records = [r for r in caplog.records if "replicated instead of split" in r.getMessage()]
    assert len(records) == 1  # one warning, listing every parameter
    text = records[0].getMessage()
    wide = [(k, v.shape) for k, v in nnx.to_flat_state(params) if 100 in v.shape]
    assert len(wide) == 17  # all but fc1's bias (MLP width 64) and the head bias (10 classes)
    for k, shape in wide:  # every parameter with a width axis is named, with its shape
        assert f"{'/'.join(map(str, k))} {tuple(shape)}" in text
    assert "'fsdp'" in text and "size 100 is not divisible by 8" in text
    assert not any("fsdp" in str(s.spec) for s in jax.tree.leaves(sh))  # 100 never splits 8 ways
    with pytest.raises(UserError, match=r"cls_token \(1, 1, 100\): dim 2 not split over 'fsdp' .*and 16 more") as e:
        shd.param_shardings(params, mesh, strict=True)
    assert "sharding.strict" in str(e.value) and "\n" not in str(e.value)
    # A width that divides: no warning, the width axis really is split.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="nest_jax.train.sharding"):
        sh = shd.param_shardings(_abstract_vit(64), mesh, strict=True)
    assert not caplog.records
    assert sh["layers"][0]["mlp"]["fc1"]["kernel"].spec[0] == "fsdp"


def test_regex_rules_override_logical_names_first_match_wins():
    mesh = shd.make_mesh({"data": 1, "fsdp": 2, "tensor": 4})
    sh = shd.param_shardings(
        _abstract_vit(64),
        mesh,
        regex_rules=[
            (r"mlp/fc1/kernel$", (None, "fsdp")),
            (r"mlp/fc1", ("tensor",)),
            (r"^head/kernel$", ("fsdp", "tensor")),
        ],
    )
    assert sh["layers"][0]["mlp"]["fc1"]["kernel"].spec == P(None, "fsdp")
    assert sh["layers"][0]["mlp"]["fc1"]["bias"].spec == P("tensor")
    assert sh["head"]["kernel"].spec == P("fsdp", None)  # 10 classes cannot be split over tensor=4
    assert sh["layers"][0]["mlp"]["fc2"]["kernel"].spec == P("tensor", "fsdp")  # logical: mlp, embed


def test_like_params_gives_adam_moments_their_parameter_sharding():
    mesh = shd.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    params = nnx.to_pure_dict(_abstract_vit(64))
    p_sh = shd.param_shardings(_abstract_vit(64), mesh)
    opt_state = jax.eval_shape(optax.adamw(1e-3).init, params)
    # An unrelated leaf of a parameter's shape, and one whose path ends like a parameter's but whose
    # shape differs: neither may take a parameter's sharding.
    fc1 = params["layers"][0]["mlp"]["fc1"]["kernel"]
    tree = {
        "opt": opt_state,
        "other": {"buffer": fc1},
        "stats": {"layers": {0: {"mlp": {"fc1": {"kernel": jax.ShapeDtypeStruct((3,), np.float32)}}}}},
    }
    got = shd.like_params(tree, p_sh, mesh, params)
    adam = got["opt"][0]
    flat_p = {shd.path_str(k): v for k, v in jax.tree_util.tree_flatten_with_path(p_sh)[0]}
    for name, moment in (("mu", adam.mu), ("nu", adam.nu)):
        flat_m = {shd.path_str(k): v for k, v in jax.tree_util.tree_flatten_with_path(moment)[0]}
        assert flat_m.keys() == flat_p.keys(), name
        assert all(flat_m[k] == flat_p[k] for k in flat_p), name
    assert adam.count.spec == P()
    assert any(s.spec != P() for s in flat_p.values())  # the check above is not vacuous
    assert got["other"]["buffer"].spec == P()
    assert got["stats"]["layers"][0]["mlp"]["fc1"]["kernel"].spec == P()


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A `save_params` directory of a 1-layer width-32 ViT with 4 classes (8 px)."""
    model = create_model(
        "vit_tiny_patch16_224", num_classes=4, img_size=8, rngs=nnx.Rngs(5), dim=32, num_heads=2, **VIT
    )
    return save_params(model, tmp_path_factory.mktemp("t") / "ckpt"), model


def _flat(tree):
    return {shd.path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_teacher_params_are_placed_in_their_target_shardings(teacher_dir):
    path, model = teacher_dir
    cfg = tiny_config()
    cfg.model.name = "deit_tiny_distilled_patch16_224"
    cfg.distill.dist = teacher("vit_tiny_patch16_224", str(path), source="nest_jax", dim=32, num_heads=2, **VIT)
    mesh = shd.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    _, placed = load_teachers(cfg, mesh, num_classes=4)
    got = {shd.path_str(k): v.get_value() for k, v in nnx.to_flat_state(placed["dist"][0])}
    want = shd.param_shardings(nnx.state(model, nnx.Param), mesh)
    want = {shd.path_str(k): v for k, v in jax.tree_util.tree_flatten_with_path(want)[0]}
    expected = {shd.path_str(k): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert got.keys() == want.keys() == expected.keys()
    for k, arr in got.items():
        assert arr.sharding == want[k], k
        np.testing.assert_array_equal(np.asarray(arr), expected[k], err_msg=k)
    qkv = got["layers/0/attn/qkv"]  # (embed, 3, heads, kv) -> (fsdp, None, tensor, None)
    assert qkv.sharding.spec == P("fsdp", None, "tensor", None) and qkv.addressable_shards[0].data.shape == (
        16,
        3,
        1,
        16,
    )


def test_init_from_places_weights_like_the_state_and_keeps_fresh_heads(teacher_dir):
    path, model = teacher_dir
    cfg = tiny_config()
    cfg.model.overrides.update(dim=32, mlp_dim=64)
    cfg.init_from.update(dict(checkpoint=str(path), source="nest_jax"))
    mesh = shd.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    tr = make_trainer(cfg, mesh, num_classes=3, num_train_steps=2, warmup_steps=0)
    fresh_state = tr.init_state()
    fresh_head = np.asarray(fresh_state["params"]["head"]["kernel"])
    state = initialize_from(cfg, tr, fresh_state, num_classes=3)
    saved = {shd.path_str(k): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    got, want_sh = _flat(state["params"]), _flat(tr.state_shardings["params"])
    for k, arr in got.items():
        assert arr.sharding == want_sh[k], k
        if k.startswith("head/"):
            continue
        np.testing.assert_array_equal(np.asarray(arr), saved[k], err_msg=k)
    np.testing.assert_array_equal(np.asarray(got["head/kernel"]), fresh_head)  # 4 -> 3 classes: fresh
    for k, arr in _flat(state["ema"]).items():
        np.testing.assert_array_equal(np.asarray(arr), np.asarray(got[k]), err_msg=k)


def test_missing_checkpoints_name_the_config_field(tmp_path):
    cfg = tiny_config()
    cfg.model.name = "deit_tiny_distilled_patch16_224"
    cfg.distill.dist = teacher("vit_tiny_patch16_224", None, **VIT)
    mesh = shd.make_mesh({"data": 1}, devices=jax.devices()[:1])
    with pytest.raises(UserError, match=r"--config\.distill\.dist\.checkpoint is not set"):
        load_teachers(cfg, mesh, num_classes=4)
    cfg.distill.dist.update(dict(checkpoint=str(tmp_path), source="timm"))
    with pytest.raises(UserError, match=r"--config\.distill\.dist\.checkpoint: .* is a directory"):
        load_teachers(cfg, mesh, num_classes=4)
    cfg = base_config()
    cfg.init_from.update(dict(checkpoint=str(tmp_path / "nope.npz"), source="vit_npz"))
    with pytest.raises(UserError, match=r"--config\.init_from\.checkpoint: .*nope\.npz does not exist"):
        from nest_jax.train.init_from import read_fitted

        read_fitted(cfg.init_from, None, flag="--config.init_from.checkpoint")
