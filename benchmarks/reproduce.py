"""One command for the seed claims on nest_jax's own models in the procedural shapes world:

    python benchmarks/reproduce.py --smoke   # seconds: the pipeline end to end (tiny models, few steps)
    python benchmarks/reproduce.py --quick   # ≤ 10 min on 2 CPU cores
    python benchmarks/reproduce.py --full    # ≤ 60 CPU-minutes

Trains the models the claims need (ViT with a class token; the same without position embedding;
the same with global average pooling and no class token; a small ResNet; all on the natural
world; ResNet, ViT, DeiT with a shape token and DeiT with a distillation token on the stylized
world, the DeiT tokens hard-distilled from the stylized ResNet),
caches them (`--checkpoints`, one .npz of the model state per model and tier: a re-run only analyses),
runs the analyses and writes REPRODUCTIONS.md (`--out`): per claim the paper's statement, our
number, the threshold fixed in `reproduce_claims.py`, the verdict, the figure and the command.
Claims that need more than the tier's budget are listed as not run, with what they need.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

import jax
import numpy as np
from etils import epath
from flax import nnx

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import reproduce_ablations as A  # noqa: E402
import reproduce_claims as C  # noqa: E402
import reproduce_nest as N  # noqa: E402
import reproduce_robustness as R  # noqa: E402
import reproduce_tokens as T  # noqa: E402
import shape_tokens as ST  # noqa: E402

from nest_jax.data.shapes import ShapesTexturesSource  # noqa: E402
from nest_jax.models import create_model  # noqa: E402

# Per tier: the world, the models' size, steps, and the number of train / test images.
TIERS = {
    "smoke": dict(size=32, classes=4, clutter=2, train=64, test=32, steps=2, batch=16, seg_fraction=0.6, subset=32,
                  finetune=dict(images=32, steps=2),
                  vit=dict(patch_size=8, dim=16, depth=2, num_heads=2, mlp_dim=32), resnet=(16, 16, 16, 16),
                  nest=dict(dims=(16, 16, 16), depths=(1, 1, 1), heads=(1, 1, 1))),
    "quick": dict(size=32, classes=8, clutter=3, train=2000, test=400, steps=350, batch=64, seg_fraction=0.6,
                  subset=250, finetune=dict(images=1000, steps=50),
                  vit=dict(patch_size=4, dim=64, depth=4, num_heads=4, mlp_dim=128), resnet=(32, 64, 128, 256),
                  nest=dict(patch_size=2, dims=(16, 32, 64), depths=(1, 1, 2), heads=(1, 2, 4))),
    "full": dict(size=64, classes=10, clutter=4, train=10000, test=500, steps=800, batch=64, seg_fraction=0.6,
                 subset=1000, finetune=dict(images=2000, steps=200),
                 vit=dict(patch_size=8, dim=96, depth=6, num_heads=4, mlp_dim=192), resnet=(32, 64, 128, 256),
                 nest=dict(patch_size=4, dims=(32, 64, 128), depths=(2, 2, 2), heads=(2, 4, 8))),
}  # fmt: skip
# name: (model family, world variant, teacher for the extra token)
MODELS = {
    "vit_natural": ("vit", "natural", None),
    "vit_nopos_natural": ("vit_nopos", "natural", None),
    "resnet_natural": ("resnet", "natural", None),
    "resnet_stylized": ("resnet", "stylized", None),
    "vit_stylized": ("vit", "stylized", None),
    "deit_shape_stylized": ("deit_shape", "stylized", "resnet_stylized"),
    "deit_dist_stylized": ("deit_dist", "stylized", "resnet_stylized"),
    "vit_gap_natural": ("vit_gap", "natural", None),  # new models go last: the ones above keep their seeds
    "nest_natural": ("nest", "natural", None),
    "vit_skip_natural": ("vit_skip", "natural", None),
    "vit_natural_subset": ("vit", "natural", None),  # the tier's `subset` training images only
    "nest_natural_subset": ("nest", "natural", None),
}
NOT_RUN = [
    ("NesT generator FID vs the conv baseline (Zhang et al. 2022, §4.5)", "generators trained for hours, thousands of samples: `python benchmarks/generator.py fid` on an accelerator. On digits at 200 steps (3 seeds, BENCHMARKS.md) the conv generator leads: FID 13.3 vs NesT 29.2"),
]  # fmt: skip


TRAIN_SECONDS: dict[str, float] = {}  # per model: wall-clock training seconds (kept in its cache file)


def build(name: str, tier: dict, seed: int, size: int | None = None):
    """The untrained model `name` of the tier (at `size` px; default the tier's)."""
    family = MODELS[name][0]
    k, size = tier["classes"], size or tier["size"]
    if family == "resnet":
        return create_model(
            "resnet50", num_classes=k, img_size=size, rngs=nnx.Rngs(seed), layers=(1, 1, 1, 1), widths=tier["resnet"]
        )
    if family == "nest":
        # No stochastic depth: the same recipe as the ViTs.
        return create_model(
            "nest_tiny", num_classes=k, img_size=size, rngs=nnx.Rngs(seed), drop_path_rate=0.0, **tier["nest"]
        )
    model_name = {"deit_shape": "deit_tiny_shape_patch16_224", "deit_dist": "deit_tiny_distilled_patch16_224"}.get(
        family, "vit_tiny_patch16_224"
    )
    extra = {
        "vit_nopos": dict(pos_embed="none"),
        "vit_gap": dict(pool="gap", prefix_tokens=()),
        "vit_skip": dict(skip_removed=(A.skip_block(tier["vit"]["depth"]),)),
    }.get(family, {})
    return create_model(model_name, num_classes=k, img_size=size, rngs=nnx.Rngs(seed), **tier["vit"], **extra)


def world(tier: dict, variant: str) -> ShapesTexturesSource:
    return ShapesTexturesSource(
        num_classes=tier["classes"], image_size=tier["size"], variant=variant, num_train=tier["train"],
        num_test=tier["test"], clutter=tier["clutter"], rotation=True, min_scale=0.2,
    )  # fmt: skip


def arrays(tier: dict, variant: str, split: str) -> dict:
    a = world(tier, variant).arrays(split, masks=True)
    a["image"] = a["image"].astype(np.float32) / 255.0
    return a


def cached(name: str, model: nnx.Module, fit, where: epath.Path, log) -> nnx.Module:
    """`model` with the state cached as `where/name.npz`, or after `fit(model)` (which trains it in
    place; the state and the training seconds are then cached)."""
    path = where / f"{name}.npz"
    weights = nnx.Any(nnx.Param, nnx.BatchStat)  # the cached state: no RNG keys
    leaves, treedef = jax.tree.flatten(nnx.state(model, weights))
    if path.exists():
        with path.open("rb") as f:
            z = np.load(f, allow_pickle=False)
            nnx.update(model, jax.tree.unflatten(treedef, [z[f"a{i}"] for i in range(len(leaves))]))
            TRAIN_SECONDS[name] = float(z["seconds"]) if "seconds" in z else float("nan")
        log(f"{name}: loaded {path}")
        return model
    t0 = time.time()
    fit(model)
    TRAIN_SECONDS[name] = time.time() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        arrays_ = {f"a{i}": np.asarray(v) for i, v in enumerate(jax.tree.leaves(nnx.state(model, weights)))}
        np.savez(f, seconds=np.asarray(TRAIN_SECONDS[name]), **arrays_)
    log(f"{name}: trained in {TRAIN_SECONDS[name]:.0f} s")
    return model


def cache_dir(root: epath.Path, tier_name: str, tier: dict) -> epath.Path:
    # The key holds every setting of the tier: changing one retrains instead of reusing.
    return root / f"{tier_name}-{hashlib.sha256(json.dumps(tier, sort_keys=True).encode()).hexdigest()[:10]}"


def trained(name: str, tier: dict, where: epath.Path, models: dict, data: dict, log) -> nnx.Module:
    """The model, from the cache or trained (AdamW, cosine schedule, no augmentation; ST.train)."""
    family, variant, teacher = MODELS[name]
    n = tier["subset"] if name.endswith("_subset") else None
    x, y = data[variant]["image"][:n], data[variant]["label"][:n]
    token = {"deit_shape": "shape", "deit_dist": "dist"}.get(family)
    seed = len(models)

    def fit(model):
        ST.train(model, x, y, tier["steps"], teacher=models.get(teacher), token=token, bs=tier["batch"], seed=seed)

    return cached(name, build(name, tier, seed=seed), fit, where, log)


def finetune_row(models: dict, tier: dict, where: epath.Path, log) -> dict:
    """The ViT fine-tuned at 1.5 × the tier's size (position table interpolated) and at its size."""
    ft, hi = tier["finetune"], tier["size"] * 3 // 2

    def split(size, name, n=None):
        a = world(dict(tier, size=size), "natural").arrays(name, n)
        return {"image": a["image"].astype(np.float32) / 255.0, "label": a["label"]}

    lo_, hi_ = ({"train": split(s, "train", ft["images"]), "test": split(s, "test")} for s in (tier["size"], hi))

    def fit(name, model, x, y):
        train = lambda m: ST.train(m, x, y, ft["steps"], lr=A.FINETUNE_LR, bs=tier["batch"], seed=0)  # noqa: E731
        return cached(name, model, train, where, log)

    return A.finetune_row(
        models, lambda size: build("vit_natural", tier, seed=0, size=size), fit, lo_, hi_, ft["steps"]
    )


def trained_on(name: str, tier: dict) -> str:
    subset = f" (first {tier['subset']} images)" if name.endswith("_subset") else ""
    return f"{MODELS[name][1]} world{subset}"


def write_report(
    path: epath.Path, tier_name: str, tier: dict, accs: dict, rows: list[dict], seconds: float, command: str
) -> None:
    lines = [
        "# Reproductions in the procedural shapes world",
        "",
        f"Made by `{command}` on {time.strftime('%Y-%m-%d')}, machine: 2-core CPU, shared/loaded "
        f"(tier `{tier_name}`; training {sum(TRAIN_SECONDS.values()) / 60:.1f} min, recorded with the cached "
        f"models; this run {seconds / 60:.1f} min). World: {tier['classes']} classes, {tier['size']} px, "
        f"clutter {tier['clutter']}, rotation, {tier['train']} training images per variant; models trained "
        f"{tier['steps']} steps of batch {tier['batch']} (AdamW, no augmentation). ViT: {tier['vit']}; "
        f"ResNet: one bottleneck block per stage, output widths {tier['resnet']}; NesT (3 levels, no "
        f"stochastic depth): {tier['nest']}. Fine-tuning at {tier['size'] * 3 // 2} px: {tier['finetune']['steps']} "
        f"steps on the first {tier['finetune']['images']} training images at lr {A.FINETUNE_LR}.",
        "",
        "Thresholds are fixed in `benchmarks/reproduce_*.py` before the run; the evaluation images "
        "are the world's test split, which no model trains on and nothing is tuned on.",
        "",
        "## Models (top-1 on the natural test split)",
        "",
        "| model | trained on | top-1 | training seconds |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {k} | {trained_on(k, tier)} | {v:.3f} | {TRAIN_SECONDS.get(k, float('nan')):.0f} |" for k, v in accs.items()
    ]
    lines += [
        "",
        "## Claims",
        "",
        "| claim | paper | ours | threshold (fixed beforehand) | verdict | figure |",
        "|---|---|---|---|---|---|",
    ]
    chance = 1.0 / tier["classes"]
    weak = {k for k, v in accs.items() if v < 2 * chance}  # below twice chance: the model barely learned

    def cell(r):
        low = sorted(weak & set(r["models"]))
        return f"**{r['verdict']}**" + (f" (provisional: {', '.join(low)} below 2× chance top-1)" if low else "")

    lines += [
        f"| {r['claim']} | {r['paper']} | {r['ours']} | {r['threshold']} | {cell(r)} | {r['figure']} |" for r in rows
    ]
    counts = {v: sum(r["verdict"] == v for r in rows) for v in ("reproduced", "partly", "not reproduced")}
    lines += [
        "",
        "Verdicts: "
        + ", ".join(f"{n} {v}" for v, n in counts.items())
        + f"; {len(NOT_RUN)} claim{'s' * (len(NOT_RUN) != 1)} not run here.",
        "",
    ]
    lines += ["## Not run here", "", "| claim | what it needs |", "|---|---|"]
    lines += [f"| {c} | {need} |" for c, need in NOT_RUN]
    if tier_name == "full":
        lines += stylized_trials_section()
    path.write_text("\n".join(lines) + "\n")


def stylized_trials_section(path: str = os.path.join(HERE, "stylized_trials.json")) -> list[str]:
    """The stylized ViT's training trials (benchmarks/stylized_trials.py), when they were run."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        t = json.load(f)
    lines = [
        "",
        "## The stylized ViT: what was tried",
        "",
        f"The stylized transformers learn little in {TIERS['full']['steps']} steps, so the verdicts resting on "
        f"them are provisional. `{t['command']}` ({t['date']}) trained the stylized ViT on 9000 stylized training "
        "images with other settings; top-1 on 1000 held-out stylized training images (chance 0.1):",
        "",
        "| start | learning rate | steps | held-out top-1 | train top-1 | shape bias (cls) | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['start']} | {r['lr']:g} | {r['steps']} | {r['held_out_top1']:.3f} | {r['train_top1']:.3f} | "
        f"{r['shape_bias']:.3f} | {r['seconds']:.0f} |"
        for r in t["trials"]
    ]
    return lines


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group()
    for t in TIERS:
        g.add_argument(f"--{t}", dest="tier", action="store_const", const=t)
    p.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "REPRODUCTIONS.md"))
    p.add_argument("--figures", default=None, help="figure folder (default: docs/reproductions/ beside --out)")
    p.add_argument("--checkpoints", default=os.path.join(os.path.expanduser("~"), ".cache", "nest_jax_reproduce"))
    args = p.parse_args(argv)
    tier_name = args.tier or "quick"
    tier, t0 = TIERS[tier_name], time.time()
    out = epath.Path(args.out)
    figs = epath.Path(args.figures) if args.figures else out.parent / "docs" / "reproductions"
    figs.mkdir(parents=True, exist_ok=True)
    C.FIGURES = os.path.relpath(os.fspath(figs), os.fspath(out.parent))

    def log(msg):
        print(f"[{time.time() - t0:6.0f} s] {msg}", flush=True)

    data = {v: arrays(tier, v, "train") for v in ("natural", "stylized")}
    nat, cue = arrays(tier, "natural", "test"), arrays(tier, "cue_conflict", "test")
    models: dict = {}
    TRAIN_SECONDS.clear()
    where = cache_dir(epath.Path(args.checkpoints), tier_name, tier)
    for name in MODELS:
        models[name] = trained(name, tier, where, models, data, log)
    accs = {k: C.top1(m, nat["image"], nat["label"]) for k, m in models.items()}
    log(f"top-1 {accs}")
    sb_rows, sb = C.shape_bias_rows(models, cue)
    rows = [*sb_rows, C.token_cosine_row(models, nat)]
    rows += C.segmentation_rows(models, nat, tier["seg_fraction"], figs)
    rows += C.occlusion_rows(models, nat)
    rows += [C.pos_embed_row(models, figs), C.cka_row(models, nat, figs), C.attention_distance_row(models, nat, figs)]
    rows += [T.per_block_row(models, nat, figs), T.norm_ratio_row(models, nat, figs)]
    rows += T.gap_rows(models, nat, accs, figs)
    rows += [R.corruption_row(models, nat, figs), R.patch_row(models, nat, data["natural"])]
    rows += [A.skip_removal_row(models, nat, accs, figs), A.data_scale_row(models, nat, tier["subset"], tier["train"])]
    rows += [N.localization_row(models, nat, figs), N.data_efficiency_row(models, accs, tier["subset"], tier["train"])]
    rows.append(finetune_row(models, tier, where, log))
    for r in rows:
        log(f"{r['verdict']}: {r['claim']} — {r['ours']}")
    given = list(argv if argv is not None else sys.argv[1:])
    shown = [
        a for i, a in enumerate(given) if not a.startswith("--checkpoints") and given[i - 1 : i] != ["--checkpoints"]
    ]
    command = (
        " ".join(["python benchmarks/reproduce.py", *shown]) if shown else "python benchmarks/reproduce.py --quick"
    )
    write_report(out, tier_name, tier, accs, rows, time.time() - t0, command)
    log(f"wrote {out}")
    return dict(rows=rows, accuracy=accs, shape_bias=sb)


if __name__ == "__main__":
    main()
