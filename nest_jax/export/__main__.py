"""Command line: export a nest_jax checkpoint to timm (or a ViT to Google's `.npz`).

  python -m nest_jax.export --checkpoint=WORKDIR_OR_DIR --to=timm --out=DIR
  python -m nest_jax.export --checkpoint=WORKDIR --to=npz --out=vit.npz
  python -m nest_jax.export --checkpoint=model.safetensors --model=deit_small_patch16_224 --to=npz --out=x.npz

What each format holds and which checkpoints need `--model`: `nest_jax.export`. A training workdir
exports its latest checkpoint (`--step`, `--ema` choose another); `--set FIELD=VALUE` sets fields
of `--model` its name does not fix. What timm cannot represent is refused, or noted in `config.json`
(`nest_jax.notes`) and on stderr. Bad input (a missing, truncated or foreign file, an unknown
model) is one line and exit status 2; `--debug` (or NEST_JAX_DEBUG=1) shows the traceback.
"""

from __future__ import annotations

import argparse
import sys

from nest_jax.convert.__main__ import _log_to_stderr, guarded, parse_overrides
from nest_jax.convert.export import FORMATS
from nest_jax.errors import UserError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m nest_jax.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="training workdir, convert output or weights file/folder")
    p.add_argument(
        "--to", default="timm", choices=FORMATS, help="timm: model.safetensors + config.json; npz: Google ViT"
    )
    p.add_argument("--out", required=True, help="output folder (timm) or .npz file / folder (npz)")
    p.add_argument("--model", help="model name, for checkpoints that do not record it")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="architecture field of --model (repeatable), e.g. --set depth=6 --set img_size=384",
    )
    p.add_argument("--step", type=int, help="workdir checkpoint step (default: the latest)")
    p.add_argument("--ema", action="store_true", help="export the workdir's EMA parameters")
    p.add_argument(
        "--mean", type=float, nargs="+", help="input mean per channel (default: the workdir's, else ImageNet)"
    )
    p.add_argument("--std", type=float, nargs="+", help="input std per channel")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    p.add_argument("--debug", action="store_true", help="print the traceback of an error")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Returns the exit status: 0 on success, `USAGE_EXIT_CODE` (2) with one line on stderr for bad input."""
    args = parse_args(argv)
    return guarded("nest_jax.export", args.debug, lambda: _export(args))


def _export(args: argparse.Namespace) -> None:
    from nest_jax.export import export_checkpoint

    if args.overrides and not args.model:
        raise UserError("--set changes fields of --model: pass --model too")
    export_checkpoint(
        args.checkpoint,
        args.out,
        to=args.to,
        model=args.model,
        step=args.step,
        ema=args.ema,
        mean=tuple(args.mean) if args.mean else None,
        std=tuple(args.std) if args.std else None,
        overwrite=args.overwrite,
        **parse_overrides(args.model, args.overrides),
    )


if __name__ == "__main__":
    _log_to_stderr()
    sys.exit(main())
