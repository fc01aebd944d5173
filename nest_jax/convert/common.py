"""What every importer shares: '/'-joined parameter paths, shape-checked assignment, safe and checked loading."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import jax.numpy as jnp
import ml_dtypes
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


def flat_paths(tree: Mapping, prefix: str = "") -> dict[str, object]:
    """{"a": {"0": {"b": x}}} -> {"a/0/b": x}, the inverse of `nest_paths`."""
    out = {}
    for k, v in tree.items():
        out.update(flat_paths(v, f"{prefix}{k}/") if isinstance(v, Mapping) else {f"{prefix}{k}": v})
    return out


def variables(model: nnx.Module, kind=nnx.Param) -> dict[str, nnx.Variable]:
    """'/'-joined path -> variable, for every variable of `kind` (a type or a tuple of types)."""
    return {path_str(k): v for k, v in nnx.to_flat_state(nnx.state(model, kind))}


def host_arrays(model: nnx.Module, kind=nnx.Param, dtype=None) -> dict[str, np.ndarray]:
    """'/'-joined path -> the variable's value as a host NumPy array (of `dtype`, if given)."""
    return {k: np.asarray(v[...], dtype) for k, v in variables(model, kind).items()}


def param_shapes(model: nnx.Module) -> dict[str, tuple[int, ...]]:
    """'/'-joined path (e.g. "layers/0/attn/qkv") -> shape, for every parameter of the model."""
    return {k: tuple(v.shape) for k, v in variables(model).items()}


def to_numpy(state_dict: Mapping) -> dict[str, np.ndarray]:
    """A state dict of NumPy arrays or torch tensors (e.g. a live `model.state_dict()`) as NumPy;
    floating torch tensors come back as float32."""
    out = {}
    for k, v in state_dict.items():
        if hasattr(v, "detach"):
            v = v.detach().cpu()
            v = v.float().numpy() if v.is_floating_point() else v.numpy()
        out[k] = np.asarray(v)
    return out


def assign_params(
    model: nnx.Module,
    arrays: Mapping[str, np.ndarray],
    *,
    strict: bool = True,
    source: str = "checkpoint",
    kind=nnx.Param,
) -> None:
    """Assigns arrays into the model's variables of `kind` (default its parameters; `(nnx.Param,
    nnx.BatchStat)` adds BatchNorm statistics) in place, by '/'-joined path.

    Every shape is checked first (the error names the variable and both shapes); with `strict`,
    variables missing from `arrays` and unused entries of `arrays` are errors too.
    """
    targets = variables(model, kind)
    problems = []
    for name, value in arrays.items():
        if name not in targets:
            if strict:
                problems.append(f"{source} has {name!r} {tuple(np.shape(value))}, which the model does not")
            continue
        want = tuple(targets[name].shape)
        if tuple(np.shape(value)) != want:
            problems.append(f"shape mismatch for {name!r}: {source} has {tuple(np.shape(value))}, model expects {want}")
    if strict:
        for m in sorted(set(targets) - set(arrays)):
            what = "statistic" if isinstance(targets[m], nnx.BatchStat) else "parameter"
            problems.append(f"{source} has no value for model {what} {m!r} {tuple(targets[m].shape)}")
    if problems:
        raise ValueError("Cannot load parameters:\n  " + "\n  ".join(problems))
    for name, value in arrays.items():
        if name in targets:
            targets[name][...] = jnp.asarray(value, dtype=targets[name][...].dtype)


_RESAVE = (
    "re-save the weights as tensors only, e.g. `safetensors.torch.save_file(model.state_dict(), "
    "'model.safetensors')` or `torch.save(model.state_dict(), 'model.pth')`"
)


