"""Evaluators (big_vision's contract): one class per kind, built from `config.evals`, run the same
way by the training loop and by `python -m nest_jax.analyze`.

    @register_evaluator("kind")
    class SomeEvaluator:
        \"\"\"One line: what it measures (shown by `python -m nest_jax.analyze --help`).\"\"\"
        def __init__(self, model_fn, data: EvalData, *, setting=default, ...): ...
        def run(self, state: dict, step: int) -> dict[str, float | np.ndarray]
        def figures(self, results: dict[str, dict]) -> dict[str, Figure]   # optional

`model_fn(state)` returns the `nnx.Module` of a train state's {"params", optional "batch_stats"}
(the EMA is evaluated as `model_fn({**state, "params": state["ema"]})`); it works eagerly and under
`jax.jit`. `data` is an `EvalData`. `run` returns the results, keys relative to the evaluator
("top1", "matrix"), values numbers, arrays or nested dicts/lists of them; the loop writes
`flatten(results)` under the entry's prefix: floats as scalars, arrays with ndim >= 2 as images
(HWC or NHWC). `figures` gets {subject label: unflatten(flatten(results))} and returns figures
keyed by file stem.

`Evaluator` is the base of the evaluators that read the split: it keeps `model_fn`, `data` and the
data settings `batch_size`, `max_batches` (None: the data's defaults) and reads with them (`batches`).

`config.evals.<name> = dict(kind=..., every_steps=..., prefix=..., **settings)`: `build_evaluators`
reads kind, every_steps (None: train.eval_every_steps; 0: only at the end) and prefix (None:
"<name>/"), and passes the remaining keys to the class as keyword arguments; an unknown key is a
one-line UserError naming the close ones, and so is a kind whose class's `task` attribute ("gan" for
the generator's evaluators; "classification" when it has none) is not the run's `config.task`.
Kinds defined by the analysis layer are found by importing `PLUGIN_MODULES` (lazily: the training
loop never imports them itself).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import importlib
import inspect
import numbers
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections
import numpy as np

from nest_jax.convert.common import nest_paths
from nest_jax.errors import UserError
from nest_jax.train.evaluators.data import EvalData, batch_multiple, check_batch_size
from nest_jax.train.trainer import Network

# The analysis layer's modules that register kinds (imported the first time a kind is looked up).
PLUGIN_MODULES: tuple[str, ...] = (
    "nest_jax.analysis.evaluators",
    "nest_jax.analysis.robustness_evaluators",
    "nest_jax.analysis.gan_eval",
    "nest_jax.analysis.segmentation",
)
# Read by build_evaluators itself; every other key of a config.evals entry is a setting of the class.
SCHEDULE_KEYS = ("kind", "every_steps", "prefix")

_REGISTRY: dict[str, type] = {}


def register_evaluator(kind: str) -> Callable[[type], type]:
    """Class decorator: `@register_evaluator("classification") class Classification: ...`."""

    def wrap(cls: type) -> type:
        _REGISTRY[kind] = cls
        return cls

    return wrap


class Evaluator:
    """Base of the evaluators that read the split: `batch_size` examples a batch, at most
    `max_batches` batches (None: the data's defaults)."""

    def __init__(
        self, model_fn: Callable, data: EvalData, *, batch_size: int | None = None, max_batches: int | None = None
    ):
        self.model_fn, self.data, self.batch_size, self.max_batches = model_fn, data, batch_size, max_batches

    def batches(self, split: str | None = None, *, max_batches: int | None = None, dataset: Any = None) -> Iterator:
        """This process's host batches of `split` (None: the evaluation split) of `dataset` (None: the
        run's), at most `max_batches` (None: this evaluator's)."""
        limit = self.max_batches if max_batches is None else max_batches
        return self.data.batches(split, batch_size=self.batch_size, max_batches=limit, dataset=dataset)


def model_state(state: dict) -> dict:
    """The model's part of a train state: {"params", "batch_stats" when present}."""
    return {k: state[k] for k in ("params", "batch_stats") if k in state}


def did_you_mean(name: str, choices) -> str:
    """The hint "did you mean a, b? " naming the choices close to `name` ("" when none is)."""
    close = difflib.get_close_matches(name, list(choices), n=3)
    return f"did you mean {', '.join(close)}? " if close else ""


def _import_plugins() -> None:
    for name in PLUGIN_MODULES:
        importlib.import_module(name)  # plugin modules are imported lazily (train -> analysis)


def get_evaluator(kind: str) -> type:
    """The evaluator class registered for `kind` (importing the plugin modules if needed)."""
    if kind not in _REGISTRY:
        _import_plugins()
    if kind not in _REGISTRY:
        hint = did_you_mean(kind, _REGISTRY)
        raise UserError(f"unknown evaluator kind {kind!r}; {hint}known kinds: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[kind]


def known_kinds() -> dict[str, type]:
    """Every registered kind -> its class (plugins imported), in name order."""
    _import_plugins()
    return dict(sorted(_REGISTRY.items()))


def settings_of(cls: type) -> dict[str, Any]:
    """The settings of an evaluator class: its keyword-only arguments and their defaults."""
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


# Settings of the data every evaluator reads, with their least valid value (None: the data's default).
DATA_SETTING_MINIMUM = {"batch_size": 1, "max_batches": 0}


def check_settings(kind: str, settings: dict, *, where: str) -> None:
    """UserError (one line) unless every key of `settings` is a setting of `kind`'s class and each
    value has the type its signature annotates (`int`, `float`, `bool`, `str`, `dict`,
    `Sequence[...]`, `tuple[...]`, `... | None`); the shared data settings must be in range."""
    cls = get_evaluator(kind)
    valid = settings_of(cls)
    hints = typing.get_type_hints(cls.__init__)
    for key, value in settings.items():
        if key not in valid:
            hint = did_you_mean(key, [*valid, *SCHEDULE_KEYS])
            raise UserError(
                f"{where}: unknown setting {key!r} of evaluator kind {kind!r}; {hint}"
                f"valid settings: {', '.join(valid) or 'none'} (and {', '.join(SCHEDULE_KEYS)})"
            )
        hint = hints.get(key, Any)
        if not _has_type(value, hint):
            raise UserError(
                f"{where}: setting {key}={value!r} of {kind} must be {_type_name(hint)} (default {key}={valid[key]!r})"
            )
        least = DATA_SETTING_MINIMUM.get(key)
        if least is not None and value is not None and value < least:
            raise UserError(f"{where}: setting {key}={value!r} of {kind} must be at least {least} (or None)")


def _has_type(value: Any, hint: Any) -> bool:
    """Whether `value` fits the annotation `hint` (unknown annotations accept anything)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, a) for a in args)
    if hint is type(None) or hint is None:
        return value is None
    if hint in (bool, int, float):
        if isinstance(value, (bool, np.bool_)):
            return hint is bool
        return hint is not bool and isinstance(value, numbers.Integral if hint is int else numbers.Real)
    if hint is dict or origin is dict:
        return isinstance(value, (dict, ml_collections.ConfigDict))
    if origin in (collections.abc.Sequence, list, tuple) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return len(value) == len(args) and all(map(_has_type, value, args))
        return all(_has_type(v, args[0] if args else Any) for v in value)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _type_name(hint: Any, article: bool = True) -> str:
    """`hint` in words: "an int", "a sequence of float", "a sequence of (int, int) or None"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None) or hint is None:
        return "None"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a, article) for a in args)
    if origin in (collections.abc.Sequence, list) or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
        name = f"sequence of {_type_name(args[0], False)}" if args else "sequence"
    elif origin is tuple:
        return "(" + ", ".join(_type_name(a, False) for a in args) + ")"
    else:
        name = getattr(hint, "__name__", str(hint))
    return (("an " if name[0] in "aeiou" else "a ") if article else "") + name


