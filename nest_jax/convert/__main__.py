"""Command line: convert a foreign checkpoint into a nest_jax orbax checkpoint.

  python -m nest_jax.convert --model vit_base_patch16_224 --source vit_npz \\
      --input ViT-B_16.npz --output /ckpt/vit_b16 [--num-classes 10] [--img-size 384]

Sources: `timm` (ViT/DeiT/ResNet state dicts), `vit_npz` (Google ViT), `nest_official` (official
NesT flax parameters as a flat '/'-keyed `.npz`), `nest_timm` (timm NesT). The position tables
are resized to `--img-size` and heads with another class count are re-initialized (`adapt_params`).
The output is read back by `nest_jax.convert.restore_params(DIR)`. Architecture fields the name
does not fix go through `--set`, e.g. `--set pool_padding=symmetric` for timm's plain `nest_*`
weights (its `nest_*_jx` weights use the default TF-SAME pooling).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from nest_jax.convert.checkpoint import as_tuples, save_params
from nest_jax.convert.resize import METHODS
from nest_jax.convert.sources import SOURCES, convert_into, read_source

log = logging.getLogger("nest_jax.convert")
# The GELU each source was trained with (REFERENCE §1, §4): Google's JAX code uses the tanh form.
SOURCE_GELU = {"timm": "exact", "vit_npz": "tanh", "nest_official": "tanh", "nest_timm": "exact"}
# Where each source keeps its classifier, and whether the class count is the last axis (JAX) or first (torch).
HEAD_KEYS = {"timm": (("head.weight", 0), ("fc.weight", 0), ("head.fc.weight", 0)),
             "vit_npz": (("head/kernel", -1),), "nest_official": (("Dense_0/kernel", -1),),
             "nest_timm": (("head.weight", 0),)}


def checkpoint_classes(source: str, data: dict[str, np.ndarray]) -> int:
    """The class count of the checkpoint's head, 0 when it has none."""
    for key, axis in HEAD_KEYS[source]:
        for prefix in ("", "params/", "opt/target/"):
            if prefix + key in data:
                return int(np.shape(data[prefix + key])[axis])
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m nest_jax.convert", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="registered model name (nest_jax.models.list_models())")
    p.add_argument("--source", required=True, choices=SOURCES)
    p.add_argument("--input", required=True, help="checkpoint file (.npz, .pth, .safetensors)")
    p.add_argument("--output", required=True, help="directory for the orbax checkpoint (must not exist)")
    p.add_argument("--num-classes", type=int, default=None, help="default: the checkpoint's class count")
    p.add_argument("--img-size", type=int, default=None, help="default: the model's native size")
    p.add_argument("--gelu", choices=("exact", "tanh"), default=None,
                   help="default: the source's own (tanh for Google checkpoints, exact for timm)")
    p.add_argument("--resize-method", choices=METHODS, default=None,
                   help="position-table interpolation; default linear for Google sources, bicubic for timm")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="overrides",
                   help="any other create_model override, e.g. --set drop_path_rate=0.1 --set depth=2 "
                        "(VALUE read as JSON when it parses, else as a string)")
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    return p.parse_args(argv)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        field, sep, value = item.partition("=")
        if not sep or not field:
            raise ValueError(f"--set expects FIELD=VALUE, got {item!r}")
        try:
            out[field] = as_tuples(json.loads(value))
        except json.JSONDecodeError:
            out[field] = value
    return out


def run(args: argparse.Namespace) -> Path:
    from nest_jax.models import create_model, list_models
    if args.model not in list_models():
        create_model(args.model)  # raises the registry's "Unknown model … Did you mean" error
    if Path(args.output).exists() and not args.overwrite:
        raise FileExistsError(f"--output {args.output} exists; pass --overwrite to replace it")
    data = read_source(args.source, args.input)
    kwargs: dict[str, Any] = {"num_classes": args.num_classes if args.num_classes is not None
                              else checkpoint_classes(args.source, data)}
    if args.img_size is not None:
        kwargs["img_size"] = args.img_size
    if not args.model.startswith("resnet"):
        kwargs["gelu"] = args.gelu or SOURCE_GELU[args.source]
    if args.source == "vit_npz":
        kwargs["init"] = "official"  # only shapes a re-initialized head: zeros, as in Google's fine-tuning
    kwargs.update(parse_overrides(args.overrides))
    method = args.resize_method or ("linear" if args.source in ("vit_npz", "nest_official") else "bicubic")
    model = create_model(args.model, **kwargs)
    fresh = convert_into(model, args.source, data, resize_method=method)
    if fresh:
        log.info("re-initialized (class count differs): %s", ", ".join(fresh))
    out = save_params(model, args.output, model_name=args.model, model_kwargs=kwargs, overwrite=args.overwrite)
    log.info("wrote %s (%s, %s)", out, args.model, kwargs)
    return out


def main(argv: list[str] | None = None) -> int:
    """Returns the exit status: 0 on success, 1 with one clear line on stderr for a bad input."""
    args = parse_args(argv)
    try:
        run(args)
    except (ValueError, FileNotFoundError, FileExistsError, NotImplementedError, TypeError) as e:
        print(f"nest_jax.convert: error: {e}", file=sys.stderr)
        return 1
    return 0


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
