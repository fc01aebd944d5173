"""NesT's central claim at small scale: better data efficiency than a plain ViT of similar size.

    python benchmarks/data_efficiency.py --steps 150 --seeds 0 1 2 --fractions 0.1 0.25 0.5 1.0

Both models train on 10/25/50/100% of scikit-learn digits' 1,347 training images (a stratified
subset, the same for both models, drawn per seed) and are tested on all 450 test digits:
  * NesT: `configs/digits_nest_tiny.py`'s recipe with its earlier 2-level model (364,810 parameters: 2
    levels of 3 + 4 layers, width 64, no augmentation; `common.pin_two_level_digits_nest`).
  * ViT: `configs/digits_vit.py` with `depth=7` (355,978 parameters; the shipped depth 4 has 206,026)
    so both models have about the same size; patch 4 (64 tokens + class token), width 64.
Same budget for every run: `--steps` optimizer steps of batch 64 whatever the subset size (a
small subset is seen for more epochs), each config's own AdamW learning rate and weight-decay
mask, warmup = the config's warmup epochs counted in full-data epochs, cosine decay to 0, the
digits input pipeline of the config (no augmentation, no mixing).

Uses the trainer's own pieces: `make_trainer` (sharded state, jitted train/eval steps), the real
`nest_jax.data` train pipeline over a subset source (a thin `DigitsSource` subclass: the data API
has no subset option) and the `classification` evaluator. One trainer (one compile) per (model, seed); the four
subset runs reuse it with a fresh initial state.
Writes `<out>.json`, `<out>.md` (table) and `<out>.png`, updated after every (model, seed).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cpu_model, pin_two_level_digits_nest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FULL_EPOCH_STEPS = 1347 // 64  # 21


def load_config(path: str):
    spec = importlib.util.spec_from_file_location("cfg", os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def subset_indices(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A stratified random subset: `fraction` of each class (at least one image per class)."""
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        keep.append(rng.choice(idx, max(1, round(fraction * len(idx))), replace=False))
    return np.sort(np.concatenate(keep))


def subset_source(fraction: float, seed: int):
    """A digits source whose train split holds only the chosen subset (test split unchanged)."""
    from nest_jax.data.digits import DigitsSource, load_split_arrays

    images, labels = load_split_arrays()["train"]
    keep = subset_indices(labels, fraction, seed)

    class SubsetDigits(DigitsSource):
        def _arrays(self, split):
            if split == "train":
                return images[keep], labels[keep]
            return super()._arrays(split)

    return SubsetDigits(), len(keep)


def train_iterator(source, ds_cfg, batch: int, seed: int):
    from nest_jax.data import train_stream

    return train_stream.train_iterator(
        source, ds_cfg, local_batch=batch, seed=seed, start_step=0, process_index=0, process_count=1
    )


def model_config(kind: str, seed: int, steps: int):
    if kind == "nest":
        c = load_config("configs/digits_nest_tiny.py")
        pin_two_level_digits_nest(c)  # the model the recorded figures were measured with
    else:
        c = load_config("configs/digits_vit.py")
        c.model.overrides.depth = 7
    c.seed = seed
    c.train.num_train_steps = steps
    c.optimizer.warmup_steps = int(round(float(c.optimizer.warmup_epochs) * FULL_EPOCH_STEPS))
    c.mesh.axes = dict(data=1, fsdp=1, tensor=1)
    return c


def param_count(config) -> int:
    from flax import nnx

    from nest_jax.train.trainer import build_model

    model = nnx.eval_shape(lambda: build_model(config, 10, nnx.Rngs(0)))
    return int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))


def run_model(kind: str, seed: int, steps: int, fractions: list[float]) -> list[dict]:
    from nest_jax import data
    from nest_jax.train.evaluators import EvalData
    from nest_jax.train.evaluators.classification import ClassificationEvaluator
    from nest_jax.train.sharding import make_mesh
    from nest_jax.train.trainer import make_trainer, shard_batch

    config = model_config(kind, seed, steps)
    mesh = make_mesh(dict(config.mesh.axes))
    trainer = make_trainer(
        config,
        mesh,
        num_classes=10,
        num_train_steps=steps,
        warmup_steps=int(config.optimizer.warmup_steps),
    )
    rest = trainer.init_rest()
    evaluator = ClassificationEvaluator(
        lambda s: trainer.model(s["params"], s.get("batch_stats"), rest), EvalData(config, data, mesh)
    )
    out = []
    for fraction in fractions:
        t0 = time.time()
        source, n = subset_source(fraction, seed)
        it = train_iterator(source, config.dataset, int(config.train.global_batch_size), seed)
        state = trainer.init_state()
        for _ in range(steps):
            state, metrics = trainer.train_step(state, shard_batch(next(it), trainer.batch_sharding), rest, {})
        res = evaluator.run(state, steps)
        rec = dict(
            model=kind,
            seed=seed,
            fraction=fraction,
            num_train=n,
            steps=steps,
            epochs=steps * int(config.train.global_batch_size) / n,
            train_loss_last=float(metrics["loss"]),
            test_top1=res["top1"],
            test_loss=res["loss"],
            seconds=round(time.time() - t0, 1),
        )
        print(
            f"  {kind:4s} seed {seed} {100 * fraction:5.1f}% ({n:4d} images, {rec['epochs']:5.1f} epochs): "
            f"test top-1 {100 * rec['test_top1']:.2f}%  [{rec['seconds']:.0f} s]",
            flush=True,
        )
        out.append(rec)
    return out


