"""`python -m nest_jax.export` / `nest_jax.convert.export`: nest_jax weights out to timm and Google's
`.npz`. Checked against timm itself: the exported folder loads with
`timm.create_model("local-dir:DIR", pretrained=True)` and gives nest_jax's logits (float32, <= 1e-5),
and a timm model converted in and exported back is the identical state dict."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import timm
import torch
from flax import nnx
from safetensors.numpy import load_file
from safetensors.torch import save_file

import nest_jax
from nest_jax.convert.export import export_timm, to_timm_state_dict
from nest_jax.errors import UserError
from nest_jax.export.__main__ import main
from tests.test_hub import timm_model
from tests.test_timm_parity import forward, forward_eval_and_train

TOL = 1e-5


def _inputs(size: int):
    x = np.random.default_rng(1).normal(size=(2, size, size, 3)).astype(np.float32)
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), jnp.asarray(x)


def _round_trip(tmp_path, name, tm, size, **ours_kw):
    """timm -> nest_jax (by path) -> timm: identical state dict, and timm's logits on the export."""
    sd = {k: v.numpy() for k, v in tm.state_dict().items()}
    save_file(tm.state_dict(), str(tmp_path / "src.safetensors"))
    model = nest_jax.create_model(name, pretrained=str(tmp_path / "src.safetensors"), **ours_kw)
    notes = export_timm(model, tmp_path / "out", model_name=name)
    back = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert set(back) == set(sd)
    for k in sd:
        assert back[k].dtype == sd[k].dtype and np.array_equal(back[k], sd[k]), k
    exported = timm.create_model(f"local-dir:{tmp_path / 'out'}", pretrained=True).eval()
    x_t, x_j = _inputs(size)
    with torch.no_grad():
        ref = exported(x_t).numpy()
    np.testing.assert_allclose(np.asarray(forward(model, x_j)), ref, rtol=0, atol=TOL)
    assert np.abs(ref).max() > 0.1
    return model, exported, notes


def test_resnet50_round_trip_keeps_batchnorm_statistics(tmp_path):
    _round_trip(tmp_path, "resnet50", timm_model("resnet50", layers=(1, 1, 1, 1)), 64, layers=(1, 1, 1, 1))


def test_nest_tiny_jx_round_trip(tmp_path):
    _, exported, notes = _round_trip(
        tmp_path, "nest_tiny", timm_model("nest_tiny_jx", img_size=32, depths=(2, 2, 8)), 32, img_size=32
    )
    assert type(exported).__name__ == "Nest" and not notes
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["architecture"] == "nest_tiny_jx" and cfg["pretrained_cfg"]["input_size"] == [3, 32, 32]


def test_distilled_deit_round_trip_both_heads(tmp_path):
    tm = timm_model("deit_tiny_distilled_patch16_224", img_size=32, depth=1)
    model, exported, _ = _round_trip(tmp_path, "deit_tiny_distilled_patch16_224", tm, 32, img_size=32, depth=1)
    x_t, x_j = _inputs(32)
    with torch.no_grad():
        f = exported.forward_features(x_t)
        want = {"cls": exported.head(f[:, 0]).numpy(), "dist": exported.head_dist(f[:, 1]).numpy()}
    _, (_, recorded) = forward_eval_and_train(model, x_j)
    got = recorded["heads"]
    for k in want:
        np.testing.assert_allclose(np.asarray(got[k]), want[k], rtol=0, atol=TOL)


