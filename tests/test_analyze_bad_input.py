"""`python -m nest_jax.analyze` and `config.evals` on bad values: each is one line and exit code 2,
before any work, with the same message from the training loop's `build_evaluators`; a workdir whose
newest checkpoint is unreadable is analysed from the previous one, and reading a checkpoint logs
nothing from orbax. The CLI runs in process on configs/digits_nest_tiny.py (random weights) or a
tiny ViT on digits, with `--batch-size 8 --max-batches 1`."""

import json
import logging
import shutil
from pathlib import Path

import ml_collections
import pytest

from nest_jax.analyze.__main__ import main
from nest_jax.errors import UserError
from nest_jax.train.evaluators import EvalData, build_evaluators, model_fn_of
from nest_jax.train.sharding import make_mesh

REPO = Path(__file__).resolve().parents[1]
NEST = str(REPO / "configs" / "digits_nest_tiny.py")
FAST = ["--batch-size=8", "--max-batches=1"]

TINY_VIT = """
from nest_jax.train.config_base import digits_vit_config
def get_config():
    c = digits_vit_config("vit_tiny_patch16_224")
    c.model.overrides = dict(patch_size=8, dim=16, depth=1, num_heads=2, mlp_dim=32)
    c.train.update(dict(num_train_steps=2, checkpoint_every_steps=1, log_every_steps=100, eval_every_steps=0,
                        global_batch_size=8, eval_batch_size=8))
    c.evals = {}
    return c
"""


def _error(capsys, argv: list[str]) -> str:
    """Runs the CLI; asserts exit code 2 and one line on stderr after the notes; returns that line."""
    assert main(argv) == 2
    lines = [ln for ln in capsys.readouterr().err.strip().splitlines() if ": note: " not in ln]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(
    "analysis, opt, words",
    [
        ("occlusion", "seed=abc", ["seed='abc'", "an int"]),  # was a ValueError traceback
        ("all", "seed=abc", ["seed='abc'", "an int"]),  # was rc 0 with the analyses skipped
        ("occlusion", "ratios=abc", ["ratios='abc'", "a sequence of float"]),  # was a TypeError/ValueError
        ("few_shot", "shots=(1.5,)", ["shots=(1.5,)", "a sequence of int"]),
        ("patch_shuffle", "grids=((2,),)", ["grids=((2,),)", "(int, int)"]),
        ("occlusion", "per_image=2", ["per_image=2", "a bool"]),
    ],
)
def test_an_opt_of_the_wrong_type_names_the_setting_value_and_type(capsys, tmp_path, analysis, opt, words):
    """Catches --opt values of the wrong type that crashed (int('abc')) or, under `all`, skipped
    every analysis and exited 0: checked from the signature's annotations before any model is built."""
    line = _error(capsys, [analysis, f"--config={NEST}", f"--out={tmp_path}", "--opt", opt, *FAST])
    assert all(w in line for w in words), line
    assert not list(tmp_path.iterdir())  # nothing written: checked before any work