def load_array_file(path: str | Path) -> dict[str, np.ndarray]:
    """Reads `.npz` (no pickles), `.safetensors`, or a torch `.pth/.pt/.bin` (weights_only) as numpy.

    The format is read from the file's first bytes, not its name (a safetensors file saved as
    `.pth` is common). Every entry comes back as a numeric array; bfloat16 and float8 tensors are
    widened to float32 (exactly). A truncated or corrupt file, pickled objects and entries that are
    not tensors are `UserError`s that name the file (and the entry).
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"no checkpoint file at {path}; check the path")
    kind = file_format(path)
    if kind == "npz":
        arrays = _load_npz(path)
    elif kind == "safetensors":
        arrays = _load_safetensors(path)
    elif "tensorflow" in sys.modules and "torch" not in sys.modules:
        # Importing torch after TensorFlow crashes the interpreter (clashing bundled libraries),
        # so read the file in a fresh interpreter and hand the arrays back as .npz.
        arrays = _load_torch_file_in_subprocess(path)
    else:
        arrays = _load_torch_file(path)
    arrays = {k: _widened(v) for k, v in arrays.items()}
    check_numeric(arrays, source=str(path))
    return arrays


_ZIP = b"PK\x03\x04"  # .npz archives and torch's own format (torch >= 1.6) are zip files
_PICKLE = b"\x80"  # torch's legacy format starts with a pickle protocol opcode


def file_format(path: Path) -> str:
    """The file's format -- "npz", "safetensors" or "torch" -- from its first bytes (the suffix only
    decides between npz and torch for a zip cut off before its index); anything else is a UserError."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head.startswith(_ZIP):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            # The index of a zip is at its end, so a cut-off download is only known to be a zip.
            return "npz" if path.suffix.lower() == ".npz" else "torch"
        return "torch" if any(n.endswith("data.pkl") for n in names) else "npz"
    if head[8:9] == b"{":
        return "safetensors"  # an 8-byte little-endian header length, then the JSON header
    if head.startswith(_PICKLE):
        return "torch"
    raise UserError(
        f"{path} is not a .npz, .safetensors or PyTorch file (it starts with {head[:8]!r}); "
        "pass the checkpoint's weights file"
    )


# safetensors dtype names -> NumPy (ml_dtypes for the float formats NumPy lacks). The file is
# little-endian, as every host JAX runs on.
_SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn,
    "F8_E5M2": ml_dtypes.float8_e5m2,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U64": np.uint64,
    "U32": np.uint32,
    "U16": np.uint16,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def _load_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Parses the format directly (8-byte header length, JSON header, one data buffer): the
    `safetensors` package's NumPy reader cannot hold bfloat16 in its older releases, and its other
    readers need torch or place arrays on an accelerator."""

    def damaged(why: str) -> UserError:
        return UserError(
            f"{path} is not a readable .safetensors file ({why}): it is truncated or corrupt; download or write it again"
        )

    buf = bytearray(path.stat().st_size)  # writable, so the arrays are too
    with open(path, "rb") as f:
        f.readinto(buf)
    n = int.from_bytes(buf[:8], "little")
    if n > len(buf) - 8:
        raise damaged("the header runs past the end of the file")
    try:
        header = json.loads(bytes(buf[8 : 8 + n]))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise damaged(f"the header is not JSON: {_first_line(e)}") from None
    if not isinstance(header, dict):
        raise damaged("the header is not a JSON object")
    start, out = 8 + n, {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype = np.dtype(_SAFETENSORS_DTYPES[entry["dtype"]])
            shape = tuple(int(d) for d in entry["shape"])
            begin, end = (int(o) for o in entry["data_offsets"])
        except KeyError as e:
            if isinstance(entry, dict) and "dtype" in entry and e.args[0] == entry["dtype"]:
                raise UserError(
                    f"{path}: entry {key!r} is {entry['dtype']}, which nest_jax does not read; "
                    f"save it as one of {', '.join(_SAFETENSORS_DTYPES)}"
                ) from None
            raise damaged(f"entry {key!r} lacks {e}") from None
        except (TypeError, ValueError):
            raise damaged(f"entry {key!r} has a malformed shape or offsets") from None
        count = int(np.prod(shape, dtype=np.int64))
        if min(shape, default=0) < 0 or begin < 0 or end != begin + count * dtype.itemsize or start + end > len(buf):
            raise damaged(f"entry {key!r} {shape} does not fit the file's data")
        out[key] = np.frombuffer(buf, dtype, count, offset=start + begin).reshape(shape)
    return out


_NARROW_FLOATS = {np.dtype(ml_dtypes.bfloat16), np.dtype(ml_dtypes.float8_e4m3fn), np.dtype(ml_dtypes.float8_e5m2)}


def _widened(value: np.ndarray) -> np.ndarray:
    """bfloat16 / float8 (ml_dtypes, which NumPy's own routines do not take) as float32, exactly."""
    if isinstance(value, np.ndarray) and value.dtype in _NARROW_FLOATS:
        return value.astype(np.float32)
    return value


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
        # A file object, not a path: torch would pick its reader by the suffix (e.g. ".safetensors").
        with open(path, "rb") as f:
            sd = torch.load(f, map_location="cpu", weights_only=True)  # never unpickles code
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
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise UserError(f"{path}: entry {k!r} is a Python {type(v).__name__}, not a tensor; {_RESAVE}")
    return to_numpy(sd)


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
