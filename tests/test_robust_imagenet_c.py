"""A stored ImageNet-C (the tfds build `imagenet2012_corrupted/<corruption>_<severity>`) is evaluated
as stored: images reach the model with their own labels, and CE is the error over AlexNet's."""

import functools

import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds
from flax import nnx

from nest_jax.analysis import corruption_eval as E
from tests._data_cfg import mock_tfds

MEAN, STD = np.array((0.485, 0.456, 0.406)), np.array((0.229, 0.224, 0.225))


class LookupModel(nnx.Module):
    """A linear map fitted to the stored images (random projection to 16 features, then an exact
    least-squares fit, 6 images ≤ 16 features): it predicts the true label of even-indexed images and
    label + 1 for odd ones, so top-1 is exactly 1/2 when images and labels arrive intact and aligned."""

    def __init__(self, records):
        x = np.stack([(np.asarray(records[i]["image"], np.float64) / 255 - MEAN) / STD for i in range(len(records))])
        x = x.reshape(len(x), -1)
        proj = np.random.default_rng(0).normal(size=(x.shape[1], 16)) / np.sqrt(x.shape[1])
        targets = np.zeros((len(x), 1000))
        for i in range(len(x)):
            targets[i, (int(records[i]["label"]) + i % 2) % 1000] = 10.0
        self.proj = nnx.Variable(jnp.asarray(proj, jnp.float32))
        self.head = nnx.Variable(jnp.asarray(np.linalg.pinv(x @ proj) @ targets, jnp.float32))

    def __call__(self, x, train=False):
        return x.reshape(len(x), -1) @ self.proj[...] @ self.head[...]


def test_stored_imagenet_c_from_tfds(tmp_path):
    name = "imagenet2012_corrupted/gaussian_noise_1"
    with mock_tfds(name, tmp_path, 6, splits=("validation",)):
        records = tfds.data_source(name, split="validation", data_dir=str(tmp_path))
        model = LookupModel(records)
        load = functools.partial(E.imagenet_c_tfds, str(tmp_path), batch_size=4)
        batches = list(load("gaussian_noise", 1))
        assert [len(b["label"]) for b in batches] == [4, 2]
        out = E.run_stored_corruptions(
            model, load, batches, mean=tuple(MEAN), std=tuple(STD), corruptions=("gaussian_noise",), severities=(1,)
        )
    assert out["top1"] == {"gaussian_noise": [0.5]} and out["clean_top1"] == 0.5
    alexnet = E.ALEXNET_ERRORS_BY_SEVERITY["gaussian_noise"][0]
    np.testing.assert_allclose(out["ce"]["gaussian_noise"], 100 * 0.5 / alexnet, rtol=1e-6)
