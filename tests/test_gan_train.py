"""GAN training: the losses by hand, one step moves both networks (and the EMA and the spectral-norm
power iterates), and a run stopped and resumed from its checkpoint is bit-identical to an
uninterrupted one (train_gan on an in-memory data source, 8 simulated devices)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from nest_jax.train import gan as G
from nest_jax.train.config_base import gan_section
from nest_jax.train.gan_loop import image_grid, train_gan
from tests._train_helpers import SyntheticData


def tiny_gan_config(loss="hinge", r1=0.0, steps=4):
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.task = "gan"
    c.dataset = dict(name="synthetic", image_size=8, num_channels=3)
    c.train = dict(
        global_batch_size=8,
        num_train_steps=steps,
        stop_after_steps=None,
        log_every_steps=2,
        checkpoint_every_steps=2,
        max_to_keep=5,
        num_epochs=0,
    )
    c.mesh = dict(axes=dict(data=-1, fsdp=1, tensor=1))
    c.gan = gan_section(
        generator=dict(
            name="nest_gan_32",
            overrides=dict(dims=(16, 8, 8), depths=(1, 1, 1), heads=(2, 1, 1), block_size=2, patch_size=1),
        ),
        discriminator=dict(name="sagan_discriminator_32", overrides=dict(widths=(8, 8), down=(True, False))),
        latent_dim=8,
        loss=loss,
        r1_gamma=r1,
        ema_decay=0.9,
        sample_every_steps=2,
        num_sample_images=4,
    )
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


def _restore_all(workdir, step):
    mgr = ocp.CheckpointManager(str(workdir / "checkpoints"))
    tree = mgr.restore(step, args=ocp.args.StandardRestore())
    mgr.close()
    return tree


@pytest.mark.slow  # three short runs, each compiling its step: ~40 CPU-s
def test_resume_is_bit_exact(tmp_path):
    data = SyntheticData(num_classes=2, image_size=8, channels=3, num_train=64)
    straight = tiny_gan_config()
    train_gan(straight, str(tmp_path / "a"), data=data)
    stopped = tiny_gan_config()
    stopped.train.stop_after_steps = 2
    train_gan(stopped, str(tmp_path / "b"), data=data)
    out = train_gan(tiny_gan_config(), str(tmp_path / "b"), data=data)  # resumes at step 2
    assert out["step"] == 4
    a, b = _restore_all(tmp_path / "a", 4), _restore_all(tmp_path / "b", 4)
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb) and set(a) >= {"g", "d", "g_ema", "g_opt", "d_opt", "d_stats", "rng"}
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    pngs = sorted(p.name for p in (tmp_path / "b" / "samples").iterdir())
    assert pngs == ["step_000000.png", "step_000002.png", "step_000004.png"]
    assert any((tmp_path / "b" / "tb").iterdir())


def test_image_grid_layout():
    imgs = np.stack([np.full((2, 3, 1), v, np.float32) for v in (-1.0, 0.0, 1.0)])
    grid = image_grid(imgs, cols=2)
    assert grid.shape == (2 * 3 + 1, 2 * 4 + 1, 3)
    assert grid[1, 1, 0] == 0 and grid[1, 5, 0] == 128 and grid[4, 1, 0] == 255 and grid[0, 0, 0] == 255
