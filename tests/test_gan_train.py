"""GAN training in the one training loop: the losses by hand, one step moves both networks (and the
EMA and the spectral-norm power iterates), a run stopped and resumed from its checkpoint is
bit-identical to an uninterrupted one, and the loop's guarantees hold for the GAN as they do for
classification: one run per workdir, a corrupt newest checkpoint set aside, `--mode=eval` that
never trains, SIGTERM saving and stopping. The workdir tests go through `main.run_job` (the
command line's job, on scikit-learn's digits): before the GAN joined the loop, a second run on a
locked workdir trained anyway, a corrupt newest checkpoint was a page of tracebacks, and eval mode
trained on (2 -> 4 steps; from scratch on an empty workdir)."""

import json
import logging
import os
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from nest_jax.errors import Preempted, UserError
from nest_jax.main import run_job
from nest_jax.train import gan as G
from nest_jax.train.checkpoint import CHECKPOINTS, Checkpointer
from nest_jax.train.config_base import base_config, gan_section, teacher
from nest_jax.train.lock import LOCK_NAME, WorkdirLock
from nest_jax.train.loop import train_and_evaluate
from nest_jax.train.sharding import make_mesh
from tests._train_helpers import SyntheticData

# Tiny networks: a 3-level NesT generator and a 2-block SAGAN discriminator, 8 or 32 px.
TINY_G8 = dict(dims=(16, 8, 8), depths=(1, 1, 1), heads=(2, 1, 1), block_size=2, patch_size=1)
TINY_G32 = dict(dims=(16, 8, 8), depths=(1, 1, 1), heads=(2, 1, 1), block_size=4, patch_size=2)
TINY_D = dict(widths=(8, 8), down=(True, False))


def tiny_gan_config(loss="hinge", r1=0.0, steps=4, evals=None):
    """`base_config()` as a GAN on SyntheticData (8 px, 3 channels), 8 examples per batch."""
    c = base_config()
    c.task = "gan"
    c.dataset.update(dict(name="synthetic", image_size=8, num_channels=3))
    c.train.update(
        dict(global_batch_size=8, num_train_steps=steps, log_every_steps=2, checkpoint_every_steps=2, max_to_keep=5)
    )
    c.evals = ml_collections.ConfigDict(evals or {})
    c.gan = gan_section(
        generator=dict(name="nest_gan_32", overrides=TINY_G8),
        discriminator=dict(name="sagan_discriminator_32", overrides=TINY_D),
        latent_dim=8,
        loss=loss,
        r1_gamma=r1,
        ema_decay=0.9,
    )
    return c


def digits_gan_config(steps=4, stop_after=None):
    """configs/digits_nest_gan.py made tiny: 32 px grey digits, 2-step checkpoints, no evaluations."""
    from tests._configs import CONFIG_DIR, load_config

    c = load_config(os.path.join(CONFIG_DIR, "digits_nest_gan.py"))
    c.gan.generator.overrides = TINY_G32
    c.gan.discriminator = dict(name="sagan_discriminator_32", overrides=TINY_D)
    c.gan.latent_dim = 8
    c.train.update(dict(global_batch_size=8, num_train_steps=steps, checkpoint_every_steps=2, max_to_keep=5))
    c.train.stop_after_steps = stop_after
    c.evals = ml_collections.ConfigDict()
    return c


def test_losses_by_hand():
    r, f = jnp.array([2.0, 0.5, -1.0]), jnp.array([-2.0, 0.3, 1.5])
    hinge_d = np.mean(np.maximum(0, 1 - np.array(r))) + np.mean(np.maximum(0, 1 + np.array(f)))
    assert float(G.d_losses("hinge", r, f)) == pytest.approx(hinge_d)
    assert float(G.g_loss("hinge", f)) == pytest.approx(-np.mean(np.array(f)))
    sp = lambda v: np.log1p(np.exp(v))  # noqa: E731
    ns_d = np.mean(sp(-np.array(r))) + np.mean(sp(np.array(f)))
    assert float(G.d_losses("non_saturating", r, f)) == pytest.approx(ns_d)
    assert float(G.g_loss("non_saturating", f)) == pytest.approx(np.mean(sp(-np.array(f))))