def test_shape_token_exports_as_timms_distillation_token_with_a_note(tmp_path):
    tm = timm_model("deit_tiny_distilled_patch16_224", img_size=32, depth=1)
    _, exported, notes = _round_trip(tmp_path, "deit_tiny_shape_patch16_224", tm, 32, img_size=32, depth=1)
    assert len(notes) == 1 and "shape token" in notes[0]
    assert json.loads((tmp_path / "out" / "config.json").read_text())["nest_jax"]["notes"] == notes
    three = nnx.eval_shape(
        lambda: nest_jax.create_model("deit_tiny_distilled_shape_patch16_224", img_size=32, depth=1, num_classes=3)
    )
    with pytest.raises(UserError, match=r"timm has no ViT with prefix tokens \('cls', 'dist', 'shape'\)"):
        to_timm_state_dict(three)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The main job, tiny: 2 training steps of the 1-layer ViT of tests/_train_helpers."""
    from nest_jax.train.loop import train_and_evaluate
    from tests._train_helpers import SyntheticData, tiny_config

    path = tmp_path_factory.mktemp("run")
    cfg = tiny_config(num_train_steps=2, checkpoint_every_steps=2, log_every_steps=100)
    train_and_evaluate(cfg, path, data=SyntheticData())
    return path


def test_cli_exports_a_trained_workdir_to_timm_and_npz(workdir, tmp_path, capsys):
    from nest_jax.convert.vit_npz import vit_npz_to_params
    from nest_jax.data.preprocess import NORMALIZATION

    out = tmp_path / "timm"
    assert main([f"--checkpoint={workdir}", "--to=timm", f"--out={out}"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert [cfg["pretrained_cfg"]["mean"], cfg["pretrained_cfg"]["std"]] == [list(v) for v in NORMALIZATION["imagenet"]]
    assert cfg["num_classes"] == 4 and cfg["model_args"]["patch_size"] == 4
    tm = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    model = nest_jax.create_model(
        "vit_tiny_patch16_224",
        pretrained=str(workdir),
        img_size=8,
        patch_size=4,
        dim=16,
        depth=1,
        num_heads=2,
        mlp_dim=32,
    )
    weights = nest_jax.load_params(workdir)
    np.testing.assert_array_equal(np.asarray(model.head.kernel[...]), weights.params["head/kernel"])
    x_t, x_j = _inputs(8)
    with torch.no_grad():
        ref = tm(x_t).numpy()
    np.testing.assert_allclose(np.asarray(forward(model, x_j)), ref, rtol=0, atol=TOL)
    # The same weights in Google's layout read back through the npz importer.
    assert main([f"--checkpoint={workdir}", "--to=npz", f"--out={tmp_path / 'vit.npz'}"]) == 0
    with np.load(tmp_path / "vit.npz", allow_pickle=False) as f:
        back = vit_npz_to_params(dict(f))
    assert set(back) == set(weights.params)
    for k, v in weights.params.items():
        np.testing.assert_array_equal(back[k], v)
    # A path's GELU form is told from its file: Google's npz tanh, timm's exact, a workdir as built.
    from nest_jax.convert.hub import path_fields

    assert path_fields("vit_tiny_patch16_224", tmp_path / "vit.npz") == {"gelu": "tanh"}
    assert path_fields("vit_tiny_patch16_224", out) == {"gelu": "exact"}
    assert path_fields("vit_tiny_patch16_224", workdir) == {}
    # And the exported folder is itself a pretrained= path (and a config's model.pretrained).
    again = nest_jax.create_model(
        "vit_tiny_patch16_224", pretrained=str(out), img_size=8, patch_size=4, dim=16, depth=1, num_heads=2, mlp_dim=32
    )
    np.testing.assert_array_equal(np.asarray(again.pos_embed[...]), weights.params["pos_embed"])


def test_cli_bad_input_is_one_line_and_exit_status_2(tmp_path, capsys):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a": ')  # header cut off
    assert main([f"--checkpoint={bad}", "--model=vit_tiny_patch16_224", f"--out={tmp_path / 'o'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("nest_jax.export: error:") and "truncated or corrupt" in err
    assert main([f"--checkpoint={bad}", f"--out={tmp_path / 'o'}"]) == 2
    assert "pass --model" in capsys.readouterr().err
    assert main([f"--checkpoint={bad}", "--set=depth=1", f"--out={tmp_path / 'o'}"]) == 2
    assert "pass --model too" in capsys.readouterr().err
    assert main([f"--checkpoint={tmp_path / 'nope'}", f"--out={tmp_path / 'o'}"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_config_model_pretrained_starts_training_from_the_weights(workdir, tmp_path):
    """`config.model.pretrained` (a path here; a tag reads the Hub cache as above): the first step
    starts from those weights, so after one AdamW step of lr 1e-4 every parameter is within ~lr."""
    from nest_jax.train.loop import train_and_evaluate
    from tests._train_helpers import SyntheticData, tiny_config

    cfg = tiny_config(num_train_steps=1, checkpoint_every_steps=1, log_every_steps=100)
    cfg.model.pretrained = str(workdir)
    cfg.optimizer.update(lr=1e-4, warmup_steps=0, ema_decay=0.0)
    train_and_evaluate(cfg, tmp_path / "ft", data=SyntheticData())
    start, after = nest_jax.load_params(workdir).params, nest_jax.load_params(tmp_path / "ft").params
    assert set(start) == set(after)
    for k in start:
        np.testing.assert_allclose(after[k], start[k], rtol=0, atol=2e-4, err_msg=k)
    cfg.init_from.checkpoint = str(workdir)
    with pytest.raises(UserError, match="not both"):
        train_and_evaluate(cfg, tmp_path / "both", data=SyntheticData())


def test_bit_resnetv2_state_dict_round_trip(tmp_path):
    """BiT (GroupNorm, 1x1-conv classifier): timm -> nest_jax -> timm is the identical state dict."""
    from functools import partial

    from timm.layers import StdConv2d
    from timm.models.resnetv2 import ResNetV2

    from tests.test_timm_parity import randomize

    torch.manual_seed(0)
    tm = randomize(ResNetV2(layers=(1, 1, 1, 1), stem_type="fixed", conv_layer=partial(StdConv2d, eps=1e-8)).eval())
    save_file(tm.state_dict(), str(tmp_path / "bit.safetensors"))
    model = nest_jax.create_model(
        "resnetv2_50x1_bit", pretrained=str(tmp_path / "bit.safetensors"), layers=(1, 1, 1, 1)
    )
    back = to_timm_state_dict(model)
    sd = {k: v.numpy() for k, v in tm.state_dict().items()}
    assert set(back) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)
    with pytest.raises(UserError, match=r"resnetv2_50x1_bit has layers \(3, 4, 6, 3\)"):
        export_timm(model, tmp_path / "out", model_name="resnetv2_50x1_bit")
