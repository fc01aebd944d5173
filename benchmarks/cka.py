"""Full layer × layer minibatch CKA, vit_base_patch16_224 vs resnet50: nest_jax vs plain NumPy.

    python benchmarks/cka.py --images 2560 --batch 256 --pool mean       # the full count, pooled features
    python benchmarks/cka.py --images 512 --batch 256 --pool all --img-size 64   # every token, smaller images

Per batch, both models' per-layer features are the shapes the models record at `--img-size`
(`jax.eval_shape` of the forward with capture="layers": 12 ViT layers, 16 ResNet blocks), filled
with random numbers outside the timed region; the timed part is the CKA itself: within ViT, within
ResNet and ViT × ResNet (28 × 28 layer pairs in all), accumulated over every batch.

nest_jax: `MinibatchCKA(12, 16).update` (one jitted call per batch: each layer's Gram matrix once,
float32, then all 28 × 28 pairs; float64 sums on the host).
NumPy: the straightforward float64 implementation — each layer's Gram matrix once per batch, then
Song et al.'s HSIC₁ for every pair in a Python loop. Each implementation runs in its own
subprocess; peak memory is the subprocess's maximum resident set size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def feature_shapes(img_size: int, pool: str) -> dict[str, list[tuple[int, ...]]]:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from nest_jax.analysis.representations import layer_representations, model_family, num_prefix
    from nest_jax.models import create_model

    out = {}
    for name in ("vit_base_patch16_224", "resnet50"):

        def reps(x, name=name):
            m = create_model(name, img_size=img_size, rngs=nnx.Rngs(0))
            _, inter = m(x, capture="layers")
            return layer_representations(inter, pool, model_family(m), num_prefix(m))

        shapes = jax.eval_shape(reps, jax.ShapeDtypeStruct((1, img_size, img_size, 3), jnp.float32))
        out[name] = [tuple(s.shape[1:]) for s in shapes]
    return out


def np_grams(feats):
    grams = []
    for f in feats:
        f = f.reshape(len(f), -1).astype(np.float64)
        f = f - f.mean(0)
        k = f @ f.T
        np.fill_diagonal(k, 0.0)
        grams.append(k)
    return grams


def np_hsic1(k, l):
    n = len(k)
    return (np.sum(k * l) + k.sum() * l.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * k.sum(1) @ l.sum(1)) / (
        n * (n - 3)
    )


def run_numpy(batches):
    gx, gy = np_grams(batches[0]), np_grams(batches[1])
    g = gx + gy
    return [[np_hsic1(a, b) for b in g] for a in g]


def worker(args) -> dict:
    shapes = json.loads(args.shapes)
    vit, res = shapes["vit_base_patch16_224"], shapes["resnet50"]
    rng = np.random.default_rng(0)
    steps = args.images // args.batch
    if args.impl == "nest_jax":
        import jax

        from nest_jax.analysis.cka import MinibatchCKA

        acc = MinibatchCKA(len(vit), len(res))  # all 28 × 28 pairs from one set of Gram matrices
        warm = None
    elapsed = 0.0
    for _step in range(steps):
        fx = [rng.standard_normal((args.batch, *s), dtype=np.float32) for s in vit]
        fy = [rng.standard_normal((args.batch, *s), dtype=np.float32) for s in res]
        if args.impl == "nest_jax":
            fx, fy = [jax.device_put(f) for f in fx], [jax.device_put(f) for f in fy]
            jax.block_until_ready((fx, fy))
            if warm is None:  # compile once, untimed (a second MinibatchCKA set)
                MinibatchCKA(len(vit), len(res)).update(fx, fy)
                warm = True
            t0 = time.perf_counter()
            acc.update(fx, fy)
            elapsed += time.perf_counter() - t0
        else:
            t0 = time.perf_counter()
            run_numpy((fx, fy))
            elapsed += time.perf_counter() - t0
    return {
        "impl": args.impl,
        "seconds": elapsed,
        "batches": steps,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2560)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--pool", default="mean", choices=("mean", "all"))
    ap.add_argument("--impl", default=None, choices=("nest_jax", "numpy"))
    ap.add_argument("--shapes", default=None)
    ap.add_argument("--out", default=None, help="append a JSON line with the results")
    args = ap.parse_args()
    if args.impl:
        print(json.dumps(worker(args)))
        return
    shapes = feature_shapes(args.img_size, args.pool)
    feats = {k: int(sum(np.prod(s) for s in v)) for k, v in shapes.items()}
    print(f"features per image: {feats} ({args.pool}, {args.img_size} px)", flush=True)
    rows = {}
    for impl in ("nest_jax", "numpy"):
        cmd = [
            sys.executable,
            __file__,
            f"--impl={impl}",
            f"--images={args.images}",
            f"--batch={args.batch}",
            f"--shapes={json.dumps(shapes)}",
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows[impl] = json.loads(res.stdout.strip().splitlines()[-1])
        print(rows[impl], flush=True)
    summary = dict(
        images=args.images,
        batch=args.batch,
        img_size=args.img_size,
        pool=args.pool,
        features_per_image=feats,
        nest_jax=rows["nest_jax"],
        numpy=rows["numpy"],
        speedup=rows["numpy"]["seconds"] / rows["nest_jax"]["seconds"],
    )
    print(json.dumps(summary))
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
