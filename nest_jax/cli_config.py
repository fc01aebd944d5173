"""The command line of `nest_jax.main`: its flags, the config file and `--config.FIELD=VALUE` overrides.

Every mistake a user can make here (a config path that does not exist, a `get_config` that raises,
an override of a field the config does not have, a value of the wrong type, a missing flag) becomes
one `UserError` line that names the problem and the fix. Configs are Python files with a
`get_config([arg])` (`--config=configs/cifar10_nest.py:small` passes "small"); override values are
parsed as data for the field's type (`ast.literal_eval` for tuples and lists), never evaluated.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ml_collections
from ml_collections.config_dict import FieldReference

from nest_jax.errors import UserError

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
            f"config file {path} failed to load: {_one_line(e)} (fix the file; --debug shows the traceback)"
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


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


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
            f"--config={spec}: {call} raised {_one_line(e)} (fix the config or its argument; "
            "--debug shows the traceback)"
        ) from e
    if not isinstance(config, ml_collections.ConfigDict):
        raise UserError(
            f"--config={spec}: {call} returned {type(config).__name__}, not an "
            "ml_collections.ConfigDict; return the config from get_config()"
        )
    config.lock()
    return config


# ----------------------------------------------------------------------------------------------
# Overrides: `--config.FIELD=VALUE` (nest_jax.main), `--set FIELD=VALUE` (analyze, convert)

Spell = Callable[[str], str]  # dotted field -> how the user wrote it: "--config.a.b" or "--set a.b"


def _config_flag(path: str) -> str:
    return f"--config.{path}"


def field_paths(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Every leaf field as a dotted path ("train.num_train_steps")."""
    out = []
    for key in config.keys():
        value = config[key]
        if isinstance(value, ml_collections.ConfigDict):
            out += field_paths(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


def _no_such_field(
    config: ml_collections.ConfigDict, path: str, depth: int, spell: Spell, subject: str = "the config"
) -> UserError:
    parts = path.split(".")
    known = field_paths(config)
    close = difflib.get_close_matches(path, known, n=3, cutoff=0.75)
    # A right name in the wrong group (--config.num_train_steps) matches on its last part.
    leaf = parts[-1]
    close += [k for k in known if k.rsplit(".", 1)[-1] == leaf and k not in close][:3]
    if close:
        hint = "close field names: " + ", ".join(spell(c) for c in close[:4])
    else:
        node = config
        for part in parts[:depth]:  # resolved already: the miss is at parts[depth]
            node = node[part]
        group = "".join(f".{p}" for p in parts[:depth])
        owner = f"config{group}" if subject == "the config" else subject
        hint = f"the fields of {owner} are: {', '.join(sorted(node.keys()))}"
    return UserError(f"{spell(path)}: {subject} has no field {'.'.join(parts[: depth + 1])!r}; {hint}")


@functools.cache
def _model_config(name: str) -> Any:
    from flax import nnx

    from nest_jax.models import create_model, list_models

    if name not in list_models():
        create_model(name)  # raises the registry's "Unknown model ... Did you mean" line
    return nnx.eval_shape(lambda: create_model(name)).config  # shapes only: no weights drawn


def model_fields(name: str) -> ml_collections.ConfigDict:
    """The fields of model `name`'s config dataclass (ViTConfig, NestConfig, ...) with the variant's
    values, locked: what `model.overrides` and `python -m nest_jax.convert --set` accept, typed by
    those values. A field whose value is not plain data (a dtype) takes any value."""
    try:
        config = _model_config(name)
    except ValueError as e:
        raise UserError(" ".join(str(e).split())) from None
    out = ml_collections.ConfigDict()
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        plain = value is None or isinstance(value, (bool, int, float, str, tuple, list))
        out[f.name] = value if plain else FieldReference(value, field_type=object)
    out.lock()
    return out


def _overrides_model(config: ml_collections.ConfigDict, parts: list[str]) -> str | None:
    """The model whose config fields the group `parts` holds: an `overrides` group beside the model's
    `name` (config.model, gan.generator) or `model` (a distillation teacher, gan.fid)."""
    if len(parts) < 2 or parts[-1] != "overrides":
        return None
    node = config
    for part in parts[:-1]:
        node = node[part]
    for key in ("name", "model"):
        if key in node and isinstance(node[key], str):
            return node[key]
    return None


def _resolve(
    config: ml_collections.ConfigDict, path: str, spell: Spell, subject: str = "the config"
) -> tuple[ml_collections.ConfigDict, str, type, Any]:
    """(group, key, declared type, current value) of the field at dotted `path`.

    A model's `overrides` group takes any field of that model's config dataclass (`model_fields`),
    set or not yet set there; everything else must already be in the config.
    """
    parts = path.split(".")
    if not all(parts):
        raise UserError(
            f"{spell(path)}: malformed field name; write GROUP.FIELD=VALUE, e.g. {spell('train.num_train_steps')}=100"
        )
    node = config
    for depth, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict):
            group = ".".join(parts[:depth])
            raise UserError(
                f"{spell(path)}: config.{group} is a value, not a group of fields; override it as {spell(group)}=VALUE"
            )
        if part not in node:
            model = _overrides_model(config, parts[:depth]) if depth == len(parts) - 1 else None
            if model is None:
                raise _no_such_field(config, path, depth, spell, subject)
            if not model:
                group = ".".join(parts[: depth - 1])
                raise UserError(f"{spell(path)}: config.{group} names no model yet; set its model before its overrides")
            fields = model_fields(model)
            if part not in fields:
                raise _no_such_field(
                    fields, part, 0, lambda p: spell(".".join([*parts[:depth], p])), f"model {model}'s config"
                )
            return node, part, fields.get_type(part), fields[part]
        if depth == len(parts) - 1:
            return node, part, node.get_type(part), node[part]
        node = node[part]
    raise AssertionError("unreachable")


