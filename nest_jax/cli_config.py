"""The command line of `nest_jax.main`: its flags and the config file (`--config.FIELD=VALUE`
overrides follow nest_jax.overrides' grammar).

Every mistake a user can make here (a config path that does not exist, a `get_config` that raises,
a missing or unknown flag) becomes one `UserError` line that names the problem and the fix. Configs
are Python files with a `get_config([arg])` (`--config=configs/cifar10_nest.py:small` passes "small").
"""

from __future__ import annotations

import ast
import difflib
import types
from dataclasses import dataclass, field
from pathlib import Path

import ml_collections

from nest_jax.errors import UserError, describe
from nest_jax.overrides import TRUE_WORDS
from nest_jax.train.config_base import MODES


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
    cl, rest = CommandLine(), list(argv)
    while rest:
        arg = rest.pop(0)
        if arg == "--":
            cl.positional += rest
            break
        if not arg.startswith("-") or arg == "-":
            cl.positional.append(arg)
            continue
        name, eq, value = arg.lstrip("-").partition("=")
        value = value if eq else None
        follows = bool(rest) and _is_value(rest[0])  # `--name VALUE`, as absl reads it
        if arg in ("-h", "-?") or name in ("help", "helpshort", "helpfull"):
            cl.help = "helpfull" if name == "helpfull" else "help"
        elif name in ("debug", "nodebug"):
            cl.debug = name == "debug" and (value is None or value.lower() in TRUE_WORDS)
        elif name.startswith("noconfig."):
            if value is not None:
                raise UserError(f"--{name} takes no value; write --config.{name[9:]}={value} instead")
            cl.overrides.append((name[9:], "false"))
        elif name.startswith("config."):
            cl.overrides.append((name[7:], rest.pop(0) if value is None and follows else value))
        elif name in ("config", "workdir", "mode"):
            if value is None and not follows:
                raise UserError(f"--{name} needs a value: --{name}={_EXAMPLE[name]}")
            setattr(cl, name, rest.pop(0) if value is None else value)
        else:
            cl.absl_args.append(arg)
            if value is None and follows and _absl_takes_value(name):
                cl.absl_args.append(rest.pop(0))  # `--log_dir DIR`
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


def _config_hint(path: str) -> str:
    folder, shipped = configs_dir(), [name for name, _ in shipped_configs()]
    if folder is None or not shipped:
        return "; pass --config=PATH to a config file with a get_config() (see README.md, Training)"
    close = difflib.get_close_matches(Path(path).name, shipped, n=1, cutoff=0.5)
    rel = folder.relative_to(Path.cwd()) if folder.is_relative_to(Path.cwd()) else folder
    guess = f"; did you mean --config={rel}/{close[0]}?" if close else ""
    return f"{guess} (shipped configs in {rel}/: {', '.join(n[:-3] for n in shipped)})"


def load_config(spec: str) -> ml_collections.ConfigDict:
    """`get_config([arg])` of the file named by `spec` ("path.py[:arg]"), locked against new fields."""
    from etils import epath  # every path through epath, so a config may live on gs://

    path, arg = split_config_spec(spec)
    p = epath.Path(path)
    if not p.exists():
        raise UserError(f"config file {path} does not exist{_config_hint(path)}")
    if p.is_dir():
        raise UserError(
            f"--config={path} is a directory; pass a config file, e.g. {path.rstrip('/')}/digits_nest_tiny.py"
        )
    module = types.ModuleType(f"nest_jax_config_{Path(path).stem}")
    module.__file__ = str(Path(path).absolute()) if "://" not in path else path
    try:  # a config file is Python by design, like any script the user runs
        exec(compile(p.read_text(), module.__file__, "exec"), module.__dict__)
    except UserError:
        raise
    except Exception as e:
        raise UserError(
            f"config file {path} failed to load: {describe(e)} (fix the file; --debug shows the traceback)"
        ) from e
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
