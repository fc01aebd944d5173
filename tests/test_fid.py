"""FID / KID: the Fréchet distance against SciPy's sqrtm and pytorch-fid, invariants (zero on a set
with itself, growing with noise), batched float64 statistics against numpy.cov, KID against a
loop implementation, the Inception-v3 definition against pytorch-fid's modules with random weights
copied across, and the reference resizing against PyTorch and a loop."""

import numpy as np
import pytest
import scipy.linalg

from nest_jax.analysis import fid as F
from nest_jax.errors import UserError


def _stats(rng, n, d, shift=0.0):
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / np.sqrt(d) + shift
    return x.mean(0), np.cov(x, rowvar=False), x


def test_frechet_distance_matches_scipy_sqrtm_and_pytorch_fid():
    rng = np.random.default_rng(0)
    mu1, s1, _ = _stats(rng, 400, 32)
    mu2, s2, _ = _stats(rng, 400, 32, shift=0.3)
    diff = mu1 - mu2
    reference = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real)
    ours = F.frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(reference, rel=1e-9)
    assert F.frechet_distance(mu1, s1, mu2, s2, method="sqrtm") == pytest.approx(reference, rel=1e-12)
    from pytorch_fid.fid_score import calculate_frechet_distance

    assert ours == pytest.approx(float(calculate_frechet_distance(mu1, s1, mu2, s2)), rel=1e-9)


def test_frechet_distance_is_zero_on_itself_and_grows_with_noise():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 16)) @ rng.normal(size=(16, 16))
    base = F.FeatureStats()
    base.update(x)
    assert abs(F.fid_from_stats(base, base)) < 1e-8 * np.trace(base.mean_cov()[1])
    values = []
    for sigma in (0.1, 0.3, 1.0, 3.0):
        noisy = F.FeatureStats()
        noisy.update(x + sigma * rng.normal(size=x.shape))
        values.append(F.fid_from_stats(base, noisy))
    assert all(a < b for a, b in zip(values, values[1:])) and values[0] > 0


def test_frechet_distance_stays_real_with_singular_covariances():
    """Fewer samples than dimensions: both covariances are singular; the eigen form agrees with
    pytorch-fid (which falls back to adding 1e-6 to the diagonals) to that offset's effect."""
    rng = np.random.default_rng(2)
    mu1, s1, _ = _stats(rng, 20, 64)
    mu2, s2, _ = _stats(rng, 20, 64, shift=0.1)
    ours = F.frechet_distance(mu1, s1, mu2, s2)
    from pytorch_fid.fid_score import calculate_frechet_distance

    theirs = float(calculate_frechet_distance(mu1, s1, mu2, s2))
    assert np.isfinite(ours) and ours == pytest.approx(theirs, rel=1e-3)


def test_batched_float64_statistics_equal_numpy_cov():
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(301, 8)) * 1e3 + 5e3).astype(np.float32)  # large offset: naive float32 fails
    acc = F.FeatureStats()
    for i in range(0, len(x), 64):
        acc.update(x[i : i + 64])
    mu, cov = acc.mean_cov()
    np.testing.assert_allclose(mu, x.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-7)


def _mmd2_loops(x, y):
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_matches_a_loop_implementation():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(25, 5)) + 0.5
    assert F.polynomial_mmd2_unbiased(x, y) == pytest.approx(_mmd2_loops(x, y), rel=1e-10)
    # One subset holding every sample of the smaller set: the subset mean is that set's MMD².
    mean, std = F.kid(x[:25], y, num_subsets=3, subset_size=25)
    assert mean == pytest.approx(_mmd2_loops(x[:25], y), rel=1e-10) and std < 1e-12
    # Same distribution: unbiased, so KID averages to ≈ 0 (can be negative); shifted: clearly > 0.
    same, _ = F.kid(rng.normal(size=(400, 5)), rng.normal(size=(400, 5)), num_subsets=20, subset_size=100)
    far, _ = F.kid(rng.normal(size=(400, 5)), rng.normal(size=(400, 5)) + 1.0, num_subsets=20, subset_size=100)
    assert abs(same) < 0.05 * far


def _torch_fid_inception():
    """pytorch-fid's FID Inception built exactly as `fid_inception_v3` does, minus the download."""
    import torch
    from pytorch_fid import inception as pfi

    torch.manual_seed(0)
    net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    with torch.no_grad():  # non-trivial BN statistics, so a wrong BN formula shows
        for mod in net.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.normal_(1, 0.1)
                mod.bias.normal_(0, 0.1)
    return net.eval()