def summarize(records: list[dict], fractions: list[float]) -> dict:
    table = {}
    for kind in ("nest", "vit"):
        for f in fractions:
            accs = [r["test_top1"] for r in records if r["model"] == kind and r["fraction"] == f]
            if accs:
                table[f"{kind}@{f}"] = dict(
                    mean=float(np.mean(accs)), std=float(np.std(accs)), n=len(accs), values=accs
                )
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=150, help="optimizer steps per run (21 = one full-data epoch)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.25, 0.5, 1.0])
    ap.add_argument("--out", default=os.path.join(REPO, "benchmarks", "data_efficiency"))
    args = ap.parse_args()
    counts = {k: param_count(model_config(k, 0, args.steps)) for k in ("nest", "vit")}
    print("parameters:", counts, flush=True)
    t_start = time.time()
    records = []
    for seed in args.seeds:
        for kind in ("nest", "vit"):
            records.extend(run_model(kind, seed, args.steps, args.fractions))
            write(args, records, counts, t_start)  # after every (model, seed): partial results survive


def write(args, records: list[dict], counts: dict, t_start: float) -> None:
    """The JSON, markdown table and plot of the runs so far."""
    table = summarize(records, args.fractions)
    meta = dict(
        date=datetime.date.today().isoformat(),
        machine=cpu_model(),
        cores=os.cpu_count(),
        load_average_at_end=os.getloadavg(),
        total_seconds=round(time.time() - t_start, 1),
        steps=args.steps,
        batch=64,
        seeds=sorted({r["seed"] for r in records}),
        fractions=args.fractions,
        params=counts,
        command=" ".join(["python"] + sys.argv),
    )
    with open(args.out + ".json", "w") as f:
        json.dump(dict(meta, summary=table, runs=records), f, indent=1)

    lines = [
        f"| train images | NesT ({counts['nest']:,} params) | ViT ({counts['vit']:,} params) | NesT − ViT |",
        "|---|---|---|---|",
    ]
    for f in args.fractions:
        a, b = table.get(f"nest@{f}"), table.get(f"vit@{f}")
        n = round(f * 1347)
        cell = lambda s: f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}" if s else "—"  # noqa: E731
        diff = f"{100 * (a['mean'] - b['mean']):+.2f}" if a and b else "—"
        lines.append(f"| {100 * f:g}% (~{n}) | {cell(a)} | {cell(b)} | {diff} |")
    md = "\n".join(lines)
    with open(args.out + ".md", "w") as f:
        f.write(md + "\n")
    print(md)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, label in (("nest", f"NesT ({counts['nest'] / 1e3:.0f}k)"), ("vit", f"ViT ({counts['vit'] / 1e3:.0f}k)")):
        xs = [f for f in args.fractions if f"{kind}@{f}" in table]
        means = [100 * table[f"{kind}@{f}"]["mean"] for f in xs]
        stds = [100 * table[f"{kind}@{f}"]["std"] for f in xs]
        ax.errorbar([100 * x for x in xs], means, yerr=stds, marker="o", capsize=3, label=label)
        for f in xs:  # every seed as a dot
            ax.plot(
                [100 * f] * len(table[f"{kind}@{f}"]["values"]),
                [100 * v for v in table[f"{kind}@{f}"]["values"]],
                ".",
                color="gray",
                alpha=0.5,
            )
    ax.set_xscale("log")
    ax.set_xticks([100 * f for f in args.fractions], [f"{100 * f:g}%" for f in args.fractions])
    ax.set_xlabel("fraction of the 1,347 digits training images")
    ax.set_ylabel("test top-1 (%), 450 digits")
    ax.set_title(f"same budget: {args.steps} steps of batch 64, {len(meta['seeds'])} seed(s)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out + ".png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