@pytest.mark.parametrize(
    "analysis, opts, words",
    [
        ("occlusion", ["ratios=(1.5,)"], ["ratios=(1.5,)", "[0, 1]"]),
        ("adversarial_patch", ["fractions=(0.1,2.0)"], ["fraction=2.0", "45-px", "32×32"]),  # a 45-px patch on 32 px
        ("adversarial_patch", ["fractions=(1.0,)", "shape=circle"], ["36-px circle"]),  # the disk overflows
        ("adversarial_patch", ["steps=0"], ["steps=0", "at least 1"]),  # IndexError with a trained model
        ("adversarial_patch", ["target=10"], ["target=10", "0..9"]),
        ("adversarial_patch", ["placements=0"], ["placements=0", "at least 1"]),
        ("adversarial_patch", ["fractions=()"], ["fractions=()"]),
        ("occlusion", ["repeats=0"], ["repeats=0", "at least 1"]),
        ("patch_shuffle", ["repeats=0"], ["repeats=0", "at least 1"]),
        ("few_shot", ["shots=(0,)"], ["shots=(0,)", "at least 1"]),
        ("few_shot", ["seeds=0"], ["seeds=0", "at least 1"]),
        ("all", ["shots=(0,)"], ["shots=(0,)", "at least 1"]),  # under `all` too, before cka etc. run
        ("patch_shuffle", ["grids=((3,3),)"], ["grids=((3, 3),)", "divide the 32×32"]),
        ("occlusion", ["max_batches=-1"], ["max_batches=-1", "at least 0"]),  # was empty results, rc 0
    ],
)
def test_an_out_of_range_setting_is_one_line_naming_it(capsys, tmp_path, analysis, opts, words):
    """Catches settings outside their range that ran anyway (steps=0, a patch larger than the
    image, a grid that does not divide it, max_batches=-1 reading nothing) or failed with a
    message that did not name the value."""
    argv = [analysis, f"--config={NEST}", f"--out={tmp_path}", *FAST]
    line = _error(capsys, argv + [a for o in opts for a in ("--opt", o)])
    assert all(w in line for w in words), line
    assert not list(tmp_path.glob("*.json"))  # no analysis ran


def test_the_training_loop_gets_the_same_one_line_errors():
    """config.evals goes through the same checks as --opt: a wrong type is one UserError line
    naming config.evals.<name> (was a ValueError traceback from int('abc'))."""
    from flax import nnx

    from nest_jax import data
    from nest_jax.cli_config import load_config
    from nest_jax.train.trainer import build_model

    cfg = load_config(NEST)
    model_fn, _ = model_fn_of(build_model(cfg, 10, nnx.Rngs(params=0, dropout=1)))
    eval_data = EvalData(cfg, data, make_mesh({"data": -1}), batch_size=8, max_batches=1)
    for entry, words in [
        (dict(kind="occlusion", seed="abc"), ["config.evals.robust", "seed='abc'", "an int"]),
        (dict(kind="adversarial_patch", steps=0), ["steps=0", "at least 1"]),
    ]:
        with cfg.unlocked():
            cfg.evals = ml_collections.ConfigDict({"robust": entry})
        with pytest.raises(UserError) as e:
            build_evaluators(cfg, model_fn, eval_data)
        assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


@pytest.mark.parametrize(
    "flag, words",
    [("--max-batches=-1", ["--max-batches=-1", "at least 0"]), ("--batch-size=0", ["--batch-size=0", "at least 1"])],
)
def test_bad_batch_flags_are_one_line(capsys, tmp_path, flag, words):
    """Catches --max-batches=-1 (empty results, rc 0) and --batch-size=0 (silently the config's)."""
    line = _error(capsys, ["pos_embed", f"--config={NEST}", f"--out={tmp_path}", "--batch-size=8", flag])
    assert all(w in line for w in words), line


def test_out_on_a_file_or_a_full_disk_is_one_line(capsys, tmp_path):
    """Catches the FileExistsError / OSError tracebacks: --out naming a file, and a results file on
    a full disk (a real ENOSPC: the JSON's path is a link to /dev/full)."""
    a_file = tmp_path / "results.txt"
    a_file.write_text("mine")
    line = _error(capsys, ["pos_embed", f"--config={NEST}", f"--out={a_file}", *FAST])
    assert str(a_file) in line and "is a file" in line and a_file.read_text() == "mine"
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    out = tmp_path / "out"
    out.mkdir()
    (out / "pos_embed.json").symlink_to("/dev/full")
    line = _error(capsys, ["pos_embed", f"--config={NEST}", f"--out={out}", *FAST])
    assert "cannot write the results of pos_embed" in line and "No space left on device" in line


