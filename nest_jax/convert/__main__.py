"""Command line: convert a foreign checkpoint into a nest_jax orbax checkpoint.

  python -m nest_jax.convert --model vit_base_patch16_224 --source vit_npz \\
      --input ViT-B_16.npz --output /ckpt/vit_b16 [--num-classes 10] [--img-size 384]

Sources: `timm` (ViT/DeiT/ResNet state dicts), `vit_npz` (Google ViT), `nest_official` (official
NesT flax parameters as a flat '/'-keyed `.npz`), `nest_timm` (timm NesT). The position tables
are resized to `--img-size` and heads with another class count are re-initialized (`adapt_params`).
The output is read back by `nest_jax.load_params(DIR)` (then `load_into`). Architecture fields the name
does not fix go through `--set`, e.g. `--set pool_padding=symmetric` for timm's plain `nest_*`
weights (its `nest_*_jx` weights use the default TF-SAME pooling).

Checks before anything is written, each a one-line error and exit status 2: the file is complete
and holds only numeric tensors (pickled code is refused, never run), every tensor has the rank the
architecture expects, no weight is NaN or infinite (`--allow-nonfinite` converts anyway), the
class count is 0 or more and the image size positive. `--input` is read by its content, not its
suffix (a safetensors file named `.pth` is read as safetensors); bfloat16 weights are read exactly.
`--overwrite` replaces only an earlier nest_jax checkpoint, and only once the new one is complete;
if anyone put files of their own into it, it refuses and names them (it never deletes them). The
output is completed in a hidden sibling folder and renamed into place, so a full disk or a crash
leaves nothing behind (a full disk is one line, exit status 2).
`--debug` (or NEST_JAX_DEBUG=1) prints the traceback of an error.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
from etils import epath
from flax import nnx

from nest_jax.convert.checkpoint import foreign_files, holds_foreign, is_replaceable, save_params
from nest_jax.convert.common import check_finite, flat_paths
from nest_jax.convert.load import IMPORTERS, SOURCE_GELU, from_source, load_into, read_file
from nest_jax.convert.resize import METHODS
from nest_jax.errors import USAGE_EXIT_CODE, UserError, debug_requested
from nest_jax.overrides import model_fields, override
from nest_jax.paths import as_path

log = logging.getLogger("nest_jax.convert")
# Where each source keeps its classifier, and whether the class count is the last axis (JAX) or first (torch).
HEAD_KEYS = {
    "timm": (("head.weight", 0), ("fc.weight", 0), ("head.fc.weight", 0)),
    "vit_npz": (("head/kernel", -1),),
    "nest_official": (("Dense_0/kernel", -1),),
    "nest_timm": (("head.weight", 0),),
}


def checkpoint_classes(source: str, data: dict[str, np.ndarray]) -> int:
    """The class count of the checkpoint's head, 0 when it has none."""
    for key, axis in HEAD_KEYS[source]:
        for prefix in ("", "params/", "opt/target/"):
            if prefix + key in data:
                return int(np.shape(data[prefix + key])[axis])
    return 0


# Ranks of the timm keys whose rank the converters rely on before any shape check (the rest are
# renamed leaf by leaf and their shapes checked against the model's).
TIMM_RANKS = {
    "timm": {
        "cls_token": 3,
        "dist_token": 3,
        "pos_embed": 3,
        "patch_embed.proj.weight": 4,
        r"blocks\.\d+\.attn\.(qkv|proj)\.weight": 2,
    },
    "nest_timm": {
        "patch_embed.proj.weight": 4,
        r"levels\.\d+\.pos_embed": 4,
        r"levels\.\d+\.transformer_encoder\.\d+\.attn\.(qkv|proj)\.weight": 2,
    },
}
_PREFIXES = ("params/", "opt/target/", "module.")


