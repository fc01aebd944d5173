"""Raghu et al. (2021)'s findings at small scale: four models trained on digits, then analysed.

    python benchmarks/representations_digits.py --steps 200 --out docs/representations

Models (batch 64, each config's AdamW recipe, `--steps` steps, no augmentation):
  vit_cls  configs/digits_vit.py: patch 4 (64 tokens + class token), width 64, 4 layers, 2 heads
  vit_gap  the same with global average pooling and no class token
  resnet   resnet50's bottleneck design made small: 3 stages of 1 block, widths 64/128/256
  nest     configs/digits_nest_tiny.py's earlier 2-level model (2 levels of 3 + 4 layers, width 64;
           `common.pin_two_level_digits_nest`)
plus vit_cls trained on a stratified 10% of the training images (same steps) for finding (e).
Every analysis runs on the 450 test digits (`nest_jax.analyze.loop.analyse`), figures under --out.
Writes <out>/summary.json with the numbers behind each finding.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, HERE]
from common import pin_two_level_digits_nest  # noqa: E402


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "configs", name + ".py"))
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m.get_config()


def configs(steps: int) -> dict:
    out = {
        "vit_cls": load("digits_vit"),
        "vit_gap": load("digits_vit"),
        "resnet": load("digits_vit"),
        "nest": load("digits_nest_tiny"),
    }
    pin_two_level_digits_nest(out["nest"])  # the model the recorded figures were measured with
    out["vit_gap"].model.overrides = dict(out["vit_gap"].model.overrides, pool="gap", prefix_tokens=())
    out["resnet"].model.name = "resnet50"
    out["resnet"].model.overrides = dict(layers=(1, 1, 1), widths=(64, 128, 256))
    for c in out.values():
        c.train.num_train_steps = steps
        c.optimizer.warmup_steps = 21
        c.mesh.axes = dict(data=1, fsdp=1, tensor=1)
    return out


def train(config, fraction: float = 1.0, seed: int = 0):
    """Trains in process (no checkpoints); returns (model with the trained weights, test top-1, seconds)."""
    from data_efficiency import subset_source, train_iterator
    from flax import nnx

    from nest_jax import data
    from nest_jax.train.evaluators import EvalData
    from nest_jax.train.evaluators.classification import ClassificationEvaluator
    from nest_jax.train.sharding import make_mesh
    from nest_jax.train.trainer import build_model, make_trainer, shard_batch

    steps = int(config.train.num_train_steps)
    t0 = time.time()
    mesh = make_mesh(dict(config.mesh.axes))
    trainer = make_trainer(
        config,
        mesh,
        num_classes=10,
        num_train_steps=steps,
        warmup_steps=int(config.optimizer.warmup_steps),
    )
    rest = trainer.init_rest()
    state = trainer.init_state()
    source, _ = subset_source(fraction, seed)
    it = train_iterator(source, config.dataset, int(config.train.global_batch_size), seed)
    for _ in range(steps):
        state, _ = trainer.train_step(state, shard_batch(next(it), trainer.batch_sharding), rest, {})
    model_fn = lambda s: trainer.model(s["params"], s.get("batch_stats"), rest)  # noqa: E731
    acc = ClassificationEvaluator(model_fn, EvalData(config, data, mesh)).metrics(state)["top1"]
    model = build_model(config, 10, nnx.Rngs(0))
    for kind, key in ((nnx.Param, "params"), (nnx.BatchStat, "batch_stats")):
        if key in state:
            st = nnx.state(model, kind)
            nnx.replace_by_pure_dict(st, jax_get(state[key]))
            nnx.update(model, st)
    return model, float(acc), time.time() - t0


def jax_get(tree):
    import jax

    return jax.tree.map(np.asarray, jax.device_get(tree))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "representations"))
    args = ap.parse_args()
    from nest_jax import data
    from nest_jax.analyze.loop import Subject, analyse, to_json

    os.makedirs(args.out, exist_ok=True)
    cfgs = configs(args.steps)
    subjects, accs = {}, {}
    for name, c in cfgs.items():
        model, acc, sec = train(c)
        subjects[name], accs[name] = Subject(name, model), acc
        print(f"{name:8s} {args.steps} steps: test top-1 {acc:.4f} [{sec:.0f} s]", flush=True)
    model, acc, sec = train(cfgs["vit_cls"], fraction=0.1)
    subjects["vit_cls_10pct"], accs["vit_cls_10pct"] = Subject("vit_cls_10pct", model), acc
    print(f"vit_cls on 10%: test top-1 {acc:.4f} [{sec:.0f} s]", flush=True)

    kw = dict(out=args.out, data=data, batch_size=150)
    r1 = analyse(
        ["cka", "attention_distance", "norm_ratio", "probes", "localization"],
        [subjects["vit_cls"], subjects["resnet"]],
        cfgs["vit_cls"],
        options={"pool": "mean"},
        **kw,
    )
    r2 = analyse(
        ["cka", "attention_distance", "probes", "localization"],
        [subjects["vit_gap"], subjects["nest"]],
        cfgs["vit_gap"],
        options={"pool": "mean"},
        **kw,
    )
    r3 = analyse(["attention_distance"], [subjects["vit_cls_10pct"]], cfgs["vit_cls"], **kw)

    with open(os.path.join(args.out, "raw.json"), "w") as f:
        json.dump(to_json(dict(r1=r1, r2=r2, r3=r3, test_top1=accs)), f)

    def off_diag(m):
        m = np.asarray(m)
        return float(m[~np.eye(len(m), dtype=bool)].mean())

    cka = {k: v["matrix"] for k, v in {**r1["cka"], **r2["cka"]}.items()}
    dist = {k: v["per_head"] for r in (r1, r2, r3) for k, v in r["attention_distance"].items() if "per_head" in v}
    probes = {**r1["probes"], **r2["probes"]}
    loc = {
        k: v["own_patch_is_most_similar"]
        for k, v in {**r1["localization"], **r2["localization"]}.items()
        if "own_patch_is_most_similar" in v  # a ResNet or NesT entry says why it was skipped
    }
    summary = dict(
        steps=args.steps,
        test_top1=accs,
        a_mean_offdiag_cka={k: off_diag(cka[k]) for k in ("vit_cls", "vit_gap", "resnet", "nest")},
        a_first_last_cka={k: float(np.asarray(cka[k])[0, -1]) for k in ("vit_cls", "vit_gap", "resnet", "nest")},
        b_head_distance_range={k: [[float(min(h)), float(max(h))] for h in dist[k]] for k in dist},
        c_norm_ratios=r1["norm_ratio"],
        d_per_token_probe={k: probes[k]["per_token_mean"] for k in ("vit_cls", "vit_gap")},
        d_localization={k: loc[k] for k in ("vit_cls", "vit_gap")},
        d_layer_probes={k: probes[k]["layers"] for k in probes},
        e_lower_layer_distance={k: [float(np.mean(dist[k][i])) for i in (0, 1)] for k in ("vit_cls", "vit_cls_10pct")},
    )
    summary = to_json(summary)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
