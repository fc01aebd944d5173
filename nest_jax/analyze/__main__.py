"""`python -m nest_jax.analyze <analysis> --config=... --checkpoint=... --out=DIR`

An analysis is an evaluator kind (`nest_jax.train.evaluators`), built exactly as the training loop
builds `config.evals` entries: `--opt KEY=VALUE` settings (Python literals, e.g. `--opt
severities=(1,2)`) are its keyword arguments, each given to the selected analyses that take it.
`all` runs every analysis and skips with a note those that do not apply; comma-separated lists
work too. With `--compare-config/--compare-checkpoint` a second model sees the same images (CKA
across the two models, and every per-model analysis for both).

--checkpoint: a training workdir (its latest checkpoint: params and BatchNorm statistics), a
`nest_jax.convert` output directory, or with `--source=timm|vit_npz|nest_official|nest_timm` any
importer's file; omitted: random weights (the model at initialization).

Writes DIR/<analysis>.json (the numbers), DIR/<figure>.png, and the same figures (and scalars)
into TensorBoard event files under DIR/tensorboard. Bad input is one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import sys

from nest_jax.errors import USAGE_EXIT_CODE, UserError, debug_requested

PROG = "python -m nest_jax.analyze"


def load_config(spec: str, overrides: list[str], flag: str = "--set"):
    """`path.py[:arg]` -> its `get_config([arg])`, locked, then `FIELD.PATH=VALUE` overrides parsed
    and checked exactly as `nest_jax.main`'s `--config.FIELD.PATH=VALUE` (`nest_jax.overrides.override`)."""
    from nest_jax import cli_config
    from nest_jax.overrides import override

    config = cli_config.load_config(spec)
    override(config, overrides, flag=flag)
    if config.get("task") == "gan":
        raise UserError(
            f"{spec} is a GAN run (task='gan') and {PROG} analyses classifiers; evaluate a GAN with its "
            f"evaluators (samples, fid): python -m nest_jax.main --config={spec} --workdir=WORKDIR --mode=eval"
        )
    return config


def load_checkpoint(model, source: str, path: str, label: str) -> int:
    """Loads a checkpoint into `model` (params, and BatchNorm statistics when it has them) through
    `nest_jax.load_params` / `load_into`; returns the training step (0 unless a workdir).

    A workdir's newest readable checkpoint is used, as training resumes from: an unreadable one is
    named in one line and the previous one tried (analysis only reads: nothing is moved aside)."""
    from nest_jax.convert.load import load_into, load_params
    from nest_jax.convert.workdir import as_path, checkpoint_steps, is_workdir

    steps = checkpoint_steps(path) if source == "nest_jax" and is_workdir(as_path(path)) else []
    candidates = list(reversed(steps)) or [None]
    for step in candidates:
        try:
            weights = load_params(path, source=source, model=model, step=step)
            break
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 -- any failure to read makes this copy unusable
            if step is None:
                raise
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0].split(" [tensorstore_spec=")[0]
            reason = reason if len(reason) <= 160 else reason[:157] + "..."  # without tensorstore's spec dump
            if step == candidates[-1]:
                raise UserError(f"{label}: no readable checkpoint in {path} (the oldest, {step}: {reason})") from e
            print(
                f"{PROG}: warning: {label}: checkpoint {step} of {path} is unreadable ({reason}); using the previous one",
                file=sys.stderr,
            )
    fresh = load_into(model, weights)
    if fresh:
        print(f"{PROG}: note: {label}: class count differs, head left at random: {', '.join(fresh)}", file=sys.stderr)
    return int(weights.step or 0)


def _not_orbax(record: logging.LogRecord) -> bool:
    """Drops orbax's progress and info messages (logged through absl): nothing the user acts on."""
    return record.levelno >= logging.ERROR or f"{os.sep}orbax{os.sep}" not in record.pathname


