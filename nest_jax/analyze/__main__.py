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
import importlib.util
import json
import os
import sys
from pathlib import Path

from nest_jax.errors import USAGE_EXIT_CODE, UserError

PROG = "python -m nest_jax.analyze"


def load_config(spec: str, overrides: list[str]):
    """`path.py[:arg]` -> its `get_config([arg])`, then `key.path=value` overrides (literals only)."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise UserError(f"config file {path!r} not found; pass --config=configs/<name>.py[:arg]")
    mod_spec = importlib.util.spec_from_file_location("_nest_jax_analyze_config", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    config = module.get_config(arg) if arg else module.get_config()
    for item in overrides:
        key, eq, raw = item.partition("=")
        if not eq:
            raise UserError(f"--set {item!r} must look like key.path=value, e.g. model.overrides.skip_removed=(0,)")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # a bare string
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        with config.unlocked() if hasattr(config, "unlocked") else _null():
            node[leaf] = value
    return config


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def load_checkpoint(model, source: str, path: Path, label: str) -> int:
    """Loads a checkpoint into `model` (params, and BatchNorm statistics when it has them) through
    `nest_jax.train.init_from.read_weights`; returns the training step (0 unless a workdir)."""
    import jax.numpy as jnp
    from flax import nnx

    from nest_jax.train.init_from import read_weights
    from nest_jax.train.sharding import path_str

    params, stats, fresh = read_weights(source, path, model, flag="--checkpoint")
    if fresh:
        print(f"{PROG}: note: {label}: class count differs, head left at random: {', '.join(fresh)}", file=sys.stderr)
    for kind, arrays in ((nnx.Param, params), (nnx.BatchStat, stats)):
        state = nnx.state(model, kind)
        for k, var in nnx.to_flat_state(state):
            if path_str(k) in arrays:
                var.set_value(jnp.asarray(arrays[path_str(k)]))
        nnx.update(model, state)
    if source == "nest_jax" and (path / "checkpoints").is_dir():
        import orbax.checkpoint as ocp

        mgr = ocp.CheckpointManager(os.path.abspath(path / "checkpoints"))
        step = mgr.latest_step()
        mgr.close()
        return int(step or 0)
    return 0


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
        path = Path(checkpoint)
        if not path.exists():
            raise UserError(
                f"checkpoint {checkpoint!r} does not exist; pass a training workdir, a converted "
                "checkpoint directory, or an importer's file with --source"
            )
        try:
            step = load_checkpoint(model, source, path, label)
        except (FileNotFoundError, ValueError, KeyError) as e:
            raise UserError(f"cannot load {checkpoint!r} as a {source} checkpoint: {str(e).splitlines()[0]}") from e
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
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
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
    from nest_jax.analyze.loop import analyse, check_options, selected

    names = selected(args.analysis)
    options = parse_options(args.opt)
    check_options(names, options)
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
    debug = args.debug or os.environ.get("NEST_JAX_DEBUG") == "1"
    try:
        results = run(args)
    except UserError as e:
        if debug:
            raise
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return USAGE_EXIT_CODE
    print(json.dumps({k: sorted(v) if isinstance(v, dict) else v for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
