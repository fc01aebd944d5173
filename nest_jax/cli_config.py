"""The command line of `nest_jax.main`: its flags and the config file (`--config.FIELD=VALUE`
overrides follow nest_jax.overrides' grammar).

Every mistake a user can make here (a config path that does not exist, a `get_config` that raises,
an override of a field the config does not have, a value of the wrong type, a missing flag) becomes
one `UserError` line that names the problem and the fix. Configs are Python files with a
`get_config([arg])` (`--config=configs/cifar10_nest.py:small` passes "small"); override values are
parsed as data for the field's type (`ast.literal_eval` for tuples and lists), never evaluated.
"""

from __future__ import annotations

import ast
import difflib
import types
from dataclasses import dataclass, field
from pathlib import Path

import ml_collections

from nest_jax.errors import UserError, describe

MODES = ("train", "eval")
_TRUE, _FALSE = ("true", "t", "1", "yes", "y", "on"), ("false", "f", "0", "no", "n", "off")


@dataclass
class CommandLine:
    """argv split into what nest_jax.main reads and what it hands to absl."""

    config: str | None = None
    workdir: str | None = None
    mode: str = "train"
    overrides: list[tuple[str, str | None]] = field(default_factory=list)  # (dotted field, text or None)
    absl_args: list[str] = field(default_factory=list)  # e.g. --verbosity=1, --log_dir=DIR
    positional: list[str] = field(default_factory=list)
    debug: bool = False
    help: str | None = None  # "help" or "helpfull" when asked for


def split_argv(argv: list[str]) -> CommandLine:
    """Reads `--name=value`, `--name value` and bare `--name` (absl also allows one dash).

    argv: the arguments without the program name.
    """
    cl, i = CommandLine(), 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            cl.positional += argv[i:]
            break
        if not arg.startswith("-") or arg == "-":
            cl.positional.append(arg)
            continue
        if arg in ("-h", "-?"):
            cl.help = "help"
            continue
        name, eq, value = arg.lstrip("-").partition("=")
        has_value = bool(eq)
        if name in ("help", "helpshort", "helpfull"):
            cl.help = "helpfull" if name == "helpfull" else "help"
        elif name in ("debug", "nodebug"):
            cl.debug = name == "debug" and (not has_value or value.lower() in _TRUE)
        elif name.startswith(("config.", "noconfig.")):
            path = name.partition(".")[2]
            if name.startswith("no"):
                if has_value:
                    raise UserError(f"--{name} takes no value; write --config.{path}={value} instead")
                cl.overrides.append((path, "false"))
                continue
            if not has_value and i < len(argv) and _is_value(argv[i]):
                value, has_value, i = argv[i], True, i + 1  # `--config.x VALUE`, as absl reads it
            cl.overrides.append((path, value if has_value else None))
        elif name in ("config", "workdir", "mode"):
            if not has_value:
                if i >= len(argv) or not _is_value(argv[i]):
                    raise UserError(f"--{name} needs a value: --{name}={_EXAMPLE[name]}")
                value, i = argv[i], i + 1
            setattr(cl, name, value)
        else:
            cl.absl_args.append(arg)
            if not has_value and i < len(argv) and _is_value(argv[i]) and _absl_takes_value(name):
                cl.absl_args.append(argv[i])  # `--log_dir DIR`
                i += 1
    return cl


def _absl_takes_value(name: str) -> bool:
    from absl import flags, logging  # noqa: F401  (absl.logging defines --verbosity, --log_dir, ...)

    return name in flags.FLAGS and not flags.FLAGS[name].boolean


def _is_value(token: str) -> bool:
    """A token that follows `--name` as its value: not a flag (but "-1" is a value)."""
    if not token.startswith("-"):
        return True
    try:
        float(token)
        return True
    except ValueError:
        return False


_EXAMPLE = {"config": "configs/digits_nest_tiny.py", "workdir": "/tmp/nest_digits", "mode": "train"}


