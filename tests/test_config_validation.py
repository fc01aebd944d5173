"""The whole config is checked against the schema before any work starts (`validate_config`): each
bad value is one line naming the field, the value and the fix, exit 2 from `nest_jax.main`, with no
data read, no model built and no workdir touched; and no shipped config is refused (no false alarms).

On the old code each of these values was a traceback (rc 1) after data loading or compilation, or
(num_train_steps=-5) rc 0 with "nothing to train"; here the job is replaced by a failure, so the old
code fails every case by starting it."""

from pathlib import Path

import pytest

from nest_jax import main as main_mod
from nest_jax.errors import USAGE_EXIT_CODE, UserError
from nest_jax.train.validate import validate_config
from tests._configs import load_config
from tests._train_helpers import SyntheticData, tiny_config
from tests.test_configs_schema import ALL_ARGS

REPO = Path(__file__).resolve().parents[1]
DIGITS = str(REPO / "configs" / "digits_nest_tiny.py")
JOB = [
    f"--config={DIGITS}",
    "--config.train.num_train_steps=40",
    "--config.train.checkpoint_every_steps=10",
]

# (override, field the line names, the fix it gives)
CASES = [
    ("model.name=nest_tinny_cifar", "model.name='nest_tinny_cifar'", "did you mean nest_tiny_cifar"),
    ("train.log_every_steps=0", "train.log_every_steps=0", "set --config.train.log_every_steps=100"),
    ("train.num_epochs=nan", "train.num_epochs=nan", "must be a finite number"),
    ("train.num_epochs=inf", "train.num_epochs=inf", "must be a finite number"),
    ("optimizer.name=adamww", "optimizer.name='adamww'", "did you mean adamw?"),
    ("optimizer.schedule=cosin", "optimizer.schedule='cosin'", "did you mean cosine?"),
    ("dataset.image_size=0", "dataset.image_size=0", "must be an integer ≥ 1"),
    ("dataset.image_size=30", "dataset.image_size=30", "Sizes that work: 32"),
    ("mesh.axes.data=3", "mesh.axes={'data': 3", "set --config.mesh.axes.data=-1"),
    ("dataset.name=digitz", "dataset.name='digitz'", "did you mean digits?"),
    ("train.max_to_keep=-1", "train.max_to_keep=-1", "set --config.train.max_to_keep=3"),
    ("train.num_train_steps=-5", "train.num_train_steps=-5", "must be an integer ≥ 1 or None"),
]


@pytest.mark.parametrize("override, field, fix", CASES, ids=[c[0] for c in CASES])
def test_bad_value_is_one_line_exit_2_before_any_work(override, field, fix, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(main_mod, "_setup_logging", lambda *a: None)
    monkeypatch.setattr(main_mod, "run_job", lambda *a: pytest.fail("the job started: the value was not validated"))
    workdir = tmp_path / "run"
    code = main_mod.main([*JOB, f"--workdir={workdir}", f"--config.{override}"])
    err = capsys.readouterr().err
    assert code == USAGE_EXIT_CODE
    assert err.startswith("nest_jax.main: error: ") and err.count("\n") == 1, err
    assert field in err and fix in err and "Traceback" not in err, err
    assert not workdir.exists()


def test_library_callers_get_the_same_line_before_the_workdir_is_touched(tmp_path):
    """train_and_evaluate validates too: the old loop divided by log_every_steps=0 after training
    a step (ZeroDivisionError) and reported a bad mesh as a ValueError from make_mesh."""
    from nest_jax.train.loop import train_and_evaluate

    bad_log = tiny_config(log_every_steps=0)
    with pytest.raises(UserError, match=r"^train.log_every_steps=0 must be an integer ≥ 1; set "):
        train_and_evaluate(bad_log, tmp_path / "a", data=SyntheticData())
    bad_mesh = tiny_config()
    bad_mesh.mesh.axes.data = 3
    with pytest.raises(UserError, match=r"^mesh.axes=\{'data': 3, 'fsdp': 1, 'tensor': 1\} needs 3 devices"):
        train_and_evaluate(bad_mesh, tmp_path / "b", data=SyntheticData())
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("name, arg", [(n, a) for n, args in ALL_ARGS.items() for a in args])
def test_every_shipped_config_passes_validation(name, arg):
    """No false alarms: every config in configs/, with each get_config argument, is accepted."""
    validate_config(load_config(str(REPO / "configs" / name), arg))


def test_tfds_names_are_refused_only_when_close_to_a_built_in_and_not_prepared(tmp_path):
    """Which tfds names exist cannot be known offline: `shapes3d` (a tfds dataset, close to the
    built-in `shapes`) is refused with how to prepare it, and accepted once it is prepared."""
    config = load_config(DIGITS)
    config.dataset.data_dir = str(tmp_path)
    config.dataset.name = "shapes3d"
    with pytest.raises(UserError, match=r"did you mean shapes\? .*tfds build shapes3d --data_dir="):
        validate_config(config)
    (tmp_path / "shapes3d").mkdir()
    validate_config(config)
    config.dataset.name = "some_tfds_name"  # far from every built-in name: the data layer judges it
    validate_config(config)


def test_gan_section_and_teachers_are_checked():
    gan = load_config(str(REPO / "configs" / "digits_nest_gan.py"))
    gan.gan.loss = "hinj"
    with pytest.raises(UserError, match=r"^gan.loss='hinj' is not one of hinge, non_saturating; did you mean hinge\?"):
        validate_config(gan)
    gan.gan.loss = "hinge"
    gan.gan.generator.name = "nest_gan32"
    with pytest.raises(UserError, match=r"^gan.generator.name='nest_gan32' is not a registered model; did you mean"):
        validate_config(gan)
    gan.gan.generator.name = "nest_gan_32"
    gan.dataset.image_size = 30
    with pytest.raises(
        UserError, match=r"^gan.generator.name='nest_gan_32' cannot be built with dataset.image_size=30"
    ):
        validate_config(gan)
    deit = load_config(str(REPO / "configs" / "digits_deit_distilled.py"))
    token = next(iter(deit.distill))
    deit.distill[token].kind = "hrad"
    with pytest.raises(UserError, match=rf"^distill.{token}.kind='hrad' is not one of hard, soft; did you mean hard\?"):
        validate_config(deit)
