"""Training throughput (images/s): the trainer's own jitted train step vs a timm + PyTorch loop.

    XLA_FLAGS=--xla_force_host_platform_device_count=1 python benchmarks/train_throughput.py \
        --cases nest_tiny_cifar:32:32 deit_small_patch16_224:224:16 --rounds 3 --iters 2

JAX side: `nest_jax.train.trainer.make_trainer` on a one-device mesh, i.e. exactly the step
`python -m nest_jax.main` runs (forward with drop-path, softmax cross-entropy on one-hot targets,
gradients, AdamW with the NesT weight-decay mask and a warmup+cosine schedule, donated state).
PyTorch side: the timm model of the same architecture (same attention layout, exact GELU, same
drop-path rate), `F.cross_entropy` + `loss.backward()` + `torch.optim.AdamW.step()`.
Same batch, resolution, float32, 10 classes. Measurements alternate (JAX round, timm round, …) so
background load hits both alike; the ratio reported is the median of per-round ratios.
Writes `--json` (default benchmarks/train_throughput.json) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import jax
import ml_collections
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cpu_model, median, time_calls  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 10

# name -> (nest_jax overrides so the model equals timm's, timm constructor)
CASES = {
    "nest_tiny_cifar": (
        dict(attention="multi_head", gelu="exact", drop_path_rate=0.1),
        lambda img: __import__("timm.models.nest", fromlist=["Nest"]).Nest(
            img_size=img,
            in_chans=3,
            patch_size=1,
            num_levels=4,
            embed_dims=(192,) * 4,
            num_heads=(3,) * 4,
            depths=(3,) * 4,
            num_classes=NUM_CLASSES,
            pad_type="same",
            drop_path_rate=0.1,
        ),
    ),
    "deit_small_patch16_224": (
        dict(drop_path_rate=0.1),
        lambda img: __import__("timm").create_model(
            "deit_small_patch16_224", pretrained=False, num_classes=NUM_CLASSES, img_size=img, drop_path_rate=0.1
        ),
    ),
}


def train_config(name: str, overrides: dict, img: int, batch: int) -> ml_collections.ConfigDict:
    from nest_jax.train.config_base import base_config

    c = base_config()
    c.model.name = name
    c.model.overrides = overrides
    c.dataset.update(dict(name="synthetic", image_size=img, num_channels=3))
    c.train.global_batch_size = batch
    c.optimizer.update(
        dict(name="adamw", lr=1e-3, weight_decay=0.05, wd_mask="nest", schedule="cosine", warmup_steps=10)
    )
    c.mesh.axes = dict(data=1, fsdp=1, tensor=1)
    return c


def jax_runner(name: str, img: int, batch: int):
    from nest_jax.train.sharding import make_mesh
    from nest_jax.train.trainer import make_trainer, shard_batch

    config = train_config(name, CASES[name][0], img, batch)
    mesh = make_mesh(dict(config.mesh.axes))
    trainer = make_trainer(config, mesh, num_classes=NUM_CLASSES, num_train_steps=10_000, warmup_steps=10)
    rng = np.random.default_rng(0)
    batch_np = {
        "image": rng.normal(size=(batch, img, img, 3)).astype(np.float32),
        "label": rng.integers(0, NUM_CLASSES, batch).astype(np.int32),
    }
    data = shard_batch(batch_np, trainer.batch_sharding)
    holder = {"state": trainer.init_state()}
    rest = trainer.init_rest()

    def run():  # the step donates the state: keep its output for the next call
        holder["state"], metrics = trainer.train_step(holder["state"], data, rest, {})
        jax.block_until_ready(metrics["loss"])

    return run


def timm_runner(name: str, img: int, batch: int):
    import torch

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    model = CASES[name][1](img).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    x = torch.randn(batch, 3, img, img)
    y = torch.randint(0, NUM_CLASSES, (batch,))

    def run():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return run, sum(p.numel() for p in model.parameters())


def measure(name: str, img: int, batch: int, rounds: int, iters: int, warmup: int) -> dict:
    run_jax = jax_runner(name, img, batch)
    run_timm, n_params = timm_runner(name, img, batch)
    for _ in range(warmup):  # the first JAX call compiles
        run_jax()
        run_timm()
    jax_s, timm_s = [], []
    for r in range(rounds):
        jax_s.append(time_calls(run_jax, iters))
        timm_s.append(time_calls(run_timm, iters))
        print(f"  {name} round {r}: JAX {batch / jax_s[-1]:.1f} img/s, timm {batch / timm_s[-1]:.1f} img/s", flush=True)
    ratios = [t / j for j, t in zip(jax_s, timm_s)]
    return dict(
        model=name,
        img_size=img,
        batch=batch,
        params=n_params,
        jax_img_s=batch / median(jax_s),
        timm_img_s=batch / median(timm_s),
        ratio=median(ratios),
        ratio_min=min(ratios),
        ratio_max=max(ratios),
        jax_s=jax_s,
        timm_s=timm_s,
        rounds=rounds,
        iters=iters,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--cases",
        nargs="+",
        default=["nest_tiny_cifar:32:32", "deit_small_patch16_224:224:16"],
        help="model:img_size:batch",
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", default=os.path.join(REPO, "benchmarks", "train_throughput.json"))
    args = ap.parse_args()
    records = []
    for case in args.cases:
        name, img, batch = case.split(":")
        records.append(measure(name, int(img), int(batch), args.rounds, args.iters, args.warmup))
    meta = dict(
        date=datetime.date.today().isoformat(),
        cpu=cpu_model(),
        cores=os.cpu_count(),
        load_average=os.getloadavg(),
        jax=jax.__version__,
        devices=jax.device_count(),
        xla_flags=os.environ.get("XLA_FLAGS", ""),
    )
    print("| model | img | batch | params | train img/s nest_jax | train img/s timm | nest_jax/timm (min–max) |")
    print("|---|---|---|---|---|---|---|")
    for r in records:
        print(
            f"| {r['model']} | {r['img_size']} | {r['batch']} | {r['params'] / 1e6:.2f}M | {r['jax_img_s']:.1f} "
            f"| {r['timm_img_s']:.1f} | {r['ratio']:.2f} ({r['ratio_min']:.2f}–{r['ratio_max']:.2f}) |"
        )
    with open(args.json, "w") as f:
        json.dump(dict(meta, records=records), f, indent=1)


if __name__ == "__main__":
    main()
