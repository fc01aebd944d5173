"""Checkpoint files are read without unpickling code, also in a process that already runs TensorFlow."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from nest_jax.convert.common import load_array_file


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_pth_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.ones(2), "obj": _Evil()}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        load_array_file(path)


def test_npz_with_objects_is_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="(?i)pickle"):
        load_array_file(path)


def test_pth_loads_after_tensorflow_was_imported(tmp_path):
    # torch imported after TensorFlow crashes the interpreter; the loader must sidestep that.
    path = tmp_path / "w.pth"
    torch.save({"model": {"a": torch.arange(6.0).reshape(2, 3)}}, path)
    code = ("import tensorflow, numpy as np; from nest_jax.convert.common import load_array_file; "
            f"a = load_array_file({str(path)!r})['a']; print('SUM', float(a.sum()), a.shape)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "SUM 15.0 (2, 3)" in out.stdout
