"""Periodic evaluations, chosen from `config.evals` (big_vision style): one small class per kind.

`config.evals` maps a name to {kind, split, every_steps (0: only at the end; None: the value of
train.eval_every_steps), prefix, ...fields of the kind}. Every evaluator has the interface

    class Evaluator:
        def __init__(self, name: str, cfg: ConfigDict, *, config, trainer, data): ...
        def run(self, state: dict, rest, step: int) -> dict[str, float | np.ndarray]

`run` returns keys already prefixed; floats are written as scalars, arrays with ndim >= 2 as images
(HWC or NHWC; float in [0, 1] or uint8). `trainer` is the `nest_jax.train.trainer.Trainer`, `data`
the data module. Kinds are registered with `@register_evaluator("kind")`. Higher layers add kinds
without the training loop importing them: when a kind is unknown, `get_evaluator` imports the
modules in `PLUGIN_MODULES` once (a missing plugin module is skipped) and looks again.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import Any

import ml_collections

from nest_jax.errors import UserError

# Modules that register more kinds; imported only when a config asks for a kind not yet known.
PLUGIN_MODULES: tuple[str, ...] = ("nest_jax.analysis.evaluators", "nest_jax.analysis.robustness_evaluators")

_REGISTRY: dict[str, type] = {}


def register_evaluator(kind: str) -> Callable[[type], type]:
    """Class decorator: `@register_evaluator("classification") class Classification: ...`."""

    def wrap(cls: type) -> type:
        _REGISTRY[kind] = cls
        return cls

    return wrap


def _import_plugins() -> None:
    for name in PLUGIN_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:  # only the plugin itself (or its package) may be missing
            if e.name is None or not (name == e.name or name.startswith(e.name + ".")):
                raise


def get_evaluator(kind: str) -> type:
    """The evaluator class registered for `kind` (importing the plugin modules if needed)."""
    if kind not in _REGISTRY:
        _import_plugins()
    if kind not in _REGISTRY:
        raise UserError(f"unknown evaluator kind {kind!r} in config.evals; known kinds: {sorted(_REGISTRY)}")
    return _REGISTRY[kind]


def known_kinds() -> list[str]:
    _import_plugins()
    return sorted(_REGISTRY)


def eval_configs(config: Any) -> dict[str, ml_collections.ConfigDict]:
    """`config.evals` with defaults resolved (every_steps None -> train.eval_every_steps, split None ->
    dataset.eval_split, prefix None -> "<name>_"); a config without `evals` gets the classic one."""
    evals = config.get("evals", None)
    if evals is None:
        evals = {"val": dict(kind="classification", split=None, every_steps=None, prefix="eval_")}
    out = {}
    for name, cfg in dict(evals).items():
        cfg = ml_collections.ConfigDict(dict(cfg))
        with cfg.unlocked():
            if cfg.get("every_steps", None) is None:
                cfg.every_steps = int(config.train.get("eval_every_steps", 0) or 0)
            if cfg.get("split", None) is None:
                cfg.split = config.dataset.get("eval_split", None)
            if cfg.get("prefix", None) is None:
                cfg.prefix = f"{name}_"
        if "kind" not in cfg:
            raise UserError(f"config.evals.{name} has no kind; known kinds: {known_kinds()}")
        out[name] = cfg
    return out


def build_evaluators(config: Any, trainer: Any, data: Any) -> dict[str, Any]:
    """name -> evaluator instance for every entry of `config.evals`."""
    return {
        name: get_evaluator(cfg.kind)(name, cfg, config=config, trainer=trainer, data=data)
        for name, cfg in eval_configs(config).items()
    }


def due(cfg: Any, step: int, last: bool) -> bool:
    every = int(cfg.every_steps or 0)
    return last or (every > 0 and step % every == 0)


def batch_multiple(trainer: Any) -> int:
    """Examples per batch must be a multiple of this: the devices along the mesh's batch axes."""
    import jax

    from nest_jax.train.sharding import BATCH_AXES

    mesh = trainer.mesh
    n = math.prod(mesh.shape[a] for a in BATCH_AXES if a in mesh.shape)
    return math.lcm(n, jax.process_count())


from nest_jax.train.evaluators import classification  # noqa: E402,F401  (registers the built-in kind)
