"""`dataset.augment_on="device"`: the JAX ops equal the host's NumPy ops (themselves pinned to
TensorFlow / PIL in test_data_augment.py) for the same random choices, the choices follow the
papers' distributions, the whole chain gives the host chain's images, and the compiled train step
stays free of conditionals and host round trips."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nest_jax import data
from nest_jax.data import augment, device_augment, preprocess, randaugment
from nest_jax.data.train_stream import stack
from tests._configs import load_config
from tests._data_cfg import dataset_config
from tests.test_data_augment import IMAGE  # (20, 24, 3) float32, multiples of 1/255

_apply_op = jax.jit(device_augment.apply_op)
_jitter = jax.jit(device_augment.color_jitter)
GEOMETRIC = {"rotate", "shear_x", "shear_y", "translate_x", "translate_y"}


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("op", randaugment.OPS)
def test_randaugment_op_equals_the_host_op(op, channels):
    """Same op, level and sign → the host's output. Pixel ops agree to float32 rounding; geometric
    ops read the same source pixels except where a source coordinate lies on a half-pixel boundary
    and a fused multiply-add rounds it the other way (a wrong transform moves most pixels)."""
    image = IMAGE if channels == 3 else IMAGE[..., :1]
    for level in (0.1, 0.5, 0.73, 1.0):
        for sign in (-1.0, 1.0):
            host = randaugment.apply_op(op, image, level, sign)
            dev = np.asarray(_apply_op(jnp.int32(randaugment.OPS.index(op)), image, jnp.float32(level), sign))
            assert dev.shape == host.shape
            if op in GEOMETRIC:
                assert np.mean(np.abs(dev - host) > 1e-6) <= 0.01, (op, level, sign)
            else:
                np.testing.assert_allclose(dev, host, atol=2e-6, err_msg=f"{op} {level} {sign}")


def test_equalize_and_posterize_match_on_8_bit_levels():
    """The two ops defined on 8-bit levels, on an image with many repeated levels (a histogram
    with empty bins and a dominant top level: PIL's step rule)."""
    rng = np.random.default_rng(0)
    image = (rng.integers(0, 6, (16, 16, 3)) * 40 / 255).astype(np.float32)
    for op in ("equalize", "posterize", "autocontrast"):
        host = randaugment.apply_op(op, image, 0.9, 1.0)
        dev = np.asarray(_apply_op(jnp.int32(randaugment.OPS.index(op)), image, jnp.float32(0.9), 1.0))
        np.testing.assert_allclose(dev, host, atol=1e-6, err_msg=op)


@pytest.mark.parametrize("channels", [3, 1])
def test_color_jitter_equals_the_host_for_sampled_choices(channels):
    image = IMAGE if channels == 3 else IMAGE[..., :1]
    seen_orders = set()
    for i in range(24):
        choices = augment.sample_color_jitter(np.random.default_rng([3, i]), strength=0.5)
        seen_orders.add(tuple(choices["order"]))
        host = augment.apply_color_jitter(image, choices)
        dev = np.asarray(_jitter(image, jax.tree.map(jnp.asarray, choices)))
        np.testing.assert_allclose(dev, host, atol=3e-6, err_msg=str(choices))
    assert len(seen_orders) > 10  # many op orders exercised


def test_sampled_choices_follow_the_papers_distributions():
    """RandAugment (Cubuk et al. 2020): op uniform over 14, level N(0.9, 0.05) clipped to ≤ 1, sign
    ±1 and p = 0.5; SimCLR jitter (Chen et al. 2020): applied 0.8, grey 0.2, factors in
    [1 − 0.8s, 1 + 0.8s], hue in [−0.2s, 0.2s], order a permutation; erasing: prob, area ≤ 1/3."""
    n = 4000
    ra = [randaugment.sample(np.random.default_rng([1, i]), layers=2) for i in range(n)]
    ops = np.concatenate([c["op"] for c in ra])
    counts = np.bincount(ops, minlength=14)
    expected = 2 * n / 14
    assert ((counts - expected) ** 2 / expected).sum() < 36.1  # χ², 13 dof, p ≈ 0.001
    levels = np.concatenate([c["level"] for c in ra])
    assert abs(levels.mean() - 0.9) < 0.005 and abs(np.median(levels) - 0.9) < 0.005 and levels.max() <= 1.0
    assert abs(np.concatenate([c["apply"] for c in ra]).mean() - 0.5) < 0.03
    assert abs((np.concatenate([c["sign"] for c in ra]) > 0).mean() - 0.5) < 0.03

    s = 0.4
    jit = [augment.sample_color_jitter(np.random.default_rng([2, i]), strength=s) for i in range(n)]
    assert abs(np.mean([c["apply"] for c in jit]) - 0.8) < 0.02
    assert abs(np.mean([c["grey"] for c in jit]) - 0.2) < 0.02
    factors = np.stack([c["factors"] for c in jit])
    assert factors[:, :3].min() >= 1 - 0.8 * s - 1e-6 and factors[:, :3].max() <= 1 + 0.8 * s + 1e-6
    assert abs(factors[:, 3]).max() <= 0.2 * s + 1e-6 and abs(factors[:, :3].mean() - 1.0) < 0.01
    assert all(sorted(c["order"]) == [0, 1, 2, 3] for c in jit)

    boxes = np.stack([augment.sample_erasing_box(np.random.default_rng([4, i]), 64, 64, prob=0.25) for i in range(n)])
    areas = (boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2]) / 64**2
    assert abs((areas > 0).mean() - 0.25) < 0.02
    assert areas.max() <= 1 / 3 + 0.05  # the box is clipped to the image and rounded to pixels


