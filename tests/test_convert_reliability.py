"""`python -m nest_jax.convert` and the weight-file readers under faults and odd inputs: a user's file
inside an earlier output, a full disk, a file whose suffix lies about its format, bfloat16 weights,
a tensor of the wrong rank, and sizes no model can have. Each test names the old behaviour it pins."""

import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch
from flax import nnx
from safetensors.numpy import save_file

from nest_jax.convert import load_params, params_to_vit_npz, read_meta
from nest_jax.convert.__main__ import main
from nest_jax.convert.checkpoint import MANIFEST
from nest_jax.convert.common import load_array_file
from nest_jax.errors import UserError
from nest_jax.models import create_model
from tests._tmpfs import tmpfs

REPO = Path(__file__).resolve().parents[1]
ARCH = ["--model", "vit_tiny_patch16_224", "--img-size", "32", "--set", "depth=2", "--set", "patch_size=8"]


@pytest.fixture(scope="module")
def google(tmp_path_factory):
    """A 2-layer ViT-Ti/8 and its weights under Google's names, as a float32 `.npz` (about 3.6 MB)."""
    src = create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=10, gelu="tanh", rngs=nnx.Rngs(4)
    )
    arrays = {k: np.ascontiguousarray(v, np.float32) for k, v in params_to_vit_npz(src, "prelinen").items()}
    path = tmp_path_factory.mktemp("google") / "vit.npz"
    np.savez(path, **arrays)
    return arrays, path


def _convert(inp, out, *extra, source="vit_npz"):
    return main([*ARCH, "--source", source, "--input", str(inp), "--output", str(out), *extra])


# -- case 3: --overwrite and a user's files -------------------------------------------------------


def test_overwrite_refuses_a_converted_folder_holding_a_users_files_and_deletes_nothing(tmp_path, google, capsys):
    """Old code: `--overwrite` swapped in the new output and deleted `mynotes.txt` (and anything
    else put inside), rc 0. Now it refuses, names the files, and the earlier output is unchanged;
    without them it replaces as before. The help says so."""
    _, npz = google
    out = tmp_path / "ckpt"
    assert _convert(npz, out) == 0
    (out / "mynotes.txt").write_text("lr sweep results")
    (out / "params" / "mine").mkdir()
    (out / "params" / "mine" / "plot.png").write_bytes(b"png")
    capsys.readouterr()
    assert _convert(npz, out, "--num-classes", "5", "--overwrite") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds 2 file(s) nest_jax did not write (mynotes.txt, params/mine)" in err
    assert (out / "mynotes.txt").read_text() == "lr sweep results" and (out / "params/mine/plot.png").exists()
    assert read_meta(out)["kwargs"]["num_classes"] == 10
    # The library call refuses the same way.
    from nest_jax.convert import save_params

    with pytest.raises(UserError, match="nest_jax did not write"):
        save_params(create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2), out, overwrite=True)
    # An output written before the file list existed is checked at its top level.
    (out / "params" / "mine" / "plot.png").unlink()
    (out / "params" / "mine").rmdir()
    (out / MANIFEST).unlink()
    assert _convert(npz, out, "--num-classes", "5", "--overwrite") == 2
    assert "(mynotes.txt)" in capsys.readouterr().err
    (out / "mynotes.txt").unlink()
    assert _convert(npz, out, "--num-classes", "5", "--overwrite") == 0
    assert read_meta(out)["kwargs"]["num_classes"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "did not write" in " ".join(capsys.readouterr().out.split())


# -- case 12: a full disk ----------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB tmpfs: smaller than the 3.6 MB of weights, so orbax's real writer threads fill it."""
    with tmpfs(tmp_path, "1m") as mnt:
        yield mnt


@pytest.mark.slow
def test_convert_onto_a_full_disk_is_one_line_and_leaves_nothing(small_disk, google):
    """Old code: rc 2 after 195-243 lines (orbax's ERROR records from each writer thread, then
    'Event loop is closed' tracebacks), and `o.orbax-checkpoint-tmp` left on the full disk. Now one
    line and an empty disk; run twice, as the leftover came from writes still in flight (2 of 5 runs)."""
    _, npz = google
    cmd = [sys.executable, "-m", "nest_jax.convert", *ARCH, "--source", "vit_npz", "--input", str(npz)]
    for _ in range(2):
        proc = subprocess.run([*cmd, "--output", str(small_disk / "o")], cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.count("\n") == 1, proc.stderr[-3000:]
        assert proc.stderr.startswith(f"nest_jax.convert: error: no space left on device while writing {small_disk}")
        assert sorted(p.name for p in small_disk.iterdir()) == []


# -- case 14: file formats, bfloat16, ranks, sizes ---------------------------------------------------


def test_the_format_is_read_from_the_content_not_the_suffix(tmp_path):
    """Old code chose the reader by suffix: a safetensors file named `.pth` was refused as
    'pickled Python code' (a KeyError traceback with older torch); an `.npz` named `.bin` likewise."""
    want = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "i": np.arange(3, dtype=np.int64)}
    save_file(want, str(tmp_path / "st.pth"))
    with open(tmp_path / "np.bin", "wb") as f:  # a path would get ".npz" appended
        np.savez(f, **want)
    with open(tmp_path / "pt.safetensors", "wb") as f:  # torch's zip format whatever the name
        torch.save({k: torch.from_numpy(v) for k, v in want.items()}, f)
    for name in ("st.pth", "np.bin", "pt.safetensors"):
        got = load_array_file(tmp_path / name)
        assert set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in want), name
    (tmp_path / "x.pth").write_bytes(b"<html>404</html>")
    with pytest.raises(UserError, match=r"is not a .npz, .safetensors or PyTorch file \(it starts with b'<html>40"):
        load_array_file(tmp_path / "x.pth")


