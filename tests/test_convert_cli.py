"""`python -m nest_jax.convert`, run in-process: npz in, orbax checkpoint out, `nest_jax.load_params` back."""

import json

import numpy as np
import pytest
from flax import nnx

from nest_jax.convert import load_into, load_params, params_to_vit_npz, read_meta, resize_pos_embed, save_params
from nest_jax.convert.__main__ import main
from nest_jax.errors import UserError
from nest_jax.models import create_model

ARCH = ["--set", "depth=2", "--set", "patch_size=8"]


def restore(directory, model=None):
    """A convert output loaded into `model`, or into the model it records."""
    weights = load_params(directory)
    model = weights.new_model() if model is None else model
    load_into(model, weights)
    return model


@pytest.fixture(scope="module")
def google_npz(tmp_path_factory):
    """A tiny ViT with random (timm-init, nowhere zero) weights, saved under Google's Linen names."""
    src = create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=10, gelu="tanh", rngs=nnx.Rngs(4)
    )
    path = tmp_path_factory.mktemp("npz") / "vit.npz"
    np.savez(path, **params_to_vit_npz(src, "prelinen"))
    return src, path


def _convert(npz, out, *extra, img_size=32):
    """`python -m nest_jax.convert` on the test's Google .npz (a 2-layer ViT-Ti/8) into `out`."""
    model = ["--model", "vit_tiny_patch16_224", "--source", "vit_npz", "--input", str(npz)]
    return main([*model, "--output", str(out), "--img-size", str(img_size), *ARCH, *extra])


def test_cli_vit_npz_checkpoint_restores_same_logits(tmp_path, google_npz):
    src, npz = google_npz
    out = tmp_path / "ckpt"
    assert _convert(npz, out) == 0
    meta = read_meta(out)
    assert meta["model"] == "vit_tiny_patch16_224"
    # Class count read from the checkpoint; Google's tanh GELU chosen for a Google source.
    assert meta["kwargs"]["num_classes"] == 10 and meta["kwargs"]["gelu"] == "tanh"
    restored = restore(out)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(restored(x)), np.asarray(src(x)))


def test_cli_adapts_resolution_and_head(tmp_path, google_npz):
    src, npz = google_npz
    out = tmp_path / "ckpt"
    assert _convert(npz, out, "--num-classes", "5", img_size=48) == 0
    model = restore(out)
    assert model.config.grid == (6, 6) and model.head.kernel.shape == (192, 5)
    want = resize_pos_embed(np.asarray(src.pos_embed[...]), num_prefix=1, new_grid=(6, 6), method="linear")
    np.testing.assert_allclose(np.asarray(model.pos_embed[...]), want, atol=1e-7)
    np.testing.assert_array_equal(np.asarray(model.layers[1].attn.qkv[...]), np.asarray(src.layers[1].attn.qkv[...]))
    # init="official" for a Google source: the re-initialized head starts at zero.
    assert not np.any(np.asarray(model.head.kernel[...]))


def test_cli_bad_inputs_give_one_clear_error(tmp_path, google_npz, capsys):
    _, npz = google_npz
    base = ["--source", "vit_npz", "--input", str(npz), "--img-size", "32", *ARCH]
    assert main(["--model", "vit_tiny_patch16", "--output", str(tmp_path / "a"), *base]) == 2
    assert "Unknown model 'vit_tiny_patch16'" in capsys.readouterr().err
    assert main(["--model", "vit_small_patch16_224", "--output", str(tmp_path / "b"), *base]) == 2
    err = capsys.readouterr().err
    # One line: the first mismatches with both shapes, then how many more (ViT-Ti is 192 wide, ViT-S 384).
    assert "shape mismatch for 'cls_token': vit_npz has (1, 1, 192), model expects (1, 1, 384)" in err
    assert "more" in err and err.count("\n") == 1
    assert (
        main(
            [
                "--model",
                "vit_tiny_patch16_224",
                "--output",
                str(tmp_path / "c"),
                *base[:3],
                str(tmp_path / "missing.npz"),
                *base[4:],
            ]
        )
        == 2
    )
    assert "no checkpoint file" in capsys.readouterr().err
    assert not any((tmp_path / d).exists() for d in "abc")  # nothing written on failure


def test_loading_a_convert_output_rejects_a_model_of_another_shape(tmp_path):
    model = create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, num_classes=3)
    save_params(model, tmp_path / "ck")  # no model name recorded
    assert json.loads(json.dumps(read_meta(tmp_path / "ck")))["model"] is None
    with pytest.raises(UserError, match="does not record its model"):
        restore(tmp_path / "ck")
    other = create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, num_classes=3, mlp_dim=96)
    with pytest.raises(UserError, match="shape mismatch for 'layers/0/mlp/fc1/kernel'"):
        restore(tmp_path / "ck", other)
    with pytest.raises(FileExistsError):
        save_params(model, tmp_path / "ck")


