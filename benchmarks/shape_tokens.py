"""Shape tokens at small scale (Naseer et al. 2021, §3.5) on the procedural shapes × textures set,
in one self-contained script (the same models and losses as configs/shapes_tokens.py, with a plain
optax loop so it runs without registering the data source).

    python benchmarks/shape_tokens.py [--steps 500] [--classes 8] [--json benchmarks/shape_tokens.json]

1. ResNet (1 block per stage) on STYLIZED images (random textures): the shape-biased teacher;
2. the same ResNet on NATURAL images (shape and texture agree): the natural teacher;
3. DeiT (cls + shape tokens) on natural images, shape token hard-distilled from 1;
4. DeiT (cls + dist tokens) on natural images, dist token hard-distilled from 2.
No augmentation, AdamW, α = 0.5 (the DeiT loss of nest_jax.train.losses). Reports, for every
token: natural-test top-1 and shape bias on cue-conflict images; and the cosine similarity of
class vs shape / distillation token at the input and after every layer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from nest_jax.analysis import per_block_tokens as T  # noqa: E402
from nest_jax.analysis import shape_bias as SB  # noqa: E402
from nest_jax.analysis.forward import normalize  # noqa: E402
from nest_jax.data.shapes import ShapesTexturesSource  # noqa: E402
from nest_jax.models import create_model  # noqa: E402
from nest_jax.models.functional import pure  # noqa: E402
from nest_jax.train.losses import classification_loss  # noqa: E402

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
RESNET = dict(layers=(1, 1, 1, 1), widths=(64, 128, 256, 512))
DEIT = dict(patch_size=4, dim=64, depth=4, num_heads=2, mlp_dim=256)


def data(variant: str, split: str, n: int, classes: int):
    a = ShapesTexturesSource(num_classes=classes, image_size=32, variant=variant, num_train=n, num_test=n).arrays(split)
    return a["image"].astype(np.float32) / 255.0, a["label"], a["texture_label"]


def train(
    model, x, y, steps: int, *, teacher=None, token: str | None = None, lr: float = 1e-3, bs: int = 64, seed: int = 0
):
    apply, params, state = pure(model)
    tx = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, lr, steps // 20, steps), weight_decay=0.05)
    opt = tx.init(params)
    t_cfg = ml_collections.ConfigDict(dict(kind="hard", alpha=0.5, tau=1.0))
    t_apply, t_params, t_state = pure(teacher) if teacher is not None else (None, None, None)
    k = int(y.max()) + 1

    @jax.jit
    def step(params, state, opt, xb, yb):
        xn = normalize(xb, MEAN, STD)
        teachers = (
            {token: (t_apply(t_params, xn, state=jax.tree.map(lambda v: v, t_state)), t_cfg)}
            if teacher is not None
            else None
        )

        def loss(p):
            # Fresh Variables for this trace level: training mutates the BatchNorm statistics.
            (logits, rec), new_state = apply(p, xn, state=jax.tree.map(lambda v: v, state), train=True, capture="heads")
            out = rec["heads"] if len(rec["heads"]) > 1 else logits
            value, _ = classification_loss(out, jax.nn.one_hot(yb, k), teachers=teachers)
            return value, new_state

        (value, new_state), g = jax.value_and_grad(loss, has_aux=True)(params)
        u, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, u), new_state, opt, value

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.integers(0, len(x), bs)
        params, state, opt, _ = step(params, state, opt, x[idx], y[idx])
    nnx.update(model, params, state)
    return model


def evaluate(model, nat, cue) -> dict:
    """Per token: natural top-1 and cue-conflict shape bias (ViTs); the model's output otherwise."""
    (nx, ny, _), (cx, cy, ct) = nat, cue
    out = {}
    if T.is_vit(model):
        tokens = list(model.config.prefix_tokens) + ["inference"]
        nat_logits = T.per_layer_logits(model, normalize(jnp.asarray(nx), MEAN, STD))
        cue_logits = T.per_layer_logits(model, normalize(jnp.asarray(cx), MEAN, STD))
        for t in tokens:
            pred = np.asarray(jnp.argmax(cue_logits[t][-1], -1))
            out[t] = dict(
                top1=float(np.mean(np.asarray(jnp.argmax(nat_logits[t][-1], -1)) == ny)),
                shape_bias=SB.shape_bias(pred, cy, ct)["shape_bias"],
            )
        other = [t for t in model.config.prefix_tokens if t != "cls"][0]
        out["cosine_cls_" + other] = (
            np.asarray(T.token_cosine_per_layer(model, normalize(jnp.asarray(nx[:500]), MEAN, STD), a="cls", b=other))
            .round(4)
            .tolist()
        )
    else:
        logits = model(normalize(jnp.asarray(nx), MEAN, STD))
        cue_pred = np.asarray(jnp.argmax(model(normalize(jnp.asarray(cx), MEAN, STD)), -1))
        out["model"] = dict(
            top1=float(np.mean(np.asarray(jnp.argmax(logits, -1)) == ny)),
            shape_bias=SB.shape_bias(cue_pred, cy, ct)["shape_bias"],
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--classes", type=int, default=8)
    ap.add_argument("--train-images", type=int, default=4000)
    ap.add_argument("--json", default=os.path.join(REPO, "benchmarks", "shape_tokens.json"))
    args = ap.parse_args()
    t0 = time.time()
    k = args.classes
    nat_tr, sty_tr = data("natural", "train", args.train_images, k), data("stylized", "train", args.train_images, k)
    nat_te, cue_te = data("natural", "test", 1000, k), data("cue_conflict", "test", 1000, k)
    results = {}

    def resnet():
        return create_model("resnet50", num_classes=k, img_size=32, rngs=nnx.Rngs(0), **RESNET)

    sin = train(resnet(), sty_tr[0], sty_tr[1], args.steps)
    results["resnet_stylized"] = evaluate(sin, nat_te, cue_te)
    print("resnet_stylized", results["resnet_stylized"], f"{time.time() - t0:.0f} s", flush=True)
    nat = train(resnet(), nat_tr[0], nat_tr[1], args.steps)
    results["resnet_natural"] = evaluate(nat, nat_te, cue_te)
    print("resnet_natural", results["resnet_natural"], f"{time.time() - t0:.0f} s", flush=True)
    for name, model_name, teacher, token in (
        ("deit_shape", "deit_tiny_shape_patch16_224", sin, "shape"),
        ("deit_distilled", "deit_tiny_distilled_patch16_224", nat, "dist"),
    ):
        m = create_model(model_name, num_classes=k, img_size=32, rngs=nnx.Rngs(1), **DEIT)
        m = train(m, nat_tr[0], nat_tr[1], args.steps, teacher=teacher, token=token)
        results[name] = evaluate(m, nat_te, cue_te)
        print(name, results[name], f"{time.time() - t0:.0f} s", flush=True)
    meta = dict(
        command=" ".join(sys.argv),
        steps=args.steps,
        classes=k,
        train_images=args.train_images,
        seconds=round(time.time() - t0),
        date=time.strftime("%Y-%m-%d"),
        device=str(jax.devices()[0]),
    )
    with open(args.json, "w") as f:
        json.dump(dict(meta, results=results), f, indent=1)


if __name__ == "__main__":
    main()
