"""CAM for NesT against a NumPy float64 hand computation, the mean-of-CAM = logit identity, and the
weakly-supervised localization helpers on hand cases."""

import jax
import numpy as np
import pytest
from flax import nnx
from skimage.transform import resize

from nest_jax.analysis import box_from_cam, box_iou, class_activation_map
from nest_jax.models import create_model


@pytest.fixture(scope="module")
def model_and_result():
    model = create_model(
        "nest_tiny_cifar", num_classes=10, rngs=nnx.Rngs(0), dims=(8,) * 4, depths=(1,) * 4, heads=(1,) * 4
    )
    # non-trivial LayerNorm affine and head bias, so the test sees every term
    model.norm.scale[...] = 1.0 + 0.3 * jax.random.normal(jax.random.key(5), (8,))
    model.norm.bias[...] = 0.2 * jax.random.normal(jax.random.key(6), (8,))
    model.head.bias[...] = 0.1 * jax.random.normal(jax.random.key(7), (10,))
    x = jax.random.normal(jax.random.key(8), (3, 32, 32, 3))
    return model, x, class_activation_map(model, x)


def test_cam_of_linear_head_matches_numpy(model_and_result):
    model, x, r = model_and_result
    _, inter = model(x, capture=("features",))
    a = np.asarray(inter["features"][-1], np.float64)  # (B, 4, 4, C) top map before the norm
    mu, var = a.mean(-1, keepdims=True), a.var(-1, keepdims=True)
    f = (a - mu) / np.sqrt(var + 1e-6) * np.asarray(model.norm.scale[...]) + np.asarray(model.norm.bias[...])
    w = np.asarray(model.head.kernel[...], np.float64)
    c = np.asarray(r.target)
    want = np.stack([f[b] @ w[:, c[b]] for b in range(3)])
    np.testing.assert_allclose(np.asarray(r.cam), want, rtol=1e-4, atol=1e-5)
    # bilinear upsampling with half-pixel centres and edge clamping, as scikit-image does it
    up = np.stack([resize(want[b], (32, 32), order=1, mode="edge", anti_aliasing=False) for b in range(3)])
    np.testing.assert_allclose(np.asarray(r.upsampled), up, rtol=1e-4, atol=1e-5)


def test_mean_of_cam_plus_bias_equals_logit(model_and_result):
    model, _, r = model_and_result
    c = np.asarray(r.target)
    assert (c == np.asarray(r.logits).argmax(-1)).all()  # default target: the predicted class
    lhs = np.asarray(r.cam).mean((1, 2)) + np.asarray(model.head.bias[...])[c]
    np.testing.assert_allclose(lhs, np.asarray(r.logits)[np.arange(3), c], rtol=1e-5, atol=1e-6)


def test_box_iou_hand_cases():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (10, 10, 20, 20)) == 0.0  # touching corners: half-open boxes
    np.testing.assert_allclose(box_iou((0, 0, 10, 10), (5, 0, 15, 10)), 50 / 150)
    np.testing.assert_allclose(box_iou((0, 0, 4, 4), (1, 1, 3, 3)), 4 / 16)
    np.testing.assert_allclose(box_iou(np.array([[0, 0, 2, 2], [0, 0, 1, 1]]), (0, 0, 2, 2)), [1.0, 0.25])
    assert box_iou((3, 3, 3, 5), (0, 0, 9, 9)) == 0.0  # empty box


def test_box_from_cam_largest_component_and_tight():
    cam = np.zeros((20, 30))
    cam[2:6, 3:8] = 1.0  # 20 px blob
    cam[10:18, 15:27] = 0.9  # 96 px blob: the largest component
    assert box_from_cam(cam, 0.5) == (10, 15, 18, 27)
    assert box_from_cam(cam, 0.5, mode="tight") == (2, 3, 18, 27)
    assert box_from_cam(cam, 0.95) == (2, 3, 6, 8)  # the weaker blob falls below the threshold
    assert box_from_cam(np.ones((4, 5))) == (0, 0, 4, 5)
    diag = np.zeros((5, 5))
    diag[[0, 1, 2], [0, 1, 2]] = 1.0  # diagonal neighbours are one 8-connected component
    assert box_from_cam(diag, 0.5) == (0, 0, 3, 3)
