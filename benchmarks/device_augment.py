"""What `dataset.augment_on="device"` adds to the train step, side by side with host augmentation.

    python benchmarks/device_augment.py                      # CPU: DeiT-S, 224 px
    python benchmarks/device_augment.py --batch 256 --step-batch 256   # an accelerator

Two figures, each measured in one run on the current JAX backend:
  augment      the device stages alone (RandAugment 2/9, the config's colour jitter, normalization,
               random erasing), jitted, at `--batch` images of 224 px: ms per batch and per image.
  step         configs/imagenet_deit.py:small's train step at `--step-batch`, with host augmentation
               (the batch arrives normalized, float32) and with device augmentation (uint8 crops +
               random choices); the difference is the added step time.
  --stages     each device stage alone, and the parts every RandAugment layer computes for every
               image (the affine warp, equalize, smooth, …), in ms per batch.
The images are random uint8 crops and the random choices come from the host samplers
(benchmarks/common.py:device_augment_batch), so the work per image is the training chain's.
Results are appended to `--json`.
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
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cpu_model, device_augment_batch  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def deit_config(batch: int, img: int, augment_on: str):
    spec = importlib.util.spec_from_file_location("cfg", os.path.join(REPO, "configs", "imagenet_deit.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config("small")
    c.dataset.image_size = img
    c.dataset.augment_on = augment_on
    c.train.global_batch_size = batch
    c.mesh.axes = dict(data=-1, fsdp=1, tensor=1)
    return c


def best_of(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile and warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


def augment_alone(batch: int, img: int, repeats: int) -> dict:
    from nest_jax.data.device_augment import DeviceAugment

    ds = deit_config(batch, img, "device").dataset
    host = device_augment_batch(ds, batch)
    aug = jax.jit(DeviceAugment.from_config(ds))
    image, choices = jax.device_put(host["image"]), jax.device_put(host["augment"])
    s = best_of(lambda: aug(jax.random.key(0), image, choices), repeats)
    return dict(batch=batch, img=img, augment_ms=round(1e3 * s, 1), augment_ms_per_img=round(1e3 * s / batch, 3))


def stage_times(batch: int, img: int, repeats: int) -> dict:
    """ms per batch of each device stage alone, and of the parts every RandAugment layer computes
    for every image (one layer's worth, vmapped over the batch), jitted and timed one by one."""
    from nest_jax.data import device_augment as da
    from nest_jax.data import randaugment

    ds = deit_config(batch, img, "device").dataset
    host = device_augment_batch(ds, batch)
    x = jax.device_put(host["image"].astype(np.float32) / 255.0)
    choices = jax.device_put(host["augment"])
    ra = choices["randaugment"]
    layer = (ra["op"][:, 0], x, ra["level"][:, 0], ra["sign"][:, 0])  # (op, image, level, sign) per image

    def warp(op, im, level, sign):
        return randaugment.affine(im, da._transform(op, level, sign, img, img), jnp)

    # name -> (function of arrays, its arguments): arguments, not closures, or XLA folds the work away
    parts = {
        "randaugment (all layers)": (jax.vmap(da.rand_augment), (x, ra)),
        "color_jitter": (jax.vmap(da.color_jitter), (x, choices.get("jitter"))),
        "random_erasing": (da.random_erasing, (jax.random.key(0), x, choices.get("erasing"))),
        "one layer: apply_op": (jax.vmap(da.apply_op), layer),
        "one layer: affine": (jax.vmap(warp), layer),
        "one layer: equalize": (jax.vmap(da.equalize), (x,)),
        "one layer: smooth": (jax.vmap(lambda im: randaugment.smooth(im, jnp)), (x,)),
        "one layer: autocontrast": (jax.vmap(lambda im: randaugment.autocontrast(im, jnp)), (x,)),
        "one layer: posterize": (jax.vmap(lambda im, lv: randaugment.posterize(im, lv, jnp)), (x, layer[2])),
    }
    out = {}
    for name, (fn, args) in parts.items():
        if any(a is None for a in args):  # a stage this config leaves off
            continue
        jitted = jax.jit(fn)
        out[name] = round(1e3 * best_of(lambda jitted=jitted, args=args: jitted(*args), repeats), 2)
    return out


def step_time(batch: int, img: int, augment_on: str, repeats: int) -> float:
    from nest_jax.train.sharding import make_mesh
    from nest_jax.train.trainer import make_trainer, shard_batch

    config = deit_config(batch, img, augment_on)
    mesh = make_mesh(dict(config.mesh.axes), devices=jax.devices()[:1])
    tr = make_trainer(config, mesh, num_classes=1000, num_train_steps=100_000, warmup_steps=10)
    host = device_augment_batch(config.dataset, batch)
    if augment_on == "host":
        host = {
            "image": np.random.default_rng(0).normal(size=host["image"].shape).astype(np.float32),
            "label": host["label"],
        }
    b = shard_batch(host, tr.batch_sharding)
    state, rest = tr.init_state(), tr.init_rest()
    step = tr.train_step.lower(state, b, rest, {}).compile()
    box = [state]

    def run():
        box[0], metrics = step(box[0], b, rest, {})
        return metrics

    return best_of(run, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument(
        "--step-batch",
        type=int,
        default=None,
        help="default: 16 on CPU (DeiT-S at 256 needs ~30 GiB of temporaries), --batch elsewhere",
    )
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=os.path.join(REPO, "benchmarks", "device_augment.json"))
    ap.add_argument("--stages", action="store_true", help="also time each stage and RandAugment part alone")
    args = ap.parse_args()
    cpu = jax.default_backend() == "cpu"
    step_batch = args.step_batch or (16 if cpu else args.batch)
    rec = augment_alone(args.batch, args.img_size, args.repeats)
    if args.stages:
        rec["stage_ms"] = stage_times(args.batch, args.img_size, args.repeats)
    print(rec, flush=True)
    host_s = step_time(step_batch, args.img_size, "host", args.repeats)
    device_s = step_time(step_batch, args.img_size, "device", args.repeats)
    rec.update(
        step_batch=step_batch,
        step_host_ms=round(1e3 * host_s, 1),
        step_device_ms=round(1e3 * device_s, 1),
        added_ms=round(1e3 * (device_s - host_s), 1),
        added_fraction=round(device_s / host_s - 1, 3),
    )
    print(rec, flush=True)
    meta = dict(
        date=datetime.date.today().isoformat(),
        backend=jax.default_backend(),
        device=jax.devices()[0].device_kind if not cpu else cpu_model(),
        cores=os.cpu_count(),
        command=" ".join(["python"] + sys.argv),
        load_1min=round(os.getloadavg()[0], 2),
    )
    runs = []
    if os.path.exists(args.json):
        with open(args.json) as f:
            runs = json.load(f)
    runs.append(dict(meta, **rec))
    with open(args.json, "w") as f:
        json.dump(runs, f, indent=1)


if __name__ == "__main__":
    main()
