"""Checkpoint files are read without unpickling code, also in a process that already runs TensorFlow;
damaged or unexpected contents are one-line `UserError`s naming the file and the entry."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from nest_jax.convert.common import check_finite, load_array_file
from nest_jax.errors import UserError


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_pth_with_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.ones(2), "obj": _Evil()}, path)
    with pytest.raises(UserError) as e:
        load_array_file(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "pickled" in msg and "safetensors" in msg
    # torch's own message advises weights_only=False, i.e. running the file's code: never repeat that.
    assert "weights_only=False" not in msg
    assert "unpickled!" not in capsys.readouterr().out  # the payload never ran


def test_npz_with_objects_is_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, w=np.ones(3, np.float32), a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(UserError, match=r"entry 'a' holds pickled Python objects"):
        load_array_file(path)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors", ".pth"])
def test_truncated_files_are_refused(tmp_path, suffix):
    from safetensors.numpy import save_file

    want = {"w": np.arange(12000, dtype=np.float32).reshape(120, 100), "b": np.ones(5, np.float32)}
    path = tmp_path / f"w{suffix}"
    if suffix == ".npz":
        np.savez(path, **want)
    elif suffix == ".safetensors":
        save_file(want, str(path))
    else:
        torch.save({k: torch.from_numpy(v) for k, v in want.items()}, path)
    got = load_array_file(path)  # the complete file reads back exactly
    assert set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in want)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 64):  # half a download; only the tail (index/metadata) missing
        path.write_bytes(data[:cut])
        with pytest.raises(UserError, match="truncated or corrupt") as e:
            load_array_file(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_non_tensor_entries_are_named(tmp_path):
    path = tmp_path / "sd.pth"
    torch.save({"w": torch.ones(2), "step": 5}, path)  # weights_only reads ints fine: must still be refused
    with pytest.raises(UserError, match=r"entry 'step' is a Python int, not a tensor"):
        load_array_file(path)
    npz = tmp_path / "names.npz"
    np.savez(npz, w=np.ones(2, np.float32), labels=np.array(["cat", "dog"]))
    with pytest.raises(UserError, match=r"entry 'labels' is <U3, not a numeric tensor"):
        load_array_file(npz)


def test_check_finite_names_the_first_bad_entry():
    arrays = {"a": np.ones(3, np.float32), "b": np.array([1.0, np.inf, np.nan]), "c": np.array([np.nan])}
    with pytest.raises(UserError, match=r"entry 'b' \(3,\) has 2 NaN or infinite values"):
        check_finite(arrays, source="x")
    check_finite({"a": np.ones(3), "i": np.arange(3)}, source="x")  # finite floats and ints pass


def test_pth_loads_after_tensorflow_was_imported(tmp_path):
    # torch imported after TensorFlow crashes the interpreter; the loader must sidestep that, and a
    # refused file must still be the same one-line UserError.
    path, evil = tmp_path / "w.pth", tmp_path / "evil.pth"
    torch.save({"model": {"a": torch.arange(6.0).reshape(2, 3)}}, path)
    torch.save({"w": torch.ones(2), "obj": _Evil()}, evil)
    code = (
        "import tensorflow, numpy as np; from nest_jax.convert.common import load_array_file\n"
        f"a = load_array_file({str(path)!r})['a']; print('SUM', float(a.sum()), a.shape)\n"
        f"try:\n    load_array_file({str(evil)!r})\nexcept Exception as e:\n    print(type(e).__name__, e)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "SUM 15.0 (2, 3)" in out.stdout
    assert f"UserError {evil} contains pickled Python code" in out.stdout and "unpickled!" not in out.stdout