def test_host_erasing_writes_noise_exactly_in_the_sampled_box():
    """The box the device receives is where the host chain erases (same stream, same draws)."""
    image = np.zeros((32, 40, 3), np.float32)
    for i in range(200):
        box = augment.sample_erasing_box(np.random.default_rng([5, i]), 32, 40, prob=0.5)
        out = augment.random_erasing(image, np.random.default_rng([5, i]), prob=0.5)
        mask = np.zeros((32, 40), bool)
        mask[box[0] : box[1], box[2] : box[3]] = True
        assert np.array_equal(np.any(out != 0, -1), mask), (i, box)


def _chain_pair(**augment_settings):
    ds = dataset_config(name="image_folder", image_size=24, num_channels=3, normalize="imagenet")
    ds.augment.update(augment_settings)
    host_fn = preprocess.train_fn(ds)
    ds.augment_on = "device"
    return ds, host_fn, preprocess.train_fn(ds)


def test_device_chain_gives_the_host_chains_images():
    """The ImageNet chain (inception crop, flip, RandAugment 2/9, jitter 0.4, erasing 0.5) on uint8
    photographs: the host sends uint8 crops; after the device stages every pixel equals the host
    chain's except inside the erased boxes, where the noise is N(0, 1) from the step's key."""
    ds, host_fn, device_fn = _chain_pair(
        inception_crop=True,
        flip=True,
        color_jitter=0.4,
        random_erasing=0.5,
        randaugment=dict(layers=2, magnitude=9.0, magnitude_std=0.5, prob=0.5),
    )
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (30 + i, 40, 3), dtype=np.uint8) for i in range(32)]
    host = np.stack([host_fn(p, (0, 1, i)) for i, p in enumerate(photos)])
    batch = stack([device_fn(p, (0, 1, i)) for i, p in enumerate(photos)])
    assert batch["image"].dtype == np.uint8 and batch["image"].shape == (32, 24, 24, 3)
    dev = np.asarray(
        jax.jit(device_augment.DeviceAugment.from_config(ds))(jax.random.key(0), batch["image"], batch["augment"])
    )
    inside = np.zeros(host.shape[:3], bool)
    for i, (t, b, left, r) in enumerate(batch["augment"]["erasing"]):
        inside[i, t:b, left:r] = True
    assert 0.02 < inside.mean() < 0.3
    assert np.abs(dev - host)[~inside].max() < 2e-5
    noise = dev[inside]
    assert abs(noise.mean()) < 0.05 and abs(noise.std() - 1.0) < 0.05