def test_inception_matches_pytorch_fid_modules_with_random_weights(tmp_path):
    import jax.numpy as jnp
    import torch

    from nest_jax.analysis.inception import inception_pool3, load_inception_weights, param_shapes

    net = _torch_fid_inception()
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    ours = sum(int(np.prod(s)) for s in param_shapes().values())
    assert ours == sum(v.numel() for k, v in state.items() if not k.startswith("fc."))
    path = tmp_path / "pt_inception.pth"
    torch.save(net.state_dict(), path)
    params = load_inception_weights(str(path))  # torch.load(weights_only=True)
    # pytorch-fid's `InceptionV3` stages (its wrapper would fetch torchvision weights), on the random net.
    stages = torch.nn.Sequential(
        *[
            torch.nn.Sequential(
                net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, torch.nn.MaxPool2d(kernel_size=3, stride=2)
            ),
            torch.nn.Sequential(net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, torch.nn.MaxPool2d(kernel_size=3, stride=2)),
            torch.nn.Sequential(
                net.Mixed_5b,
                net.Mixed_5c,
                net.Mixed_5d,
                net.Mixed_6a,
                net.Mixed_6b,
                net.Mixed_6c,
                net.Mixed_6d,
                net.Mixed_6e,
            ),
            torch.nn.Sequential(net.Mixed_7a, net.Mixed_7b, net.Mixed_7c, torch.nn.AdaptiveAvgPool2d((1, 1))),
        ]
    ).eval()
    x = np.random.default_rng(0).uniform(-1, 1, size=(2, 3, 107, 107)).astype(np.float32)
    with torch.no_grad():
        ref = stages(torch.from_numpy(x))[:, :, 0, 0].numpy()
    got = np.asarray(inception_pool3(params, jnp.asarray(x.transpose(0, 2, 3, 1))))
    assert got.shape == (2, 2048)
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())


def test_inception_weights_missing_is_a_user_error(tmp_path):
    from nest_jax.analysis.inception import load_inception_weights

    for path in (None, str(tmp_path / "absent.pth")):
        with pytest.raises(UserError, match="pt_inception-2015-12-05"):
            load_inception_weights(path)
    np.savez(tmp_path / "partial.npz", **{"Conv2d_1a_3x3.conv.weight": np.zeros((32, 3, 3, 3), np.float32)})
    with pytest.raises(UserError, match="lack"):
        load_inception_weights(str(tmp_path / "partial.npz"))


def test_bilinear_resize_matches_pytorch_and_tf1_legacy():
    import jax.numpy as jnp
    import torch

    from nest_jax.analysis.inception import resize_bilinear

    x = np.random.default_rng(0).normal(size=(1, 5, 7, 2)).astype(np.float32)
    ref = (
        torch.nn.functional.interpolate(
            torch.from_numpy(x.transpose(0, 3, 1, 2)), size=(11, 11), mode="bilinear", align_corners=False
        )
        .numpy()
        .transpose(0, 2, 3, 1)
    )
    np.testing.assert_allclose(np.asarray(resize_bilinear(jnp.asarray(x), 11, "half_pixel")), ref, atol=1e-5)
    # TF1 resize_bilinear(align_corners=False): src = dst · in/out, no half-pixel offset.
    legacy = np.zeros((1, 11, 11, 2), np.float64)
    for i in range(11):
        for j in range(11):
            sy, sx = i * 5 / 11, j * 7 / 11
            y0, x0 = int(np.floor(sy)), int(np.floor(sx))
            y1, x1 = min(y0 + 1, 4), min(x0 + 1, 6)
            fy, fx = sy - y0, sx - x0
            legacy[0, i, j] = (1 - fy) * ((1 - fx) * x[0, y0, x0] + fx * x[0, y0, x1]) + fy * (
                (1 - fx) * x[0, y1, x0] + fx * x[0, y1, x1]
            )
    np.testing.assert_allclose(np.asarray(resize_bilinear(jnp.asarray(x), 11, "tf_legacy")), legacy, atol=1e-5)


@pytest.mark.parametrize("kind", ["pickled", "truncated", "object_npz"])
def test_a_bad_inception_weights_file_is_one_line(tmp_path, kind):
    """A pickled .pth, a truncated .pth and an .npz holding objects were tracebacks, and torch's
    message told the user to retry with weights_only=False (running the file's code)."""
    import torch

    from nest_jax.analysis.inception import load_inception_weights
    from nest_jax.errors import UserError

    class Payload:
        def __reduce__(self):
            return (print, ("unpickled!",))

    if kind == "pickled":
        path = tmp_path / "pt_inception.pth"
        torch.save({"Conv2d_1a_3x3.conv.weight": torch.ones(1), "extra": Payload()}, path)
    elif kind == "truncated":
        path = tmp_path / "pt_inception.pth"
        torch.save({"Conv2d_1a_3x3.conv.weight": torch.ones(32, 3, 3, 3)}, path)
        path.write_bytes(path.read_bytes()[:200])
    else:
        path = tmp_path / "pt_inception.npz"
        np.savez(path, a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(UserError) as info:
        load_inception_weights(str(path))
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "weights_only=False" not in message