@pytest.mark.parametrize("loss,r1", [("non_saturating", 1.0)])
def test_one_step_updates_both_networks(loss, r1):
    from nest_jax.train.sharding import make_mesh

    config = tiny_gan_config(loss, r1)
    trainer = G.make_gan_trainer(config, make_mesh({"data": -1}))
    state = trainer.init_state()
    before = jax.device_get(state)
    rests = trainer.init_rest()
    batch = {
        "image": jax.device_put(
            np.random.default_rng(0).uniform(-1, 1, (8, 8, 8, 3)).astype(np.float32), trainer.batch_sharding
        )
    }
    state, m = trainer.train_step(state, batch, rests)
    after = jax.device_get(state)
    for key in ("g", "d", "g_ema", "d_stats"):
        moved = [
            not np.array_equal(a, b)
            for a, b in zip(jax.tree.leaves(before[key]), jax.tree.leaves(after[key]))
            if np.size(a) > 1
        ]  # a power iterate of length 1 is ±1 for good
        assert all(moved), f"{key}: {moved.count(False)} of {len(moved)} leaves unchanged"
    assert int(after["step"]) == 1
    assert all(np.isfinite(float(v)) for v in m.values()) and float(m["r1"]) > 0
    # The EMA moved 10% of the way from the old parameters to the new ones (decay 0.9).
    a, b, e = (jax.tree.leaves(t)[0] for t in (before["g"], after["g"], after["g_ema"]))
    np.testing.assert_allclose(e, 0.9 * a + 0.1 * b, rtol=1e-6, atol=1e-7)
    # The evaluated model is the EMA generator: z (B, latent) -> images in [-1, 1].
    images = trainer.eval_model(state, rests)(jnp.zeros((2, 8)))
    assert images.shape == (2, 8, 8, 3) and float(jnp.abs(images).max()) <= 1.0


def _restore_all(workdir, step):
    mgr = ocp.CheckpointManager(str(workdir / "checkpoints"))
    tree = mgr.restore(step, args=ocp.args.StandardRestore())
    mgr.close()
    return tree


SAMPLES = dict(samples=dict(kind="samples", every_steps=2, prefix="", num_images=4, batch_size=8))


@pytest.mark.slow  # three short runs, each compiling its step: ~40 CPU-s
def test_resume_is_bit_exact(tmp_path):
    data = SyntheticData(num_classes=2, image_size=8, channels=3, num_train=64)
    train_and_evaluate(tiny_gan_config(evals=SAMPLES), tmp_path / "a", data=data)
    stopped = tiny_gan_config(evals=SAMPLES)
    stopped.train.stop_after_steps = 2
    train_and_evaluate(stopped, tmp_path / "b", data=data)
    out = train_and_evaluate(tiny_gan_config(evals=SAMPLES), tmp_path / "b", data=data)  # resumes at step 2
    assert out["step"] == 4
    a, b = _restore_all(tmp_path / "a", 4), _restore_all(tmp_path / "b", 4)
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb) and set(a) >= {"g", "d", "g_ema", "g_opt", "d_opt", "d_stats", "rng"}
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # The sample grids of the EMA generator: from initialization on, as PNG files and in TensorBoard.
    pngs = sorted(p.name for p in (tmp_path / "b" / "samples").iterdir())
    assert pngs == ["step_000000.png", "step_000002.png", "step_000004.png"]
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "b").iterdir())


