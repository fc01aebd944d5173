"""Evaluation only: the requested analyses built as `build_evaluators` builds them (the classes,
settings and defaults the training loop uses), run once per model; JSON, PNG and TensorBoard out.

Each analysis is an evaluator kind of the same name (`nest_jax.train.evaluators.known_kinds()`).
With two models every per-model evaluator runs for both, on the same images; evaluators with a
`compare` method (CKA) also run across the two, under the key "<label A>|<label B>".
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

import numpy as np

from nest_jax.errors import UserError
from nest_jax.paths import as_path
from nest_jax.train.evaluators import (
    EvalData,
    check_settings,
    did_you_mean,
    flatten,
    get_evaluator,
    known_kinds,
    model_fn_of,
    settings_of,
    unflatten,
)
from nest_jax.train.sharding import make_mesh


@dataclasses.dataclass
class Subject:
    """One model under analysis: its label (for titles, keys and file names) and the module."""

    label: str
    model: Any


def describe() -> str:
    """One line per analysis (evaluator kind): its name and the first line of its docstring."""
    kinds = known_kinds()
    width = max(map(len, kinds))
    return "\n".join(f"  {k:<{width}}  {summary(c)}" for k, c in kinds.items())


def summary(cls: type) -> str:
    """The first line of a class's docstring ("" without one)."""
    return ((cls.__doc__ or "").strip().splitlines() or [""])[0]


def selected(spec: str) -> list[str]:
    """`all`, a name or a comma-separated list -> analysis names (UserError for an unknown one)."""
    kinds = known_kinds()
    names = list(kinds) if spec == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in kinds]
    if bad or not names:
        hint = did_you_mean(bad[0], kinds) if bad else ""
        raise UserError(f"unknown analysis {', '.join(bad) or spec!r}; {hint}choose from {', '.join(kinds)} or all")
    return names


def check_options(names: list[str], options: dict) -> dict[str, dict]:
    """Every --opt key must be a setting of at least one selected analysis, of the type each that
    takes it declares (`check_settings`): checked before any model or data is read. Returns
    {name: the options it takes}."""
    takes = {n: settings_of(known_kinds()[n]) for n in names}
    known = sorted({k for keys in takes.values() for k in keys})
    for key in options:
        if key not in known:
            hint = did_you_mean(key, known)
            raise UserError(f"unknown --opt {key} for {', '.join(names)}; {hint}valid: {', '.join(known) or 'none'}")
    takes = {n: {k: v for k, v in options.items() if k in keys} for n, keys in takes.items()}
    for name, settings in takes.items():
        check_settings(name, settings, where="--opt")
    return takes


def to_json(x: Any) -> Any:
    """Results -> plain JSON types (arrays to nested lists; inf/NaN to strings)."""
    if isinstance(x, dict):
        return {str(k): to_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_json(v) for v in x]
    if isinstance(x, str):
        return x
    a = np.asarray(x, np.float64)
    if a.ndim:
        return to_json(a.tolist())
    return float(a) if np.isfinite(a) else str(float(a))


def analyse(
    names: list[str],
    subjects: list[Subject],
    config: Any,
    *,
    out: str,
    data: Any,
    batch_size: int | None = None,
    max_batches: int = 0,
    step: int = 0,
    skip_inapplicable: bool = False,
    options: dict | None = None,
) -> dict[str, dict]:
    """Runs analyses `names` on `subjects` over `config`'s evaluation split (read through the data
    module `data`); writes under `out`; returns {name: {label: results}}.

    skip_inapplicable: leave out (with a note on stderr) analyses that do not apply (e.g.
    localization on a ResNet) instead of raising their UserError. options: evaluator settings
    (`--opt KEY=VALUE`), each given to the analyses that take it.
    """
    settings = check_options(names, dict(options or {}))
    make_out_dir(out)
    eval_data = EvalData(config, data, make_mesh({"data": -1}), batch_size=batch_size, max_batches=max_batches)
    bound = [model_fn_of(s.model) for s in subjects]
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(as_path(out) / "tensorboard"))
    # Every analysis is built (its settings checked) before any runs: a bad value fails at once.
    built = {n: _build(n, settings[n], bound, eval_data, skip_inapplicable) for n in names}
    results: dict[str, dict] = {}
    try:
        for name in names:
            if built[name] is None:
                continue
            numbers = _run_one(name, subjects, built[name], bound, step, skip_inapplicable)
            if numbers is None:
                continue
            results[name], figures = numbers
            try:
                _write(out, name, results[name], figures, writer, step)
            except OSError as e:  # a full disk or a read-only folder: one line, not a traceback
                raise UserError(f"cannot write the results of {name} under {out}: {e.strerror or e}") from e
    finally:
        writer.close()
    return results