def check_required(cl: CommandLine) -> None:
    """The flags every run needs, and nothing unexpected."""
    for arg in cl.absl_args:  # absl would only suggest its own flags
        name = arg.lstrip("-").partition("=")[0]
        close = difflib.get_close_matches(name, ("config", "workdir", "mode", "debug"), n=1, cutoff=0.7)
        if close:
            raise UserError(f"unknown flag --{name}; did you mean --{close[0]}?")
    if cl.positional:
        raise UserError(
            f"unexpected arguments {cl.positional}: every setting is a flag "
            "(--config=PATH, --workdir=DIR, --config.FIELD=VALUE)"
        )
    if not cl.config:
        raise UserError(
            "missing --config=PATH[:ARG], e.g. --config=configs/digits_nest_tiny.py "
            "(nest-jax --help lists the shipped configs)"
        )
    if not cl.workdir:
        raise UserError(
            "missing --workdir=DIR: the directory for checkpoints and metrics "
            "(a run already there is resumed), e.g. --workdir=/tmp/nest_digits"
        )
    if cl.mode not in MODES:
        raise UserError(
            f"--mode={cl.mode} is not a mode: use --mode=train (resumes from the workdir) "
            "or --mode=eval (evaluates its latest checkpoint)"
        )


# ----------------------------------------------------------------------------------------------
# Config files


def configs_dir() -> Path | None:
    """The `configs/` folder shipped beside the package (absent when installed without the repo)."""
    for candidate in (Path(__file__).resolve().parents[1] / "configs", Path.cwd() / "configs"):
        if candidate.is_dir() and any(candidate.glob("*.py")):
            return candidate
    return None


def shipped_configs() -> list[tuple[str, str]]:
    """[(file name, first line of its module docstring)] of every config in `configs_dir()`."""
    folder = configs_dir()
    if folder is None:
        return []
    out = []
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:  # read, never run: a broken config must not break --help
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        except (OSError, SyntaxError, UnicodeDecodeError):
            doc = ""
        out.append((path.name, doc.strip().split("\n")[0]))
    return out


def split_config_spec(spec: str) -> tuple[str, str | None]:
    """ "configs/x.py:small" -> ("configs/x.py", "small"); a ':' before the last '/' (gs://) is kept."""
    head, sep, arg = spec.rpartition(":")
    if sep and "/" not in arg and head and not head.endswith(":"):
        return head, arg
    return spec, None


def _load_module(path: str) -> types.ModuleType:
    from etils import epath  # every path through epath, so a config may live on gs://

    p = epath.Path(path)
    if not p.exists():
        raise UserError(f"config file {path} does not exist{_config_hint(path)}")
    if p.is_dir():
        raise UserError(
            f"--config={path} is a directory; pass a config file, e.g. {path.rstrip('/')}/digits_nest_tiny.py"
        )
    module = types.ModuleType(f"nest_jax_config_{Path(path).stem}")
    module.__file__ = str(Path(path).absolute()) if "://" not in path else path
    try:
        code = compile(p.read_text(), module.__file__, "exec")
        exec(code, module.__dict__)  # a config file is Python by design, like any script the user runs
    except UserError:
        raise
    except Exception as e:
        raise UserError(
            f"config file {path} failed to load: {describe(e)} (fix the file; --debug shows the traceback)"
        ) from e
    return module


def _config_hint(path: str) -> str:
    shipped = [name for name, _ in shipped_configs()]
    if not shipped:
        return "; pass --config=PATH to a config file with a get_config() (see README.md, Training)"
    close = difflib.get_close_matches(Path(path).name, shipped, n=1, cutoff=0.5)
    folder = configs_dir()
    rel = _relative(folder)
    guess = f"; did you mean --config={rel}/{close[0]}?" if close else ""
    return f"{guess} (shipped configs in {rel}/: {', '.join(n[:-3] for n in shipped)})"


def _relative(folder: Path | None) -> str:
    if folder is None:
        return "configs"
    try:
        return str(folder.relative_to(Path.cwd()))
    except ValueError:
        return str(folder)


def load_config(spec: str) -> ml_collections.ConfigDict:
    """`get_config([arg])` of the file named by `spec` ("path.py[:arg]"), locked against new fields."""
    path, arg = split_config_spec(spec)
    module = _load_module(path)
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise UserError(
            f"config file {path} defines no get_config(); a config file is "
            "`def get_config(): return ml_collections.ConfigDict(...)`"
        )
    call = f"get_config({arg!r})" if arg is not None else "get_config()"
    try:
        config = get_config(arg) if arg is not None else get_config()
    except Exception as e:
        raise UserError(
            f"--config={spec}: {call} raised {describe(e)} (fix the config or its argument; "
            "--debug shows the traceback)"
        ) from e
    if not isinstance(config, ml_collections.ConfigDict):
        raise UserError(
            f"--config={spec}: {call} returned {type(config).__name__}, not an "
            "ml_collections.ConfigDict; return the config from get_config()"
        )
    config.lock()
    return config