def test_a_config_with_a_syntax_error_and_an_unknown_set_key_are_one_line(capsys, tmp_path):
    """Pins: a config file that does not parse, and --set of a field the config lacks."""
    bad = tmp_path / "bad.py"
    bad.write_text("def get_config(:\n")
    line = _error(capsys, ["pos_embed", f"--config={bad}", f"--out={tmp_path / 'o'}"])
    assert str(bad) in line and "SyntaxError" in line
    line = _error(capsys, ["pos_embed", f"--config={NEST}", f"--out={tmp_path / 'o'}", "--set", "model.nmae=x"])
    assert "model.nmae" in line and "name" in line


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A tiny ViT on digits trained 2 steps: checkpoints 1 and 2, and its config file."""
    from nest_jax.cli_config import load_config
    from nest_jax.train.loop import train_and_evaluate

    root = tmp_path_factory.mktemp("run")
    config = root / "tiny_vit.py"
    config.write_text(TINY_VIT)
    train_and_evaluate(load_config(str(config)), str(root / "work"))
    return root / "work", str(config)


def _truncate_newest(work: Path) -> None:  # as a copy interrupted by a full disk or a killed rsync
    for f in (work / "checkpoints" / "2" / "default").rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])


def test_an_unreadable_newest_checkpoint_falls_back_to_the_previous_one(workdir, tmp_path, capsys):
    """Catches the 153-line traceback: the newest readable checkpoint is analysed (the same numbers
    as a workdir holding only checkpoint 1), one warning line names the unreadable one, and the
    workdir is left as it was (analysis only reads)."""
    work, config = workdir
    broken, only_first = tmp_path / "broken", tmp_path / "only_first"
    shutil.copytree(work, broken)
    shutil.copytree(work, only_first)
    _truncate_newest(broken)
    shutil.rmtree(only_first / "checkpoints" / "2")
    before = sorted(p.name for p in (broken / "checkpoints").iterdir())
    assert main(["pos_embed", f"--config={config}", f"--checkpoint={broken}", f"--out={tmp_path / 'a'}"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint 2" in err[0] and "unreadable" in err[0] and len(err[0]) < 400, err
    assert sorted(p.name for p in (broken / "checkpoints").iterdir()) == before
    assert main(["pos_embed", f"--config={config}", f"--checkpoint={only_first}", f"--out={tmp_path / 'b'}"]) == 0
    got = json.loads((tmp_path / "a" / "pos_embed.json").read_text())
    assert got == json.loads((tmp_path / "b" / "pos_embed.json").read_text())
    one = tmp_path / "one"  # the only checkpoint unreadable
    shutil.copytree(broken, one)
    shutil.rmtree(one / "checkpoints" / "1")
    line = _error(capsys, ["pos_embed", f"--config={config}", f"--checkpoint={one}", f"--out={tmp_path / 'c'}"])
    assert "no readable checkpoint" in line and len(line) < 400


def test_reading_a_checkpoint_logs_nothing_from_orbax(workdir, tmp_path, caplog):
    """Catches orbax's info lines (handler creation, read throughput) shown when reading a
    checkpoint with logging at INFO."""
    work, config = workdir
    with caplog.at_level(logging.INFO):
        assert main(["pos_embed", f"--config={config}", f"--checkpoint={work}", f"--out={tmp_path}"]) == 0
    orbax = [r.getMessage() for r in caplog.records if "/orbax/" in r.pathname]
    assert not orbax, orbax


def test_a_gan_config_is_one_line_pointing_at_eval_mode(capsys, tmp_path):
    """A GAN config used to build a default-sized generator from its informative model.name and
    then fail to read the workdir with a wrong "no EMA parameters" message."""
    gan = str(REPO / "configs" / "digits_nest_gan.py")
    line = _error(capsys, ["samples", f"--config={gan}", f"--out={tmp_path / 'o'}", *FAST])
    assert "is a GAN run (task='gan')" in line and f"--config={gan} --workdir=WORKDIR --mode=eval" in line
