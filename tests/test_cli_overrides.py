"""One override grammar for the three command lines: `nest_jax.main --config.F=V`, `nest_jax.analyze
--set F=V` and `nest_jax.convert --set F=V` all go through `cli_config` (existing fields only, each value
parsed for the field's type, one-line errors naming close matches), and read `NEST_JAX_DEBUG` alike."""

from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from nest_jax import main as main_mod
from nest_jax.analyze.__main__ import main as analyze_main
from nest_jax.cli_config import load_config
from nest_jax.convert import load_into, load_params, read_meta
from nest_jax.convert.__main__ import main as convert_main
from nest_jax.convert.nest import params_to_official_nest
from nest_jax.errors import UserError, debug_requested
from nest_jax.models import create_model
from nest_jax.overrides import apply_overrides, model_fields, override

REPO = Path(__file__).resolve().parents[1]
DIGITS, DIGITS_VIT = str(REPO / "configs" / "digits_nest_tiny.py"), str(REPO / "configs" / "digits_vit.py")
# Small enough that an analysis the old code let through finishes quickly before the test fails.
QUICK = ["--batch-size", "8", "--max-batches", "1"]


def _analyze(capsys, tmp_path, *extra):
    code = analyze_main(["norm_ratio", f"--config={DIGITS_VIT}", "--out", str(tmp_path / "an"), *QUICK, *extra])
    return code, capsys.readouterr().err


def test_analyze_set_typo_is_one_line_naming_the_close_field(capsys, tmp_path):
    """The old `--set` unlocked the config, so a misspelt field was silently created and ignored."""
    code, err = _analyze(capsys, tmp_path, "--set", "train.eval_batch_sise=8")
    assert code == 2 and err.count("\n") == 1
    assert "--set train.eval_batch_sise: the config has no field 'train.eval_batch_sise'" in err
    assert "close field names: --set train.eval_batch_size" in err


def test_analyze_set_model_field_is_checked_against_the_models_config(capsys, tmp_path):
    """A model field not yet in `model.overrides` is accepted when the model has it (typed by it) and
    a misspelt one names the model's close field; the old code passed both through untyped."""
    config = load_config(DIGITS_VIT)
    assert override(config, ["model.overrides.skip_removed=(0,)"]) == {"model.overrides.skip_removed": (0,)}
    assert config.model.overrides.skip_removed == (0,)
    code, err = _analyze(capsys, tmp_path, "--set", "model.overrides.skp_removed=(0,)")
    assert code == 2 and err.count("\n") == 1
    assert "model vit_tiny_patch16_224's config has no field 'skp_removed'" in err
    assert "--set model.overrides.skip_removed" in err


@pytest.mark.parametrize(
    "item, message",
    [
        ("train.eval_batch_size=many", "--set train.eval_batch_size=many: expects an integer (int)"),
        ("optimizer.lr=fast", "--set optimizer.lr=fast: expects a number (float)"),
        ("model.remat=maybe", "--set model.remat=maybe: expects true or false"),
        ("model.overrides.depth=(1,2)", "--set model.overrides.depth=(1,2): expects an integer (int)"),
        ("train.eval_batch_size", "--set train.eval_batch_size: expects FIELD=VALUE"),
    ],
)
def test_analyze_set_wrong_type_is_one_line(capsys, tmp_path, item, message):
    """The old `--set` assigned the literal as is: ConfigDict's raw TypeError (a traceback), or a
    string where a number belongs."""
    code, err = _analyze(capsys, tmp_path, "--set", item)
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_main_and_set_share_one_parser():
    """`--config.F=V` and `--set F=V` give the same values; `distributed.local_device_ids`, read by
    `initialize_distributed`, can now be set (the old schema had no such field)."""
    a, b = load_config(DIGITS), load_config(DIGITS)
    pairs = [
        ("model.overrides.depths", "(2, 2, 2)"),
        ("optimizer.lr", "3e-3"),
        ("dataset.augment.flip", "yes"),
        ("distributed.local_device_ids", "(0, 1)"),
        ("init_from.checkpoint", "/w"),
    ]
    apply_overrides(a, pairs)
    override(b, [f"{k}={v}" for k, v in pairs])
    assert a.to_dict() == b.to_dict()
    assert b.model.overrides.depths == (2, 2, 2) and b.distributed.local_device_ids == (0, 1)
    assert b.optimizer.lr == 0.003 and b.dataset.augment.flip is True