class _ConvBN(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)


def test_save_restore_roundtrips_batch_stats(tmp_path):
    src = _ConvBN(nnx.Rngs(0))
    rng = np.random.default_rng(0)
    src.bn.mean[...] = rng.standard_normal(4).astype(np.float32)
    src.bn.var[...] = rng.uniform(0.5, 2, 4).astype(np.float32)
    save_params(src, tmp_path / "ck")
    assert read_meta(tmp_path / "ck")["collections"] == ["batch_stats", "params"]
    dst = restore(tmp_path / "ck", _ConvBN(nnx.Rngs(1)))
    for a, b in ((src.conv.kernel, dst.conv.kernel), (src.bn.mean, dst.bn.mean), (src.bn.var, dst.bn.var)):
        np.testing.assert_array_equal(np.asarray(a[...]), np.asarray(b[...]))


def test_cli_refuses_nonfinite_weights_unless_allowed(tmp_path, google_npz, capsys):
    _, npz = google_npz
    with np.load(npz) as f:
        data = {k: f[k] for k in f.files}
    key = "Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel"
    data[key] = data[key].copy()
    data[key][3, 5] = np.nan
    bad = tmp_path / "nan.npz"
    np.savez(bad, **data)
    assert _convert(bad, tmp_path / "a") == 2
    err = capsys.readouterr().err
    assert f"entry {key!r}" in err and "1 NaN or infinite" in err and "--allow-nonfinite" in err
    assert err.count("\n") == 1 and not (tmp_path / "a").exists()
    assert _convert(bad, tmp_path / "b", "--allow-nonfinite") == 0  # converted as asked, NaN kept in place
    fc1 = np.asarray(restore(tmp_path / "b").layers[1].mlp.fc1.kernel[...])
    assert np.isnan(fc1[3, 5]) and np.isfinite(fc1).sum() == fc1.size - 1


def test_cli_names_a_tensor_of_the_wrong_rank(tmp_path, google_npz, capsys):
    _, npz = google_npz
    with np.load(npz) as f:
        data = {k: f[k] for k in f.files}
    key = "Transformer/posembed_input/pos_embedding"
    data[key] = data[key][0]  # (17, 192): the batch axis squeezed away
    bad = tmp_path / "rank.npz"
    np.savez(bad, **data)
    assert _convert(bad, tmp_path / "a") == 2
    err = capsys.readouterr().err
    assert f"entry {key!r} has shape (17, 192) (rank 2)" in err and "expects rank 3, e.g. (1, 17, 192)" in err
    assert err.count("\n") == 1


def test_cli_overwrite_replaces_only_a_nest_jax_checkpoint(tmp_path, google_npz, capsys):
    _, npz = google_npz
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    assert _convert(npz, foreign, "--overwrite") == 2
    assert "is not a nest_jax checkpoint" in capsys.readouterr().err
    assert (foreign / "thesis.tex").read_text() == "years of work"  # untouched
    # An earlier conversion is replaced by the new one (10 -> 5 classes), with nothing left beside it.
    out = tmp_path / "ckpt"
    assert _convert(npz, out) == 0
    assert _convert(npz, out, "--num-classes", "5") == 2  # exists, no --overwrite
    assert read_meta(out)["kwargs"]["num_classes"] == 10
    assert _convert(npz, out, "--num-classes", "5", "--overwrite") == 0
    assert read_meta(out)["kwargs"]["num_classes"] == 5 and restore(out).head.kernel.shape == (192, 5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "notes"]


def test_save_params_overwrite_keeps_the_old_checkpoint_if_writing_fails(tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    model = create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, num_classes=3, rngs=nnx.Rngs(0))
    save_params(model, tmp_path / "ck", model_name="vit_tiny_patch16_224", model_kwargs={"num_classes": 3})
    before = np.asarray(model.head.kernel[...]).copy()

    def disk_full(self, *args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(ocp.CompositeCheckpointHandler, "save", disk_full)
    other = create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, num_classes=3, rngs=nnx.Rngs(1))
    with pytest.raises(UserError, match="no space left on device .* the earlier checkpoint there is unchanged"):
        save_params(other, tmp_path / "ck", overwrite=True)
    monkeypatch.undo()
    # orbax's own force=True would have deleted the old checkpoint before failing.
    restored = restore(
        tmp_path / "ck", create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, num_classes=3)
    )
    np.testing.assert_array_equal(np.asarray(restored.head.kernel[...]), before)
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]