def test_bfloat16_safetensors_and_pth_are_read_exactly(tmp_path, google, capsys):
    """Old code refused a valid bfloat16 `.safetensors` ('is bfloat16, not a numeric tensor'), the
    dtype most current checkpoints ship in. Now bf16 (and float8) widen to float32 exactly: the
    values equal ml_dtypes' / torch's own bf16 -> float32 casts, and the converted model holds them."""
    arrays, _ = google
    bf16 = {k: v.astype(ml_dtypes.bfloat16) for k, v in arrays.items()}
    save_file(bf16, str(tmp_path / "vit.safetensors"))
    torch.save({k: torch.from_numpy(v.copy()).bfloat16() for k, v in arrays.items()}, tmp_path / "vit.pth")
    for name in ("vit.safetensors", "vit.pth"):
        got = load_array_file(tmp_path / name)
        for k, v in bf16.items():
            assert got[k].dtype == np.float32 and np.array_equal(got[k], v.astype(np.float32)), (name, k)
    e4m3 = np.array([0.5, -2.0, 448.0], np.float32).astype(ml_dtypes.float8_e4m3fn)
    save_file({"q": e4m3}, str(tmp_path / "f8.safetensors"))
    np.testing.assert_array_equal(load_array_file(tmp_path / "f8.safetensors")["q"], [0.5, -2.0, 448.0])
    assert _convert(tmp_path / "vit.safetensors", tmp_path / "out") == 0
    weights = load_params(tmp_path / "out")
    np.testing.assert_array_equal(
        weights.params["layers/1/mlp/fc1/kernel"],
        bf16["Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel"].astype(np.float32),
    )


def test_a_tensor_of_the_wrong_rank_is_one_line(tmp_path, capsys):
    """Old code: an extra `blocks.5.attn.qkv.weight` of rank 1 in a timm file was an IndexError
    traceback (rc 1) from the importer's reshape, in the CLI and in `load_params`."""
    path = tmp_path / "timm.safetensors"
    save_file(
        {"head.weight": np.zeros((10, 192), np.float32), "blocks.5.attn.qkv.weight": np.ones(3, np.float32)}, str(path)
    )
    assert _convert(path, tmp_path / "out", source="timm") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "entry 'blocks.5.attn.qkv.weight' has shape (3,) (rank 1) but vit_tiny_patch16_224 expects rank 2" in err
    model = create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=10)
    with pytest.raises(UserError, match="does not read as timm weights of ViT") as info:
        load_params(path, source="timm", model=model)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--num-classes", "-3"], "--num-classes -3 is negative"),
        (["--img-size", "0"], "--img-size 0 is not a positive image size"),
        (["--set", "num_classes=-1"], "--set num_classes -1 is negative"),
    ],
)
def test_impossible_sizes_are_refused_before_anything_is_written(tmp_path, google, capsys, flags, says):
    """Old code: `--num-classes -3` and `--img-size 0` exited 0 and wrote a checkpoint that no model
    can load. Now one line, exit 2, no output."""
    _, npz = google
    assert _convert(npz, tmp_path / "out", *flags) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err, err
    assert not (tmp_path / "out").exists()