@pytest.mark.slow  # a 2-step classifier (the FID features) and a 2-step GAN: ~30 CPU-s
def test_fid_is_an_evaluator_of_the_gan_run_and_of_eval_mode(tmp_path):
    from tests._train_helpers import tiny_config

    train_and_evaluate(tiny_config(num_train_steps=2), tmp_path / "classifier", data=SyntheticData())
    fid = dict(kind="fid", every_steps=2, prefix="", checkpoint=str(tmp_path / "classifier"), split="test")
    fid.update(num_samples=16, batch_size=8, kid_subsets=4, kid_subset_size=8)
    cfg = tiny_gan_config(steps=2, evals=dict(fid=fid))
    data = SyntheticData(num_eval=24)
    train_and_evaluate(cfg, tmp_path / "gan", data=data)
    rows = [json.loads(line) for line in (tmp_path / "gan" / "metrics.jsonl").read_text().splitlines()]
    curve = {r["step"]: r for r in rows if "fid" in r}
    assert sorted(curve) == [0, 2] and all(curve[s]["fid"] > 0 and "kid_std" in curve[s] for s in curve)
    cfg.mode = "eval"  # the same evaluator on the newest checkpoint: the same latents, the same number
    out = train_and_evaluate(cfg, tmp_path / "gan", data=data)
    assert out["step"] == 2 and out["fid"] == pytest.approx(curve[2]["fid"], rel=1e-6)
    with pytest.raises(UserError, match="unknown setting 'num_sample' of evaluator kind 'fid'; did you mean"):
        train_and_evaluate(tiny_gan_config(evals=dict(fid=dict(kind="fid", num_sample=8))), tmp_path / "x", data=data)


def test_a_second_gan_run_on_a_workdir_in_use_is_refused(tmp_path):
    with WorkdirLock(tmp_path):  # this process holds it, as a running job would
        with pytest.raises(UserError, match=rf"{tmp_path} is in use by another run \(pid {os.getpid()} on "):
            run_job(digits_gan_config(), str(tmp_path), "train")
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / LOCK_NAME).exists()


@pytest.fixture(scope="module")
def stopped_at_4(tmp_path_factory):
    """A digits GAN workdir with checkpoints 2 and 4 of a 6-step run."""
    work = tmp_path_factory.mktemp("gan")
    run_job(digits_gan_config(steps=6, stop_after=4), str(work), "train")
    return work


def test_eval_mode_never_trains_and_needs_a_checkpoint(stopped_at_4, tmp_path):
    before = sorted(os.listdir(stopped_at_4 / "checkpoints"))
    out = run_job(digits_gan_config(steps=6), str(stopped_at_4), "eval")
    assert out["step"] == 4 and sorted(os.listdir(stopped_at_4 / "checkpoints")) == before == ["2", "4"]
    with pytest.raises(UserError, match=f"--mode=eval needs a checkpoint but {tmp_path} has none"):
        run_job(digits_gan_config(), str(tmp_path), "eval")
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_newest_gan_checkpoint_is_set_aside(stopped_at_4, tmp_path, caplog):
    import shutil

    work = tmp_path / "w"
    shutil.copytree(stopped_at_4, work)
    for f in (work / "checkpoints" / "4" / "default").rglob("*"):  # as a copy cut short by a full disk
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
    with caplog.at_level(logging.WARNING):
        out = run_job(digits_gan_config(steps=6), str(work), "train")  # resumes from 2, trains to 6
    assert out["step"] == 6 and (work / "checkpoints" / "4.corrupt").is_dir()
    lines = [r.getMessage() for r in caplog.records if "4.corrupt" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]


def test_sigterm_saves_and_stops_a_gan_run(tmp_path):
    cfg = tiny_gan_config(steps=6)
    cfg.train.checkpoint_every_steps = 100
    with pytest.raises(Preempted) as info:
        train_and_evaluate(cfg, tmp_path, data=SyntheticData(num_classes=2, sigterm_at_step=2))
    assert info.value.step == 3 and Checkpointer(tmp_path).all_steps() == [3]
    assert not (tmp_path / LOCK_NAME).exists()


