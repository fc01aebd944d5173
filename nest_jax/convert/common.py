"""What every importer shares: '/'-joined parameter paths, shape-checked assignment, safe and checked loading."""

from __future__ import annotations

import pickle
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from nest_jax.errors import UserError


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


def assign_params(
    model: nnx.Module, arrays: Mapping[str, np.ndarray], *, strict: bool = True, source: str = "checkpoint"
) -> None:
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


_RESAVE = (
    "re-save the weights as tensors only, e.g. `safetensors.torch.save_file(model.state_dict(), "
    "'model.safetensors')` or `torch.save(model.state_dict(), 'model.pth')`"
)


def load_array_file(path: str | Path) -> dict[str, np.ndarray]:
    """Reads `.npz` (no pickles), `.safetensors`, or a torch `.pth/.pt/.bin` (weights_only) as numpy.

    Every entry comes back as a numeric array; a truncated or corrupt file, pickled objects and
    entries that are not tensors are `UserError`s that name the file (and the entry).
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"no checkpoint file at {path}; check the path")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        arrays = _load_npz(path)
    elif suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            arrays = dict(load_file(str(path)))
        except SafetensorError as e:
            raise UserError(
                f"{path} is not a readable .safetensors file ({_first_line(e)}): it is truncated or "
                "corrupt; download or write it again"
            ) from e
    elif suffix in (".pth", ".pt", ".bin"):
        if "tensorflow" in sys.modules and "torch" not in sys.modules:
            # Importing torch after TensorFlow crashes the interpreter (clashing bundled libraries),
            # so read the file in a fresh interpreter and hand the arrays back as .npz.
            arrays = _load_torch_file_in_subprocess(path)
        else:
            arrays = _load_torch_file(path)
    else:
        raise UserError(f"unsupported checkpoint format {suffix!r} for {path}: use .npz, .safetensors or .pth")
    check_numeric(arrays, source=str(path))
    return arrays


def _first_line(e: BaseException) -> str:
    return str(e).strip().split("\n")[0]


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            out = {}
            for k in f.files:
                try:
                    out[k] = f[k]
                except ValueError as e:
                    if "allow_pickle" not in str(e):
                        raise
                    raise UserError(
                        f"{path}: entry {k!r} holds pickled Python objects, which nest_jax never "
                        "unpickles; save numeric arrays only, e.g. np.savez(path, **{name: "
                        "np.asarray(array, np.float32)})"
                    ) from None
            return out
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise UserError(
            f"{path} is not a readable .npz file ({_first_line(e)}): it is truncated or corrupt; "
            "download or write it again"
        ) from e


def check_numeric(arrays: Mapping[str, np.ndarray], *, source: str) -> None:
    """Every entry is a bool / integer / floating array (no strings, objects or complex numbers)."""
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
            kind = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
            raise UserError(
                f"{source}: entry {key!r} is {kind}, not a numeric tensor; keep only the model's weights in the file"
            )


def check_finite(arrays: Mapping[str, np.ndarray], *, source: str) -> None:
    """Refuses NaN or infinite weights, naming the first entry (in file order) that has any."""
    for key, value in arrays.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            bad = int(np.size(value) - np.isfinite(value).sum())
            raise UserError(
                f"{source}: entry {key!r} {tuple(value.shape)} has {bad} NaN or infinite values; "
                "the checkpoint is damaged (pass --allow-nonfinite to convert it anyway)"
            )


def _load_torch_file(path: str | Path) -> dict[str, np.ndarray]:
    import torch  # optional: only needed for PyTorch files

    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)  # never unpickles code
    except pickle.UnpicklingError as e:
        # torch's own message suggests weights_only=False, i.e. running the file's code: never that.
        raise UserError(
            f"{path} contains pickled Python code or objects besides tensors, which nest_jax "
            f"never unpickles; {_RESAVE} where the file came from"
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise UserError(
            f"{path} is not a readable PyTorch file ({_first_line(e)}): it is truncated or "
            "corrupt; download or write it again"
        ) from e
    for key in ("model", "state_dict", "model_ema"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict):
        raise UserError(f"{path} holds a {type(sd).__name__}, not a state dict of tensors; {_RESAVE}")
    out = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise UserError(f"{path}: entry {k!r} is a Python {type(v).__name__}, not a tensor; {_RESAVE}")
        out[k] = v.detach().float().numpy() if v.is_floating_point() else v.numpy()
    return out


def _load_torch_file_in_subprocess(path: Path) -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "arrays.npz"
        code = (
            "import sys, numpy as np; from nest_jax.errors import UserError\n"
            "from nest_jax.convert.common import _load_torch_file\n"
            "try:\n    np.savez(sys.argv[2], **_load_torch_file(sys.argv[1]))\n"
            "except UserError as e:\n    print(e, file=sys.stderr); sys.exit(3)"
        )
        proc = subprocess.run([sys.executable, "-c", code, str(path), str(out)], capture_output=True, text=True)
        if proc.returncode == 3:
            raise UserError(proc.stderr.strip().splitlines()[-1])
        if proc.returncode != 0:
            raise RuntimeError(f"reading {path} in a subprocess failed:\n{proc.stderr[-2000:]}")
        with np.load(out, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