def parse_value(flag: str, text: str | None, field_type: type, current: Any) -> Any:
    """The override `text` as a value of `field_type` (the field's declared type).

    flag: how the user named the field, e.g. "--config.train.profile" or "--set train.profile".
    """
    if field_type is bool:
        if text is None or text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        bare = f" (or --{flag[2:]} / --no{flag[2:]})" if flag.startswith("--config.") else ""
        raise UserError(f"{flag}={text}: expects true or false{bare}")
    if text is None:
        raise UserError(f"{flag} needs a value: {flag}={_example(field_type, current)}")
    if text in ("None", "none") and field_type is not str:
        return None  # unset an optional field (one declared with a placeholder)
    if field_type in (int, float):
        try:
            return field_type(text)
        except ValueError:
            kind = "an integer" if field_type is int else "a number"
            raise UserError(
                f"{flag}={text}: expects {kind} ({field_type.__name__}), e.g. {flag}={_example(field_type, current)}"
            ) from None
    if field_type is str:
        return text
    if isinstance(field_type, type) and issubclass(field_type, (ml_collections.ConfigDict, dict)):
        raise UserError(
            f"{flag} is a group of fields; override one of them, e.g. "
            f"{flag}.{next(iter(current.keys()), 'FIELD')}=VALUE"
            if current
            else f"{flag} is a group of fields; override its fields one at a time"
        )
    try:
        value = ast.literal_eval(text)  # data only: numbers, strings, tuples, lists, dicts, None
    except (ValueError, SyntaxError):
        if field_type in (tuple, list):
            raise UserError(
                f"{flag}={text}: expects a {field_type.__name__} literal, e.g. {flag}='{_example(field_type, current)}'"
            ) from None
        return text  # a field without a declared type: take the text as a string
    if field_type in (tuple, list):
        return field_type(value) if isinstance(value, (tuple, list)) else field_type((value,))
    return value


def _example(field_type: type, current: Any) -> str:
    if current is not None and not isinstance(current, ml_collections.ConfigDict):
        return str(tuple(current) if field_type is tuple else current)
    return {int: "100", float: "0.001", bool: "true", str: "TEXT", tuple: "(1, 2)", list: "[1, 2]"}.get(
        field_type, "VALUE"
    )


def _apply(
    config: ml_collections.ConfigDict,
    overrides: list[tuple[str, str | None]],
    spell: Spell,
    subject: str = "the config",
) -> dict[str, Any]:
    applied = {}
    for path, text in overrides:
        parent, key, field_type, current = _resolve(config, path, spell, subject)
        flag = spell(path)
        value = parse_value(flag, text, field_type, current)
        try:
            if key in parent:
                parent[key] = value
            else:  # a model field not yet in its `overrides` group
                with parent.unlocked():
                    parent[key] = value
        except (TypeError, ValueError) as e:
            raise UserError(f"{flag}={text}: {_one_line(e)}") from e
        applied[path] = value
    return applied


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[tuple[str, str | None]]) -> None:
    """Sets each `--config.FIELD=VALUE` in order, type-checked against the field's declared type."""
    _apply(config, overrides, _config_flag)


def override(
    config: ml_collections.ConfigDict, items: list[str], flag: str = "--set", subject: str = "the config"
) -> dict[str, Any]:
    """Sets each "FIELD.PATH=VALUE" of `items` in `config`, in order, exactly as `nest_jax.main` reads
    `--config.FIELD.PATH=VALUE`: only existing fields (or a model's fields in an `overrides` group),
    each value parsed for the field's type; every mistake is one `UserError` line naming `flag`.

    Returns {path: value} of what was set (e.g. the model fields `python -m nest_jax.convert` passes on).
    """

    def spell(path: str) -> str:
        return f"{flag} {path}"

    pairs = []
    for item in items:
        path, eq, text = item.partition("=")
        if not eq or not path.strip():
            paths = sorted(field_paths(config), key=lambda p: (p.count("."), len(p)))
            raise UserError(f"{flag} {item}: expects FIELD=VALUE, e.g. {flag} {paths[0] if paths else 'FIELD'}=VALUE")
        pairs.append((path.strip(), text))
    return _apply(config, pairs, spell, subject)