def make_evaluator(kind: str, model_fn: Callable, data: EvalData, settings: dict, *, where: str) -> Any:
    """`kind`'s class built with `settings` as keyword arguments, checked first (`check_settings`);
    the class's __init__ checks the ranges of its own settings."""
    check_settings(kind, settings, where=where)
    return get_evaluator(kind)(model_fn, data, **settings)


@dataclasses.dataclass
class Evaluation:
    """One `config.evals` entry: its evaluator and when it runs; `run` prefixes the keys."""

    name: str
    evaluator: Any
    every_steps: int
    prefix: str

    def due(self, step: int, last: bool) -> bool:
        return last or (self.every_steps > 0 and step % self.every_steps == 0)

    def run(self, state: dict, step: int) -> dict[str, Any]:
        return {self.prefix + k: v for k, v in flatten(self.evaluator.run(state, step)).items()}


def build_evaluators(config: Any, model_fn: Callable, data: EvalData) -> dict[str, Evaluation]:
    """name -> Evaluation for every entry of `config.evals` (name order)."""
    out = {}
    for name, entry in sorted(dict(config.evals).items()):
        entry = dict(entry)
        if "kind" not in entry:
            raise UserError(f"config.evals.{name} has no kind; known kinds: {', '.join(known_kinds())}")
        kind, every, prefix = (entry.pop(k, None) for k in SCHEDULE_KEYS)
        _check_task(kind, config.get("task", "classification"), where=f"config.evals.{name}")
        every = config.train.eval_every_steps if every is None else every
        ev = make_evaluator(kind, model_fn, data, entry, where=f"config.evals.{name}")
        out[name] = Evaluation(name, ev, int(every or 0), f"{name}/" if prefix is None else str(prefix))
    return out


