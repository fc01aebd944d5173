"""What every importer shares: '/'-joined parameter paths, shape-checked assignment, safe loading."""
from __future__ import annotations

from collections.abc import Mapping
import subprocess
import sys
import tempfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx


def path_str(path: tuple) -> str:
    return "/".join(str(p) for p in path)


def nest_paths(flat: Mapping[str, object]) -> dict:
    """{"a/0/b": x} -> {"a": {"0": {"b": x}}} (string keys, so orbax restores the same tree)."""
    tree: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def param_shapes(model: nnx.Module) -> dict[str, tuple[int, ...]]:
    """'/'-joined path (e.g. "layers/0/attn/qkv") -> shape, for every parameter of the model."""
    return {path_str(k): tuple(v.shape) for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def load_params(model: nnx.Module, arrays: Mapping[str, np.ndarray], *, strict: bool = True,
                source: str = "checkpoint") -> None:
    """Assigns arrays into the model's parameters in place, by '/'-joined path.

    Every shape is checked first (the error names the parameter and both shapes); with `strict`,
    parameters missing from `arrays` and unused entries of `arrays` are errors too.
    """
    params = {path_str(k): v for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    problems = []
    for name, value in arrays.items():
        if name not in params:
            if strict:
                problems.append(f"{source} has {name!r} {tuple(np.shape(value))}, which the model does not")
            continue
        want = tuple(params[name].shape)
        if tuple(np.shape(value)) != want:
            problems.append(f"shape mismatch for {name!r}: {source} has {tuple(np.shape(value))}, model expects {want}")
    if strict:
        missing = sorted(set(params) - set(arrays))
        problems += [f"{source} has no value for model parameter {m!r} {tuple(params[m].shape)}" for m in missing]
    if problems:
        raise ValueError("Cannot load parameters:\n  " + "\n  ".join(problems))
    for name, value in arrays.items():
        if name in params:
            var = params[name]
            var[...] = jnp.asarray(value, dtype=var[...].dtype)


def load_array_file(path: str | Path) -> dict[str, np.ndarray]:
    """Reads `.npz` (no pickles), `.safetensors`, or a torch `.pth/.pt/.bin` (weights_only) as numpy."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    if suffix == ".safetensors":
        from safetensors.numpy import load_file
        return dict(load_file(str(path)))
    if suffix in (".pth", ".pt", ".bin"):
        if "tensorflow" in sys.modules and "torch" not in sys.modules:
            # Importing torch after TensorFlow crashes the interpreter (clashing bundled libraries),
            # so read the file in a fresh interpreter and hand the arrays back as .npz.
            return _load_torch_file_in_subprocess(path)
        return _load_torch_file(path)
    raise ValueError(f"unsupported checkpoint format {suffix!r} for {path}: use .npz, .safetensors or .pth")


def _load_torch_file(path: str | Path) -> dict[str, np.ndarray]:
    import torch  # optional: only needed for PyTorch files

    sd = torch.load(str(path), map_location="cpu", weights_only=True)  # never unpickles code
    for key in ("model", "state_dict", "model_ema"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy() for k, v in sd.items()}


def _load_torch_file_in_subprocess(path: Path) -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "arrays.npz"
        code = ("import sys, numpy as np; from nest_jax.convert.common import _load_torch_file; "
                "np.savez(sys.argv[2], **_load_torch_file(sys.argv[1]))")
        subprocess.run([sys.executable, "-c", code, str(path), str(out)], check=True)
        with np.load(out, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