def _flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}/") if isinstance(v, dict) else {f"{prefix}{k}": np.asarray(v)})
    return out


def test_convert_set_tuple_reaches_the_model(tmp_path, capsys):
    """`--set depths=(2,1)` is a tuple for NestConfig (the old JSON parse kept the string '(2,1)',
    which the model refused); the converted model has 2 layers in level 0 and the source's logits."""
    arch = dict(dims=(8, 8), depths=(2, 1), heads=(2, 2))
    src = create_model("nest_tiny_cifar", img_size=8, num_classes=3, rngs=nnx.Rngs(3), **arch)
    npz = tmp_path / "nest.npz"
    np.savez(npz, **_flat(params_to_official_nest(src)))
    out = tmp_path / "ckpt"
    base = ["--model", "nest_tiny_cifar", "--source", "nest_official", "--input", str(npz), "--img-size", "8"]
    sets = ["--set", "depths=(2,1)", "--set", "dims=(8, 8)", "--set", "heads=[2,2]"]
    assert convert_main([*base, "--output", str(out), *sets]) == 0, capsys.readouterr().err
    weights = load_params(out)
    model = weights.new_model()
    load_into(model, weights)
    assert model.config.depths == (2, 1) and len(model.levels[0].layers) == 2 and len(model.levels[1].layers) == 1
    assert read_meta(out)["kwargs"]["depths"] == [2, 1]
    x = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(src(x)), atol=1e-6)
    # The same one-line errors as the other command lines.
    assert convert_main([*base, "--output", str(tmp_path / "b"), *sets, "--set", "dpeths=(1,1)"]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and "model nest_tiny_cifar has no field 'dpeths'; close field names: --set depths" in err
    )
    assert convert_main([*base, "--output", str(tmp_path / "c"), *sets, "--set", "mlp_ratio=wide"]) == 2
    assert "--set mlp_ratio=wide: expects a number (float)" in capsys.readouterr().err


def test_model_fields_are_the_variants_config():
    fields = model_fields("nest_tiny")
    assert fields.depths == (2, 2, 8) and fields.drop_path_rate == 0.2 and fields.attention == "multi_head"
    assert override(fields, ["dtype=bfloat16", "depths=(1, 1)"]) == {"dtype": "bfloat16", "depths": (1, 1)}
    with pytest.raises(UserError, match="Unknown model 'nest_tny'"):
        model_fields("nest_tny")


@pytest.mark.parametrize("value, on", [("1", True), ("yes", True), ("true", True), ("0", False), ("false", False)])
def test_nest_jax_debug_is_read_alike_by_the_three_command_lines(value, on, monkeypatch, capsys, tmp_path):
    """Old code: main took any value but "" and "0" (so "false" showed tracebacks), analyze only "1"
    (so "yes" did not)."""
    monkeypatch.setenv("NEST_JAX_DEBUG", value)
    assert debug_requested() is on
    monkeypatch.setattr(main_mod, "_setup_logging", lambda *a: None)
    assert main_mod.main([f"--config={DIGITS}", "--workdir=/tmp/w", "--config.seed=x"]) == 2
    assert ("Traceback" in capsys.readouterr().err) is on
    argv = ["norm_ratio", f"--config={DIGITS_VIT}", "--out", str(tmp_path), "--set", "seed=x"]
    if on:  # analyze re-raises under --debug
        with pytest.raises(UserError, match="--set seed=x: expects an integer"):
            analyze_main(argv)
    else:
        assert analyze_main(argv) == 2 and "Traceback" not in capsys.readouterr().err
    npz = tmp_path / "missing.npz"
    convert = ["--model", "vit_tiny_patch16_224", "--source", "vit_npz", "--input", str(npz)]
    assert convert_main([*convert, "--output", str(tmp_path / "o")]) == 2
    assert ("Traceback" in capsys.readouterr().err) is on