def test_grey_float_images_stay_float_and_match():
    """Digits-style float [0, 1] grey crops (with the affine warp) travel as float32."""
    ds = dataset_config(augment=dict(dataset_config().augment, affine=dict(degrees=10.0, translate=0.1, scale=1.1)))
    ds.augment.randaugment.layers = 2
    host_fn = preprocess.train_fn(ds)
    ds.augment_on = "device"
    device_fn = preprocess.train_fn(ds)
    images = [np.random.default_rng(i).random((8, 8)).astype(np.float32) for i in range(8)]
    host = np.stack([host_fn(x, (0, 0, i)) for i, x in enumerate(images)])
    batch = stack([device_fn(x, (0, 0, i)) for i, x in enumerate(images)])
    assert batch["image"].dtype == np.float32 and set(batch["augment"]) == {"randaugment"}
    dev = np.asarray(device_augment.DeviceAugment.from_config(ds)(jax.random.key(0), batch["image"], batch["augment"]))
    geometric = np.isin(batch["augment"]["randaugment"]["op"], [randaugment.OPS.index(o) for o in GEOMETRIC])
    # At 8 px one half-pixel tie moves a large share of pixels: compare the non-geometric draws.
    same = ~(geometric & batch["augment"]["randaugment"]["apply"]).any(1)
    assert same.sum() >= 3
    np.testing.assert_allclose(dev[same], host[same], atol=2e-5)


def test_compiled_train_step_with_device_augmentation_has_no_host_round_trips():
    from nest_jax.train.sharding import make_mesh
    from nest_jax.train.trainer import make_trainer
    from tests._train_helpers import tiny_config

    cfg = tiny_config()
    cfg.dataset.augment_on = "device"
    cfg.dataset.augment.update(dict(color_jitter=0.3, random_erasing=0.25))
    cfg.dataset.augment.randaugment.layers = 2
    cfg.mix.update(dict(mixup_alpha=0.8, cutmix_alpha=1.0))
    tr = make_trainer(
        cfg, make_mesh({"data": 1}, devices=jax.devices()[:1]), num_classes=4, num_train_steps=4, warmup_steps=0
    )
    ds = cfg.dataset
    one = preprocess.device_choices(ds)(lambda stage: np.random.default_rng(stage))
    choices = jax.tree.map(lambda a: jax.ShapeDtypeStruct((8, *np.shape(a)), np.asarray(a).dtype), one)
    batch = {
        "image": jax.ShapeDtypeStruct((8, 8, 8, 3), np.uint8),
        "label": jax.ShapeDtypeStruct((8,), np.int32),
        "augment": choices,
    }
    hlo = tr.train_step.lower(tr.abstract_state, batch, jax.eval_shape(tr.init_rest), {}).compile().as_text()
    assert "scatter" in hlo or "sort" in hlo or "select" in hlo  # equalize's histogram and the op choice are in
    for op in ("conditional", "send", "recv", "infeed", "outfeed"):
        assert not re.search(rf"\b{op}\(", hlo), op
    targets = set(re.findall(r'custom_call_target="([^"]+)"', hlo))
    assert not any("callback" in t.lower() for t in targets), targets


def test_device_augmentation_is_refused_for_the_gan_task_in_one_line():
    from nest_jax.errors import UserError
    from nest_jax.train.validate import validate_config

    cfg = load_config("configs/digits_nest_gan.py")
    cfg.dataset.augment_on = "device"
    with pytest.raises(
        UserError, match=r"dataset.augment_on='device' is for task='classification'; set it to \"host\""
    ):
        validate_config(cfg)
    cfg.task, cfg.dataset.augment_on = "classification", "gpu"
    with pytest.raises(UserError, match=r"dataset.augment_on='gpu'.*device"):
        validate_config(cfg, check_dataset=False)


def test_device_mode_stream_is_the_same_through_worker_processes_and_resumes():
    """The nested batch (crops + choices) crosses grain's worker processes intact and in order,
    and a stream restarted at step k gives batch k: the choices are a function of (seed, k)."""
    from tests._data_cfg import FULL_AUGMENT

    cfg = dataset_config(train_split="test", augment=FULL_AUGMENT, augment_on="device")

    def take(num_workers, start_step, n):
        c = cfg.copy_and_resolve_references()
        c.num_workers = num_workers
        it = data.train_iterator(
            c, global_batch_size=16, seed=0, start_step=start_step, process_index=0, process_count=1
        )
        out = [next(it) for _ in range(n)]
        it.close()
        return out

    fresh = take(0, 0, 4)
    assert set(fresh[0]) == {"image", "label", "augment"}
    assert set(fresh[0]["augment"]) == {"randaugment", "jitter", "erasing"}
    for got, want in zip(take(2, 2, 2), fresh[2:]):
        flat_got, flat_want = jax.tree.leaves(got), jax.tree.leaves(want)
        assert all(type(x) is np.ndarray for x in flat_got)
        for x, y in zip(flat_got, flat_want):
            np.testing.assert_array_equal(x, y)