def _check_task(kind: str, task: str, *, where: str) -> None:
    """UserError unless `kind` evaluates the model of `task`: a classifier, or for task "gan" the
    generator (an evaluator class says so by its `task` attribute; "classification" when it has none)."""
    task_of = lambda cls: getattr(cls, "task", "classification")  # noqa: E731
    evaluates = task_of(get_evaluator(kind))
    if evaluates != task:
        kinds = [k for k, cls in known_kinds().items() if task_of(cls) == task]
        raise UserError(
            f"{where}: evaluator kind {kind!r} is for task={evaluates!r} runs and this run's "
            f"task is {task!r}; its kinds are: {', '.join(kinds)}"
        )


def model_fn_of(model: Any) -> tuple[Callable[[dict], Any], dict]:
    """An `nnx.Module` -> (model_fn, state) of this contract: state {"params", "batch_stats" when
    the model has BatchNorm} as pure dicts; model_fn(state) merges any such state back."""
    net = Network(lambda: model)
    params, stats = net.init()
    state = {"params": params} if stats is None else {"params": params, "batch_stats": stats}
    rest = net.rest()
    return (lambda s: net.merge(s["params"], s.get("batch_stats"), rest)), state


def flatten(value: Any, prefix: str = "") -> dict[str, float | np.ndarray]:
    """Nested results -> {"a/b/0": float}: dicts by key, lists and tuples by position (each entry
    a scalar metric); numpy arrays are kept whole (the loop writes those with ndim >= 2 as images,
    1-d ones not at all: use them for the x-axes of curves); strings and None are left out."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}{key}/").items()}
    if isinstance(value, (list, tuple)):
        return {k: v for i, item in enumerate(value) for k, v in flatten(item, f"{prefix}{i}/").items()}
    if isinstance(value, (np.ndarray, jax.Array)) and np.ndim(value):
        return {prefix[:-1]: np.asarray(value)}
    if isinstance(value, (bool, int, float, np.number, np.ndarray, jax.Array)):
        return {prefix[:-1]: float(value)}
    return {}


def unflatten(flat: dict[str, Any]) -> Any:
    """The inverse of `flatten` up to types: "a/0", "a/1" -> {"a": [v0, v1]}."""

    def lists(node):
        if not isinstance(node, dict):
            return node
        node = {k: lists(v) for k, v in node.items()}
        if node and sorted(node) == sorted(map(str, range(len(node)))):
            return [node[str(i)] for i in range(len(node))]
        return node

    return lists(nest_paths(flat))


from nest_jax.train.evaluators import classification  # noqa: E402,F401  (registers the built-in kind)

__all__ = [
    "EvalData",
    "Evaluation",
    "Evaluator",
    "batch_multiple",
    "build_evaluators",
    "check_batch_size",
    "check_settings",
    "did_you_mean",
    "flatten",
    "get_evaluator",
    "known_kinds",
    "make_evaluator",
    "model_fn_of",
    "model_state",
    "register_evaluator",
    "settings_of",
    "unflatten",
]