def reference_shapes(source: str, model: nnx.Module) -> dict[str, tuple[int, ...]]:
    """{source key: shape} the model would have in `source`'s own layout, where an exporter exists."""
    try:
        if source == "vit_npz":
            from nest_jax.convert.vit_npz import params_to_vit_npz

            ref = {**params_to_vit_npz(model, "prelinen"), **params_to_vit_npz(model, "linen")}
        elif source == "nest_official":
            from nest_jax.convert.nest import params_to_official_nest

            ref = flat_paths(params_to_official_nest(model))
        else:
            return {}
    except (ValueError, TypeError, KeyError, NotImplementedError):  # e.g. a hybrid ViT: no exporter
        return {}
    return {k: tuple(np.shape(v)) for k, v in ref.items()}


def check_ranks(source: str, data: dict[str, np.ndarray], model: nnx.Module, model_name: str) -> None:
    """Every tensor the converters reshape has the architecture's rank; else name it and both shapes."""
    ref = reference_shapes(source, model)
    rules = TIMM_RANKS.get(source, {})
    for key, value in data.items():
        name = next((key[len(p) :] for p in _PREFIXES if key.startswith(p)), key)
        if name in ref:
            want_rank, like = len(ref[name]), f", e.g. {ref[name]}"
        else:
            want_rank = next((r for pattern, r in rules.items() if re.fullmatch(pattern, name)), None)
            like = ""
        if want_rank is not None and np.ndim(value) != want_rank:
            raise UserError(
                f"--input entry {key!r} has shape {tuple(np.shape(value))} (rank {np.ndim(value)}) but "
                f"{model_name} expects rank {want_rank}{like}: pass a {source} checkpoint of this "
                "architecture (or the matching --model / --set fields)"
            )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m nest_jax.convert", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="registered model name (nest_jax.models.list_models())")
    p.add_argument("--source", required=True, choices=IMPORTERS)
    p.add_argument("--input", required=True, help="checkpoint file (.npz, .pth, .safetensors)")
    p.add_argument("--output", required=True, help="directory for the orbax checkpoint (must not exist)")
    p.add_argument("--num-classes", type=int, default=None, help="default: the checkpoint's class count")
    p.add_argument("--img-size", type=int, default=None, help="default: the model's native size")
    p.add_argument(
        "--gelu",
        choices=("exact", "tanh"),
        default=None,
        help="default: the source's own (tanh for Google checkpoints, exact for timm)",
    )
    p.add_argument(
        "--resize-method",
        choices=METHODS,
        default=None,
        help="position-table interpolation; default linear for Google sources, bicubic for timm",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        dest="overrides",
        help="any other field of the model's config, e.g. --set drop_path_rate=0.1 --set depths='(1, 1)' "
        "(VALUE parsed for the field's type, as nest_jax.main's --config.FIELD=VALUE)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --output if it is an earlier nest_jax checkpoint, once the new one is complete; "
        "refused (nothing deleted) for any other folder, and for a checkpoint holding files nest_jax "
        "did not write, which are named",
    )
    p.add_argument(
        "--allow-nonfinite",
        action="store_true",
        help="convert even if some weights are NaN or infinite (refused by default)",
    )
    p.add_argument("--debug", action="store_true", help="print the traceback of an error (also NEST_JAX_DEBUG=1)")
    return p.parse_args(argv)


def parse_overrides(model_name: str, items: list[str]) -> dict[str, Any]:
    """`--set FIELD=VALUE` items -> {field: value}: fields of the model's config dataclass, each value
    parsed for the field's type as `nest_jax.main` parses `--config.FIELD=VALUE` (`nest_jax.overrides.override`)."""
    if not items:
        return {}
    return override(model_fields(model_name), items, flag="--set", subject=f"model {model_name}")


def check_sizes(kwargs: dict[str, Any], overrides: dict[str, Any]) -> None:
    """The class count is 0 (no head) or more and every image side is positive: a model built with
    anything else converts without error but writes a checkpoint no one can load."""
    flag = lambda field, own: f"--set {field}" if field in overrides else own
    classes = kwargs["num_classes"]
    if classes < 0:
        raise UserError(
            f"{flag('num_classes', '--num-classes')} {classes} is negative: pass the new head's class count "
            "(0 for no head), or leave it out to keep the checkpoint's"
        )
    size = kwargs.get("img_size")
    sides = size if isinstance(size, (tuple, list)) else (size,)
    if size is not None and not all(side > 0 for side in sides):
        raise UserError(
            f"{flag('img_size', '--img-size')} {size} is not a positive image size: pass the fine-tuning "
            "resolution in pixels (e.g. 384), or leave it out for the model's native size"
        )


