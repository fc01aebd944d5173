"""`nest_jax.main`'s command line: one-line errors with exit code 2, 75 after preemption, a useful --help.

Parsing is tested in-process (no jax work happens before the config is built); two short
subprocesses check what a user's shell sees.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import ml_collections
import pytest

from nest_jax import main as main_mod
from nest_jax.cli_config import load_config, split_argv
from nest_jax.errors import PREEMPTED_EXIT_CODE, USAGE_EXIT_CODE, Preempted, UserError
from nest_jax.overrides import apply_overrides

REPO = Path(__file__).resolve().parents[1]
DIGITS = str(REPO / "configs" / "digits_nest_tiny.py")


def _error(argv, capsys, monkeypatch):
    """Runs main(argv) in-process with the job replaced; returns (exit code, stderr)."""
    monkeypatch.setattr(main_mod, "_setup_logging", lambda *a: None)
    monkeypatch.setattr(main_mod, "run_job", lambda *a: pytest.fail("the job must not start"))
    code = main_mod.main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["--config=configs/digits_nest_tny.py", "--workdir=/tmp/w"],
            "config file configs/digits_nest_tny.py does not exist; did you mean --config=configs/digits_nest_tiny.py?",
        ),
        (
            [f"--config={REPO}/configs/cifar10_nest.py:huge", "--workdir=/tmp/w"],
            "get_config('huge') raised ValueError: config argument must be tiny, small or base, got 'huge'",
        ),
        (
            [f"--config={DIGITS}", "--workdir=/tmp/w", "--config.train.num_train_stepz=3"],
            "--config.train.num_train_stepz: the config has no field 'train.num_train_stepz'; "
            "close field names: --config.train.num_train_steps",
        ),
        (
            [f"--config={DIGITS}", "--workdir=/tmp/w", "--config.num_train_steps=3"],  # right name, wrong group
            "close field names: --config.train.num_train_steps",
        ),
        (
            [f"--config={DIGITS}", "--workdir=/tmp/w", "--config.train.num_train_steps=abc"],
            "--config.train.num_train_steps=abc: expects an integer (int), e.g. --config.train.num_train_steps=100",
        ),
        (
            [f"--config={DIGITS}", "--workdir=/tmp/w", "--config.optimizer.lr=fast"],
            "--config.optimizer.lr=fast: expects a number (float), e.g. --config.optimizer.lr=0.002",
        ),
        ([f"--config={DIGITS}", "--workdir=/tmp/w", "--config.model.remat=maybe"], "expects true or false"),
        ([f"--config={DIGITS}"], "missing --workdir=DIR"),
        (["--workdir=/tmp/w"], "missing --config=PATH[:ARG]"),
        ([f"--config={DIGITS}", "--workdirr=/tmp/w"], "unknown flag --workdirr; did you mean --workdir?"),
        ([f"--config={DIGITS}", "--workdir=/tmp/w", "--mode=evaluate"], "--mode=evaluate is not a mode"),
    ],
)
def test_command_line_mistakes_are_one_line_exit_2(argv, expected, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    code, err = _error(argv, capsys, monkeypatch)
    assert code == USAGE_EXIT_CODE
    assert err.startswith("nest_jax.main: error: ") and err.count("\n") == 1, err
    assert expected in err and "Traceback" not in err


def test_overrides_are_parsed_as_the_fields_types():
    config = load_config(f"{DIGITS}")
    cl = split_argv(
        [
            "--config.train.num_train_steps=60",
            "--config.optimizer.lr",
            "1e-3",
            "--config.seed=7",
            "--config.model.remat",
            "--config.model.overrides.depths=(2, 2)",
            "--config.dataset.data_dir=/data/tfds",
            "--noconfig.dataset.validate_files",
            "--config.mesh.axes.data",
            "-1",
            "--config.mesh.axes.fsdp=2",
        ]
    )
    apply_overrides(config, cl.overrides)
    assert config.train.num_train_steps == 60 and type(config.train.num_train_steps) is int
    assert config.optimizer.lr == 0.001 and config.seed == 7 and config.model.remat is True
    assert config.model.overrides.depths == (2, 2) and config.dataset.data_dir == "/data/tfds"
    assert config.dataset.validate_files is False and config.mesh.axes.data == -1 and config.mesh.axes.fsdp == 2
    absl = split_argv(["--log_dir", "/tmp/logs", "-v", "1", "--alsologtostderr", "--config.seed", "3"])
    assert absl.absl_args == ["--log_dir", "/tmp/logs", "-v", "1", "--alsologtostderr"] and not absl.positional
    assert absl.overrides == [("seed", "3")]
    with pytest.raises(AttributeError):  # locked: no new fields slip in through code either
        config.train.num_train_stepz = 3
    with pytest.raises(UserError, match=r"--config.model is a group of fields; override one of them"):
        apply_overrides(config, [("model", "x")])


def test_every_shipped_config_loads_through_the_command_line_loader():
    names = sorted(p.name for p in (REPO / "configs").glob("*.py"))
    for name in names:
        config = load_config(str(REPO / "configs" / name))
        assert config.model.name and config.dataset.name, name
    assert load_config(f"{REPO}/configs/cifar10_nest.py:small").model.name == "nest_small_cifar"


def test_a_config_without_get_config_or_returning_something_else(tmp_path):
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(UserError, match="defines no get_config"):
        load_config(str(tmp_path / "empty.py"))
    (tmp_path / "dict.py").write_text("def get_config():\n    return {'a': 1}\n")
    with pytest.raises(UserError, match="returned dict, not an ml_collections.ConfigDict"):
        load_config(str(tmp_path / "dict.py"))
    (tmp_path / "ok.py").write_text(
        "import ml_collections\ndef get_config(arg='a'):\n    return ml_collections.ConfigDict({'v': arg})\n"
    )
    assert load_config(str(tmp_path / "ok.py") + ":b").v == "b"
    assert isinstance(load_config(str(tmp_path / "ok.py")), ml_collections.ConfigDict)


def test_user_error_and_preemption_from_the_job_map_to_exit_codes(capsys, monkeypatch):
    monkeypatch.setattr(main_mod, "_setup_logging", lambda *a: None)
    argv = [f"--config={DIGITS}", "--workdir=/tmp/w", "--mode=eval"]

    def no_checkpoint(config, workdir, mode):  # what the loop raises for eval on an empty workdir
        assert mode == "eval" and workdir == "/tmp/w"
        raise UserError(f"no checkpoint in {workdir}/checkpoints to evaluate; train first (--mode=train)")

    monkeypatch.setattr(main_mod, "run_job", no_checkpoint)
    assert main_mod.main(argv) == USAGE_EXIT_CODE == 2
    assert capsys.readouterr().err == (
        "nest_jax.main: error: no checkpoint in /tmp/w/checkpoints to evaluate; train first (--mode=train)\n"
    )
    assert main_mod.main([*argv, "--debug"]) == 2  # --debug: the traceback, then the same line
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "no_checkpoint" in err and err.endswith("(--mode=train)\n")

    def sigterm(config, workdir, mode):
        raise Preempted(120, f"{workdir}/checkpoints")

    monkeypatch.setattr(main_mod, "run_job", sigterm)
    monkeypatch.setenv("NEST_JAX_DEBUG", "0")
    assert main_mod.main(argv) == PREEMPTED_EXIT_CODE == 75
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "saved checkpoint 120 in /tmp/w/checkpoints" in err and "rerun" in err
    monkeypatch.setattr(main_mod, "run_job", lambda *a: (_ for _ in ()).throw(KeyError("bug")))
    with pytest.raises(KeyError):  # a bug is not a user error: it keeps its traceback and exit code 1
        main_mod.main(argv)


def test_divergence_is_one_line_exit_1_and_a_finished_run_says_so(capsys, monkeypatch):
    monkeypatch.setattr(main_mod, "_setup_logging", lambda *a: None)
    monkeypatch.setenv("NEST_JAX_DEBUG", "0")
    argv = [f"--config={DIGITS}", "--workdir=/tmp/w"]
    run_job = main_mod.run_job

    def diverged(config, workdir, mode):  # what the loop raises when the loss or parameters go NaN
        raise FloatingPointError("non-finite training loss nan at step 5: the last good checkpoint is step 4")

    monkeypatch.setattr(main_mod, "run_job", diverged)
    assert main_mod.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "last good checkpoint is step 4" in err and "Traceback" not in err
    # A run that had already reached its last step: the loop's message gets its own line, and the
    # metrics line holds only metrics.
    import nest_jax.train.loop as loop

    monkeypatch.setattr(
        loop, "train_and_evaluate", lambda config, workdir: {"step": 60, "message": "this run already reached step 60"}
    )
    result = run_job(load_config(DIGITS), "/tmp/w", "train")
    out = capsys.readouterr().out
    assert out.splitlines() == ["this run already reached step 60", "final metrics: {'step': 60}"]
    assert result == {"step": 60}


def _first_docstring_lines() -> dict[str, str]:
    out = {}
    for path in sorted((REPO / "configs").glob("*.py")):
        out[path.name] = ast.get_docstring(ast.parse(path.read_text())).split("\n")[0]
    return out


def test_help_explains_the_program_its_configs_and_exit_codes():
    text = main_mod.usage()
    shipped = _first_docstring_lines()
    assert len(shipped) >= 9
    for name, line in shipped.items():
        row = next(r for r in text.splitlines() if r.strip().startswith(name))
        shown = row.split(name, 1)[1].strip().rstrip("…")
        assert line.startswith(shown) and len(shown) >= 40, (name, row)
    for needle in (
        "--config.train.num_train_steps=",
        "--config.optimizer.lr=",
        "--config.dataset.data_dir=",
        "--config.seed=",
        "--mode=train",
        "--mode=eval",
        "--config.init_from.checkpoint=",
        "resume",
        "README.md",
        "--debug",
        "NEST_JAX_DEBUG=1",
    ):
        assert needle in text, needle
    codes = dict(line.split(None, 1) for line in text.split("EXIT CODES\n")[1].split("\n\n")[0].splitlines())
    assert set(codes) == {"0", "1", str(USAGE_EXIT_CODE), str(PREEMPTED_EXIT_CODE), "130"} and "rerun" in codes["75"]
    assert max(len(r) for r in text.splitlines()) <= 110


def test_help_without_the_configs_folder(monkeypatch):
    monkeypatch.setattr("nest_jax.cli_config.configs_dir", lambda: None)
    assert "no configs/ folder beside this installation" in main_mod.usage()


def _shell(*args, cwd=REPO):
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "TF_CPP_MIN_LOG_LEVEL")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "nest_jax.main", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_shell_sees_help_and_a_one_line_error(tmp_path):
    proc = _shell("--help", cwd=tmp_path)  # outside the repository: the configs are still found
    assert proc.returncode == 0 and proc.stderr == ""
    assert "train or evaluate a ViT, DeiT or NesT" in proc.stdout and "digits_nest_tiny.py" in proc.stdout
    proc = _shell("--config=configs/nope.py", f"--workdir={tmp_path}", "--config.train.num_train_steps=3")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("nest_jax.main: error: config file configs/nope.py does not exist")
    assert proc.stderr.count("\n") == 1 and "digits_nest_tiny" in proc.stderr
