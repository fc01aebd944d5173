"""The override grammar shared by the command lines: `--config.FIELD=VALUE` (nest_jax.main) and
`--set FIELD=VALUE` (analyze, convert).

An override names a field the config has (a misspelt or misplaced name is one `UserError` line that
lists the close ones) and its value is parsed as data for the field's type: booleans from the usual
words, numbers, strings, `None` for optional fields, and tuples and lists through `ast.literal_eval`,
never evaluated. `model.overrides.X` may name any constructor argument of the config's model.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
from typing import Any

import ml_collections
from ml_collections.config_dict import FieldReference

from nest_jax.errors import UserError, describe

TRUE_WORDS, FALSE_WORDS = ("true", "t", "1", "yes", "y", "on"), ("false", "f", "0", "no", "n", "off")


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
    config: ml_collections.ConfigDict,
    path: str,
    depth: int,
    group: ml_collections.ConfigDict,
    flag: str,
    subject: str = "the config",
) -> UserError:
    """The miss is at `path`'s part `depth`, in `group`; `flag` spells a field as the user writes it
    ("--config." or "--set ")."""
    parts = path.split(".")
    known = field_paths(config)
    close = difflib.get_close_matches(path, known, n=3, cutoff=0.75)
    # A right name in the wrong group (--config.num_train_steps) matches on its last part.
    close += [k for k in known if k.rsplit(".", 1)[-1] == parts[-1] and k not in close][:3]
    if close:
        hint = "close field names: " + ", ".join(flag + c for c in close[:4])
    else:
        owner = "config" + "".join(f".{p}" for p in parts[:depth]) if subject == "the config" else subject
        hint = f"the fields of {owner} are: {', '.join(sorted(group.keys()))}"
    return UserError(f"{flag}{path}: {subject} has no field {'.'.join(parts[: depth + 1])!r}; {hint}")


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


def _resolve(
    config: ml_collections.ConfigDict, path: str, flag: str, subject: str = "the config"
) -> tuple[ml_collections.ConfigDict, str, type, Any]:
    """(group, key, declared type, current value) of the field at dotted `path`.

    A model's `overrides` group (beside the model's `name`, as config.model and gan.generator, or
    `model`, as a distillation teacher) takes any field of that model's config dataclass
    (`model_fields`), set or not yet set there; everything else must already be in the config.
    """
    *groups, key = parts = path.split(".")
    if not all(parts):
        raise UserError(
            f"{flag}{path}: malformed field name; write GROUP.FIELD=VALUE, e.g. {flag}train.num_train_steps=100"
        )
    owner, node = None, config
    for depth, part in enumerate(groups):
        if part not in node:
            raise _no_such_field(config, path, depth, node, flag, subject)
        owner, node = node, node[part]
        if not isinstance(node, ml_collections.ConfigDict):
            group = ".".join(parts[: depth + 1])
            raise UserError(
                f"{flag}{path}: config.{group} is a value, not a group of fields; override it as {flag}{group}=VALUE"
            )
    if key in node:
        return node, key, node.get_type(key), node[key]
    model = None
    if len(groups) > 1 and groups[-1] == "overrides":
        model = next((owner[k] for k in ("name", "model") if k in owner and isinstance(owner[k], str)), None)
    if model is None:
        raise _no_such_field(config, path, len(groups), node, flag, subject)
    if not model:
        raise UserError(
            f"{flag}{path}: config.{'.'.join(groups[:-1])} names no model yet; set its model before its overrides"
        )
    fields = model_fields(model)
    if key not in fields:
        raise _no_such_field(fields, key, 0, fields, f"{flag}{'.'.join(groups)}.", f"model {model}'s config")
    return node, key, fields.get_type(key), fields[key]


def parse_value(flag: str, text: str | None, field_type: type, current: Any) -> Any:
    """The override `text` as a value of `field_type` (the field's declared type).

    flag: how the user named the field, e.g. "--config.train.profile" or "--set train.profile".
    """
    if field_type is bool:
        if text is None or text.lower() in TRUE_WORDS:
            return True
        if text.lower() in FALSE_WORDS:
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
    config: ml_collections.ConfigDict, overrides: list[tuple[str, str | None]], flag: str, subject: str = "the config"
) -> dict[str, Any]:
    applied = {}
    for path, text in overrides:
        parent, key, field_type, current = _resolve(config, path, flag, subject)
        value = parse_value(flag + path, text, field_type, current)
        try:
            if key in parent:
                parent[key] = value
            else:  # a model field not yet in its `overrides` group
                with parent.unlocked():
                    parent[key] = value
        except (TypeError, ValueError) as e:
            raise UserError(f"{flag}{path}={text}: {describe(e)}") from e
        applied[path] = value
    return applied


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[tuple[str, str | None]]) -> None:
    """Sets each `--config.FIELD=VALUE` in order, type-checked against the field's declared type."""
    _apply(config, overrides, "--config.")


def override(
    config: ml_collections.ConfigDict, items: list[str], flag: str = "--set", subject: str = "the config"
) -> dict[str, Any]:
    """Sets each "FIELD.PATH=VALUE" of `items` in `config`, in order, exactly as `nest_jax.main` reads
    `--config.FIELD.PATH=VALUE`: only existing fields (or a model's fields in an `overrides` group),
    each value parsed for the field's type; every mistake is one `UserError` line naming `flag`.

    Returns {path: value} of what was set (e.g. the model fields `python -m nest_jax.convert` passes on).
    """
    pairs = []
    for item in items:
        path, eq, text = item.partition("=")
        if not eq or not path.strip():
            paths = sorted(field_paths(config), key=lambda p: (p.count("."), len(p)))
            raise UserError(f"{flag} {item}: expects FIELD=VALUE, e.g. {flag} {paths[0] if paths else 'FIELD'}=VALUE")
        pairs.append((path.strip(), text))
    return _apply(config, pairs, f"{flag} ", subject)
