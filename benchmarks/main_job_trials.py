"""Quick recipe trials for the main job on held-out training images (docs/main_job.md).

    python benchmarks/main_job_trials.py TRIALS.json [--log benchmarks/main_job_trials.jsonl]

TRIALS.json is a list of {"tag", "set": ["a.b=value", ...], "aug": {"deg", "trans", "scale"} or
null, "seeds": [...], "val_seeds": [...]}. Each trial builds the real trainer
(`nest_jax.train.trainer.make_trainer`) from configs/digits_nest_tiny.py plus the overrides and
runs its jitted train step on the digits training images minus a stratified 20% held out
(`main_job_seeds.stratified_split`), then reports errors and mean cross-entropy on the held-out
images. Quicker than `main_job_seeds.py --validation` because the images are resized once (the
pipeline's augmentation stages are not used): with "aug", a random affine warp (rotation
U[-deg, deg], zoom log-uniform in [1/scale, scale], shift U[-trans, trans] x size) is applied on
the device in JAX, the same parameterisation as `augment.random_affine`. The recipe it points to
is then checked with `main_job_seeds.py --validation` (the real pipeline) and `--test`.
"""

import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from main_job_seeds import digits_arrays, load_config, stratified_split  # noqa: E402

from nest_jax.data.preprocess import NORMALIZATION  # noqa: E402
from nest_jax.train import sharding as shd  # noqa: E402
from nest_jax.train.loop import mesh_axes  # noqa: E402
from nest_jax.train.trainer import make_trainer  # noqa: E402


def resize_01(images: np.ndarray, size: int, method: str) -> np.ndarray:
    """(n, 8, 8, 1) in [0, 1] → (n, size, size, 1) in [0, 1] (jax.image.resize, clipped)."""
    if images.shape[1] == size:
        return images.astype(np.float32)
    out = jax.image.resize(images, (images.shape[0], size, size, images.shape[3]), method=method)
    return np.clip(np.asarray(out, np.float32), 0.0, 1.0)


MEAN, STD = (v[0] for v in NORMALIZATION["digits"])  # the pipeline's digits normalization
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")


def affine_batch(key, x, deg, trans, scale):
    """x (b,s,s,1) in [0,1]; random rotation (deg), translation (fraction of size), scale; bilinear, zero fill."""
    b, s = x.shape[0], x.shape[1]
    k1, k2, k3 = jax.random.split(key, 3)
    th = jnp.deg2rad(jax.random.uniform(k1, (b,), minval=-deg, maxval=deg))
    sc = (
        jnp.exp(jax.random.uniform(k3, (b,), minval=-jnp.log(scale), maxval=jnp.log(scale)))
        if scale > 1
        else jnp.ones((b,))
    )
    t = jax.random.uniform(k2, (b, 2), minval=-trans, maxval=trans) * s
    c = (s - 1) / 2.0
    yy, xx = jnp.meshgrid(jnp.arange(s, dtype=jnp.float32), jnp.arange(s, dtype=jnp.float32), indexing="ij")

    def one(img, th, sc, t):
        # output coord -> source coord: inverse rotate/scale about centre, minus translation
        dy, dx = yy - c - t[0], xx - c - t[1]
        cs, sn = jnp.cos(th) / sc, jnp.sin(th) / sc
        sy = cs * dy - sn * dx + c
        sx = sn * dy + cs * dx + c
        return jax.scipy.ndimage.map_coordinates(img[..., 0], [sy, sx], order=1, mode="constant", cval=0.0)[..., None]

    return jax.vmap(one)(x, th, sc, t)


def run(trial, log):
    (x_all, y_all), _ = digits_arrays()
    for vs in trial.get("val_seeds", [0]):
        keep, val = stratified_split(y_all, 0.2, vs)
        for seed in trial.get("seeds", [0]):
            c = load_config(os.path.join(REPO, "configs", "digits_nest_tiny.py"), trial.get("set", []))
            c.seed = seed
            S, B = int(c.dataset.image_size), int(c.train.global_batch_size)
            xtr = resize_01(x_all[keep], S, "bilinear")
            ytr = y_all[keep]
            xva = (resize_01(x_all[val], S, "bilinear") - MEAN) / STD
            yva = y_all[val]
            n = len(ytr)
            epochs = float(c.train.num_epochs)
            steps = int(epochs * n / B)
            warm = int(float(c.optimizer.warmup_epochs) * n / B)
            t0 = time.perf_counter()
            mesh = shd.make_mesh(mesh_axes(c))
            tr = make_trainer(c, mesh, num_classes=10, num_train_steps=steps, warmup_steps=warm)
            state = tr.init_state()
            rest = tr.init_rest()
            aug = trial.get("aug")
            augf = (
                jax.jit(lambda k, x: (affine_batch(k, x, **aug) - MEAN) / STD)
                if aug
                else jax.jit(lambda k, x: (x - MEAN) / STD)
            )
            evalf = jax.jit(lambda p, x: tr.model(p, None, rest)(x, train=False))
            order = np.empty(0, np.int64)
            ep = 0
            key = jax.random.key(seed + 1000)
            for st in range(steps):
                while len(order) < B:
                    order = np.concatenate([order, np.random.default_rng([seed, ep]).permutation(n)])
                    ep += 1
                idx, order = order[:B], order[B:]
                img = augf(jax.random.fold_in(key, st), xtr[idx])
                state, m = tr.train_step(state, {"image": img, "label": ytr[idx]}, rest, {})
            jax.block_until_ready(state)
            res = {}
            for which in ["params"] + (["ema"] if "ema" in state else []):
                lg = np.concatenate(
                    [
                        np.asarray(evalf(state[which], xva[i : i + 128].astype(np.float32)))
                        for i in range(0, len(yva), 128)
                    ]
                )
                lp = lg - np.log(np.exp(lg - lg.max(1, keepdims=True)).sum(1, keepdims=True)) - lg.max(1, keepdims=True)
                res[which] = (int((lg.argmax(1) != yva).sum()), float(-lp[np.arange(len(yva)), yva].mean()))
            wall = time.perf_counter() - t0
            rec = dict(
                tag=trial["tag"],
                seed=seed,
                val_seed=vs,
                steps=steps,
                errors=res["params"][0],
                loss=round(res["params"][1], 4),
                ema=res.get("ema"),
                wall=round(wall, 1),
                set=trial.get("set"),
                aug=aug,
            )
            print(json.dumps(rec), flush=True)
            with open(log, "a") as f:
                f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trials")
    ap.add_argument("--log", default=os.path.join(REPO, "benchmarks", "main_job_trials.jsonl"))
    args = ap.parse_args()
    with open(args.trials) as f:
        for t in json.load(f):
            run(t, args.log)