def make_out_dir(out: str) -> None:
    """Creates the output folder, local or gs:// (UserError if it cannot be: a file there, no permission)."""
    path = as_path(out)
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; pass a folder for the results")
    try:
        (path / "tensorboard").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the output folder {out}: {e.strerror or e}") from e


def _write(out: str, name: str, results: dict, figures: dict, writer: Any, step: int) -> None:
    """`name`'s results as out/<name>.json, its figures as PNG, both (and the scalars) to TensorBoard."""
    (as_path(out) / f"{name}.json").write_text(json.dumps(to_json(results)))
    for label, r in results.items():
        for key, v in flatten(r).items():
            if np.ndim(v) == 0:
                writer.add_scalar(f"{name}/{label}/{key}", v, global_step=step)
    for stem, fig in figures.items():
        with (as_path(out) / f"{stem}.png").open("wb") as f:
            fig.savefig(f, format="png", dpi=110)
        writer.add_figure(f"{name}/{stem}", fig, global_step=step)


def _build(name, settings, bound, data, skip_inapplicable) -> list | None:
    """Analysis `name`'s evaluator for each model; None when `all` asked for one that does not apply."""
    cls = get_evaluator(name)
    try:
        return [cls(model_fn, data, **settings) for model_fn, _ in bound]
    except UserError as e:  # a setting it needs is missing (shape_bias without stimuli)
        if skip_inapplicable:  # unless it builds with its defaults: a bad --opt value fails even under `all`
            try:
                cls(bound[0][0], data)
            except UserError:
                print(f"note: skipping {name}: {e}", file=sys.stderr)
                return None
        raise


def _run_one(name, subjects, built, bound, step, skip_inapplicable):
    """(results by label, figures) of one analysis; None when `all` asked for one that does not
    apply. With two models, one it does not apply to is noted and left out."""
    results, evaluators, reason = {}, {}, ""
    for s, ev, (_, state) in zip(subjects, built, bound):
        try:
            results[s.label] = unflatten(flatten(ev.run(state, step)))
            evaluators[s.label] = ev
        except (UserError, ValueError) as e:  # e.g. a ResNet has no attention; nothing to attack
            reason = str(e).splitlines()[0]
            if not (skip_inapplicable or len(subjects) > 1):
                raise UserError(reason if isinstance(e, UserError) else f"{name}: {reason}") from e
            print(f"note: {name} skipped for {s.label}: {reason}", file=sys.stderr)
            results[s.label] = {"skipped": reason}
    if not evaluators:
        if skip_inapplicable:
            return None
        raise UserError(f"{name}: {reason}")
    done = {k: results[k] for k in evaluators}
    first = next(iter(evaluators.values()))
    if len(evaluators) == 2 and hasattr(first, "compare"):
        (a, ev_a), (b, ev_b) = evaluators.items()
        results[f"{a}|{b}"] = done[f"{a}|{b}"] = unflatten(flatten(ev_a.compare(bound[0][1], ev_b, bound[1][1])))
    return results, (first.figures(done) if hasattr(first, "figures") else {})