def test_image_grid_layout():
    from nest_jax.analysis.gan_eval import image_grid

    imgs = np.stack([np.full((2, 3, 1), v, np.float32) for v in (-1.0, 0.0, 1.0)])
    grid = image_grid(imgs, cols=2)
    assert grid.shape == (2 * 3 + 1, 2 * 4 + 1, 3)
    assert grid[1, 1, 0] == 0 and grid[1, 5, 0] == 128 and grid[4, 1, 0] == 255 and grid[0, 0, 0] == 255


def test_the_generator_evaluators_refuse_a_classifier_in_one_line():
    from nest_jax.analysis.gan_eval import SampleGrid
    from nest_jax.models import create_model
    from nest_jax.train.evaluators import EvalData, model_fn_of
    from nest_jax.train.sharding import make_mesh
    from tests._train_helpers import tiny_config

    config = tiny_config()
    model = create_model("vit_tiny_patch16_224", rngs=nnx.Rngs(0), **dict(config.model.overrides, img_size=8))
    model_fn, state = model_fn_of(model)
    grid = SampleGrid(model_fn, EvalData(config, SyntheticData(), make_mesh({"data": -1})), num_images=4)
    with pytest.raises(
        UserError, match=r"^ViT is not a generator \(no config.latent_dim\): samples and fid evaluate GANs$"
    ):
        grid.run(state, 0)


def test_sharding_strict_refuses_a_gan_whose_widths_do_not_split():
    """config.sharding.strict holds for both GAN networks, as it does for a classifier: a
    width that fsdp=8 cannot split is one UserError line, not a silent replication."""
    from nest_jax.train.sharding import make_mesh

    config = tiny_gan_config()
    config.gan.discriminator.overrides.widths = (12, 12)  # 12 channels do not split 8 ways
    config.sharding.strict = True
    with pytest.raises(UserError, match=r"\(12, 1\): dim 0 not split over 'fsdp'.*sharding\.strict") as e:
        G.make_gan_trainer(config, make_mesh({"data": 1, "fsdp": 8, "tensor": 1}))
    assert "\n" not in str(e.value)
    config.sharding.strict = False  # the default: replicated with a warning, and the trainer builds
    G.make_gan_trainer(config, make_mesh({"data": 1, "fsdp": 8, "tensor": 1}))


@pytest.mark.parametrize(
    "field, value, where",
    [
        ("optimizer.lr", 0.5, "gan.g_optimizer and gan.d_optimizer"),
        ("mix.mixup_alpha", 0.8, "unmixed images"),
        ("model.remat", True, "gan.generator and gan.discriminator"),
        ("model.pretrained", "true", "gan.generator and gan.discriminator"),
        ("init_from.checkpoint", "/some/workdir", "starts from scratch"),
        ("gan.g_optimizer.ema_decay", 0.99, "gan.ema_decay"),
        ("gan.d_optimizer.warmup_epochs", 5.0, "set warmup_steps"),
        ("gan.g_optimizer.schedule", "cosine", "constant after warmup_steps"),
    ],
)
def test_a_setting_a_gan_run_would_ignore_is_refused_in_one_line(field, value, where):
    """Each of these was accepted and silently ignored by a GAN run (a learning rate set on the
    classifier's optimizer, a cosine schedule over an unbounded run, ...)."""
    from nest_jax.train.validate import validate_config

    config = tiny_gan_config()
    *groups, key = field.split(".")
    node = config
    for g in groups:
        node = node[g]
    node[key] = value
    config.lock()  # as the command line hands it over: ConfigDict equality would also compare this flag
    with pytest.raises(
        UserError, match=rf"^{re.escape(field)}={re.escape(repr(value))} is not read by task='gan'"
    ) as e:
        validate_config(config, check_dataset=False)
    assert where in str(e.value) and "\n" not in str(e.value)
    # The schema's defaults (model.name naming the generator included) are accepted.
    fresh = tiny_gan_config()
    fresh.model.name = "nest_gan_32"
    fresh.lock()
    validate_config(fresh, check_dataset=False)