def build_subject(config, checkpoint: str | None, source: str, label: str, num_classes: int):
    from flax import nnx

    from nest_jax.analyze.loop import Subject
    from nest_jax.train.trainer import build_model

    try:
        model = build_model(config, num_classes, nnx.Rngs(params=int(config.seed), dropout=int(config.seed) + 1))
    except (KeyError, ValueError, TypeError) as e:
        raise UserError(f"cannot build the model of {label}'s config: {e}") from e
    step = 0
    if checkpoint:
        step = load_checkpoint(model, source, checkpoint, label)
    else:
        print(f"{PROG}: note: no --checkpoint for {label}: analysing random initial weights", file=sys.stderr)
    return Subject(label, model), step


def parse(argv):
    from nest_jax.analyze.loop import describe

    ap = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__,
        epilog="analyses:\n" + describe(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("analysis", help="an analysis name (listed below), a comma-separated list, or all")
    ap.add_argument("--config", required=True, help="configs/<name>.py[:arg] (model and evaluation data)")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--source", default="nest_jax", help="nest_jax (default), timm, vit_npz, nest_official, nest_timm")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="config override as nest_jax.main's --config.FIELD=VALUE (typed, existing fields only), repeatable",
    )
    ap.add_argument("--compare-config", default=None)
    ap.add_argument("--compare-checkpoint", default=None)
    ap.add_argument("--compare-source", default="nest_jax")
    ap.add_argument("--compare-set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", required=True, help="output directory (JSON, PNG, tensorboard/)")
    ap.add_argument("--batch-size", type=int, default=None, help="evaluation batch (default train.eval_batch_size)")
    ap.add_argument("--max-batches", type=int, default=0, help="stop after this many batches (0: the whole split)")
    ap.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="analysis setting, repeatable")
    ap.add_argument("--label", default="A")
    ap.add_argument("--compare-label", default="B")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    return ap.parse_args(argv)


def parse_options(items: list[str]) -> dict:
    """`KEY=VALUE` strings -> {key: Python literal (or the bare string)}."""
    out = {}
    for item in items:
        key, eq, raw = item.partition("=")
        if not eq or not key:
            raise UserError(f"--opt {item!r} must look like key=value, e.g. ratios=(0.0,0.5)")
        try:
            out[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key] = raw
    return out


def run(args) -> dict:
    from nest_jax import data
    from nest_jax.analyze.loop import analyse, check_options, make_out_dir, selected

    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size={args.batch_size} must be at least 1 (or left out: train.eval_batch_size)")
    if args.max_batches < 0:
        raise UserError(f"--max-batches={args.max_batches} must be at least 0 (0: the whole split)")
    names = selected(args.analysis)
    options = parse_options(args.opt)
    check_options(names, options)
    make_out_dir(args.out)
    config = load_config(args.config, args.set)
    try:
        info = data.get_info(config.dataset)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(f"cannot read the dataset of {args.config}: {str(e).splitlines()[0]}") from e
    a, step = build_subject(config, args.checkpoint, args.source, args.label, info.num_classes)
    subjects = [a]
    if args.compare_config or args.compare_checkpoint:
        cfg_b = load_config(args.compare_config or args.config, args.compare_set)
        if cfg_b.dataset.image_size != config.dataset.image_size:
            raise UserError("the compared model must take the same images (same dataset.image_size) as the first")
        b, _ = build_subject(cfg_b, args.compare_checkpoint, args.compare_source, args.compare_label, info.num_classes)
        if b.label == a.label:
            raise UserError("--label and --compare-label must differ")
        subjects.append(b)
    return analyse(
        names,
        subjects,
        config,
        out=args.out,
        data=data,
        batch_size=args.batch_size,
        max_batches=args.max_batches,
        step=step,
        skip_inapplicable=args.analysis == "all",
        options=options,
    )


def main(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(args.debug)
    absl_logger = logging.getLogger("absl")
    absl_logger.addFilter(_not_orbax)
    try:
        results = run(args)
    except UserError as e:
        if debug:
            raise
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return USAGE_EXIT_CODE
    finally:
        absl_logger.removeFilter(_not_orbax)
    print(json.dumps({k: sorted(v) if isinstance(v, dict) else v for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
