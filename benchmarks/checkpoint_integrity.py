"""What the per-array checkpoint checksums cost: the check at save and restore vs the finiteness
check alone, and vs a whole save, on the main job's train state and on a ViT-B/16 train state.

    python benchmarks/checkpoint_integrity.py [--rounds 5]

Both states are real train states (params, AdamW moments, step, rng key) built by
`nest_jax.train.trainer.make_trainer` from the shipped configs: configs/digits_nest_tiny.py and
configs/imagenet_deit.py with model vit_base_patch16_224. Timings alternate between the two
checks each round (the machine is noisy); the figures are medians. Writes
benchmarks/checkpoint_integrity.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cpu_model, median  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _state(config_file: str, model: str | None, num_classes: int):
    from nest_jax.cli_config import load_config
    from nest_jax.train.sharding import make_mesh
    from nest_jax.train.trainer import make_trainer

    config = load_config(os.path.join(REPO, "configs", config_file))
    if model:
        config.model.name = model
    mesh = make_mesh({"data": 1}, devices=jax.devices()[:1])
    trainer = make_trainer(config, mesh, num_classes=num_classes, num_train_steps=100, warmup_steps=1)
    return trainer.init_state()


def _time(fn, rounds: int) -> float:
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        out.append(time.perf_counter() - t)
    return median(out)


def measure(state, rounds: int) -> dict:
    from nest_jax.train import integrity
    from nest_jax.train.checkpoint import Checkpointer, all_finite

    jax.block_until_ready(all_finite(state))
    jax.block_until_ready(integrity.finite_and_checksums(state))  # compile both first
    finite, checked = [], []
    for _ in range(rounds):
        finite.append(_time(lambda: all_finite(state), 1))
        checked.append(_time(lambda: integrity.finite_and_checksums(state), 1))
    saves = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Checkpointer(tmp, max_to_keep=1)
        for step in range(1, 3):
            t = time.perf_counter()
            ckpt.save(step, state)
            ckpt.wait()
            saves.append(time.perf_counter() - t)
        ckpt.close()
    leaves = jax.tree.leaves(state)
    return {
        "arrays": len(leaves),
        "bytes": int(sum(x.size * x.dtype.itemsize for x in leaves)),
        "finite_check_s": median(finite),
        "finite_and_checksums_s": median(checked),
        "added_per_save_s": median(checked) - median(finite),
        "whole_save_s": median(saves),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    cases = {
        "main job (digits NesT)": ("digits_nest_tiny.py", None, 10),
        "ViT-B/16 (imagenet_deit.py)": ("imagenet_deit.py", "vit_base_patch16_224", 1000),
    }
    results = {}
    for label, (cfg, model, classes) in cases.items():
        state = _state(cfg, model, classes)
        results[label] = measure(state, args.rounds)
        del state
        r = results[label]
        print(
            f"| {label} | {r['arrays']} | {r['bytes'] / 2**20:.1f} MiB | {r['finite_check_s'] * 1e3:.1f} ms | "
            f"{r['finite_and_checksums_s'] * 1e3:.1f} ms | {r['whole_save_s']:.2f} s |",
            flush=True,
        )
    out = {
        "command": "python benchmarks/checkpoint_integrity.py",
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, {jax.devices()[0].platform}",
        "date": datetime.date.today().isoformat(),
        "jax": jax.__version__,
        "results": results,
    }
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoint_integrity.json"), "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