def test_a_distillation_teacher_in_a_gan_run_is_refused_by_name():
    from nest_jax.train.validate import validate_config

    config = tiny_gan_config()
    config.distill = ml_collections.ConfigDict({"dist": teacher("deit_tiny_patch16_224", "/teacher")})
    with pytest.raises(
        UserError, match=r"^distill\.dist is not read by task='gan' \(a GAN has no distillation teachers\); remove it$"
    ):
        validate_config(config, check_dataset=False)


def test_a_gan_setting_in_a_classification_run_is_refused_in_one_line():
    from nest_jax.train.validate import validate_config
    from tests._train_helpers import tiny_config

    config = tiny_config()
    config.lock()
    validate_config(config, check_dataset=False)  # the schema's gan section, locked, is accepted
    config.gan.latent_dim = 64
    with pytest.raises(UserError, match=r"^gan\.latent_dim=64 is not read by task='classification' .*task=gan"):
        validate_config(config, check_dataset=False)


def test_an_evaluator_of_the_other_task_is_refused_before_training(tmp_path):
    """A GAN run that kept the schema's classification evaluator trained to its end and then failed
    with a KeyError traceback; a classifier run with a GAN evaluator is refused the same way."""
    from tests._train_helpers import tiny_config

    gan = tiny_gan_config(steps=2)
    gan.evals = base_config().evals  # evals.val: kind "classification"
    data = SyntheticData(num_classes=2, image_size=8, channels=3, num_train=64)
    with pytest.raises(UserError, match=r"^config\.evals\.val: evaluator kind 'classification' is for .*fid, samples$"):
        train_and_evaluate(gan, tmp_path / "gan", data=data)
    assert not list((tmp_path / "gan" / CHECKPOINTS).glob("*"))  # refused before any step
    classifier = tiny_config(num_train_steps=2)
    with classifier.unlocked():
        classifier.evals.grid = dict(kind="samples", every_steps=0, prefix="")
    with pytest.raises(UserError, match=r"^config\.evals\.grid: evaluator kind 'samples' is for task='gan' runs"):
        train_and_evaluate(classifier, tmp_path / "classifier", data=SyntheticData())


def test_load_params_of_a_gan_workdir_gives_the_generator(stopped_at_4):
    """`nest_jax.load_params` of a GAN workdir reads the generator (raw or EMA) as saved (compared
    with the trainer's own restore of the whole state), and the generator built from the run's
    config with them loaded draws what the run's EMA generator draws."""
    import nest_jax
    from nest_jax.convert.common import path_str
    from nest_jax.convert.load import load_into

    config = digits_gan_config(steps=6)
    trainer = G.make_gan_trainer(config, make_mesh({"data": -1}))
    ckpt = Checkpointer(stopped_at_4, max_to_keep=5, create=False)
    step, state = ckpt.restore_latest(trainer.abstract_state, trainer.state_shardings, set_aside=False)
    assert step == 4
    for ema, key in ((False, "g"), (True, "g_ema")):
        weights = nest_jax.load_params(stopped_at_4, ema=ema)
        leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(state[key]))[0]
        saved = {path_str(k.key for k in p): np.asarray(v) for p, v in leaves}
        assert weights.step == 4 and sorted(weights.params) == sorted(saved)
        for k, v in saved.items():
            np.testing.assert_array_equal(weights.params[k], v)
    generator = G.build_generator(config, nnx.Rngs(0))
    assert load_into(generator, weights) == []
    z = jax.random.normal(jax.random.key(0), (2, int(config.gan.latent_dim)))
    want = trainer.eval_model(state, trainer.init_rest())(z, train=False)
    np.testing.assert_allclose(np.asarray(generator(z, train=False)), np.asarray(want), atol=1e-6)


def test_exporting_a_gan_workdir_is_one_line_pointing_at_load_params(stopped_at_4, tmp_path):
    """It built a default-sized generator from the informative model.name and failed on 96
    shape mismatches."""
    from nest_jax.export import export_checkpoint

    with pytest.raises(UserError, match=r"is a GAN run's workdir .* nest_jax\.load_params") as e:
        export_checkpoint(stopped_at_4, tmp_path / "out")
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()