def run(args: argparse.Namespace) -> epath.Path:
    from nest_jax.models import create_model, list_models

    if args.model not in list_models():
        create_model(args.model)  # raises the registry's "Unknown model … Did you mean" error
    output = as_path(args.output)
    if output.exists() and not args.overwrite:
        raise UserError(f"--output {output} exists; pass --overwrite to replace it, or choose another directory")
    if output.exists() and not is_replaceable(output):
        raise UserError(
            f"--output {output} exists and is not a nest_jax checkpoint, so --overwrite leaves it "
            "alone; choose another --output (or remove it yourself)"
        )
    if output.exists() and (foreign := foreign_files(output)):
        raise UserError(f"--output {output} {holds_foreign(foreign)}: move them out of it, or choose another --output")
    data = read_file(args.input)
    if not args.allow_nonfinite:
        check_finite(data, source=f"--input {args.input}")
    kwargs: dict[str, Any] = {
        "num_classes": args.num_classes if args.num_classes is not None else checkpoint_classes(args.source, data)
    }
    if args.img_size is not None:
        kwargs["img_size"] = args.img_size
    if not args.model.startswith("resnet"):
        kwargs["gelu"] = args.gelu or SOURCE_GELU[args.source]
    if args.source == "vit_npz":
        kwargs["init"] = "official"  # only shapes a re-initialized head: zeros, as in Google's fine-tuning
    overrides = parse_overrides(args.model, args.overrides)
    kwargs.update(overrides)
    check_sizes(kwargs, overrides)
    method = args.resize_method or ("linear" if args.source in ("vit_npz", "nest_official") else "bicubic")
    model = create_model(args.model, **kwargs)
    check_ranks(args.source, data, model, args.model)
    fresh = load_into(model, from_source(args.source, data, model, path=args.input), resize_method=method)
    if fresh:
        log.info("re-initialized (class count differs): %s", ", ".join(fresh))
    out = save_params(model, args.output, model_name=args.model, model_kwargs=kwargs, overwrite=args.overwrite)
    log.info("wrote %s (%s, %s)", out, args.model, kwargs)
    return out


def main(argv: list[str] | None = None) -> int:
    """Returns the exit status: 0 on success, `USAGE_EXIT_CODE` (2) with one line on stderr for bad input."""
    args = parse_args(argv)
    return guarded("nest_jax.convert", args.debug, lambda: run(args))


def guarded(prog: str, debug: bool, work: Callable[[], Any]) -> int:
    """Runs a command line's `work`: 0 on success; bad input (a `UserError`, or what the readers and
    the model raise for it) is one line on stderr, `USAGE_EXIT_CODE` (2), its traceback with --debug."""
    try:
        work()
    except (UserError, ValueError, FileNotFoundError, FileExistsError, NotImplementedError, TypeError) as e:
        if debug_requested(debug):
            traceback.print_exc()
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return USAGE_EXIT_CODE
    return 0


def one_line(e: BaseException, limit: int = 8) -> str:
    """A multi-line message (e.g. a list of shape mismatches) as one line, at most `limit` items."""
    lines = [" ".join(line.split()) for line in str(e).splitlines() if line.strip()]
    head, items = (lines[0], lines[1:]) if lines else (type(e).__name__, [])
    more = f"; … {len(items) - limit} more (--debug shows all)" if len(items) > limit else ""
    return "; ".join([head.rstrip(":") + (":" if items else ""), *items[:limit]]).replace(":;", ":") + more


def _log_to_stderr() -> None:
    # absl (imported by orbax) has already configured the root logger, so basicConfig would be a no-op.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    pkg_log = logging.getLogger("nest_jax")
    pkg_log.addHandler(handler)
    pkg_log.setLevel(logging.INFO)
    pkg_log.propagate = False


if __name__ == "__main__":
    _log_to_stderr()
    sys.exit(main())
