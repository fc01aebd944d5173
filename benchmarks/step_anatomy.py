"""What the train step is made of, measured on the machine at hand (CPU is fine for relative numbers).

    python benchmarks/step_anatomy.py [--json benchmarks/step_anatomy.json]

1. Attention layout: transposes and copies XLA keeps in the compiled forward + backward of one
   ViT-S attention layer (8 × 197 tokens, width 384, 6 heads), per `attn_impl`.
   And for three QKV parameter layouts feeding the fused kernel.
2. GELU: exact (erf) vs tanh approximation, ViT-S MLP forward + backward, time per call.
3. Rematerialization: the compiled train step's temporary memory (XLA memory analysis) of a
   ViT-Ti-width model (4 layers, 32 px, batch 32) without remat and with each policy.
4. Optimizer state: bytes of the AdamW state of DeiT-S with float32 vs bfloat16 first moments.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _hlo_counts(fn, *args) -> dict[str, int]:
    txt = jax.jit(fn).lower(*args).compile().as_text()
    return {op: len(re.findall(rf"= \S+ {op}\(", txt)) for op in ("transpose", "copy", "dot", "fusion")}


def attention_layout() -> dict:
    from nest_jax.models.layers import Attention

    x = jax.random.normal(jax.random.key(0), (8, 197, 384))
    out = {}
    for impl in ("explicit", "xla"):
        attn = Attention(384, 6, rngs=nnx.Rngs(0), impl=impl)
        graph, params, rest = nnx.split(attn, nnx.Param, ...)

        def loss(p, x):
            return jnp.sum(nnx.merge(graph, p, rest)(x)[0] ** 2)

        out[impl] = _hlo_counts(jax.value_and_grad(loss), params, x)
    return out


def qkv_layouts() -> dict:
    """Transposes/copies of fused attention (forward + backward) for three QKV parameter layouts:
    nest_jax's (D, 3, h, d), a (3, D, h, d) stack, and timm's flat (D, 3·h·d) + reshape."""
    b, n, dim, h, d = 8, 197, 384, 6, 64
    x, proj = jnp.ones((b, n, dim)), jnp.ones((h, d, dim)) * 0.01

    def attend(q, k, v):
        o = jax.nn.dot_product_attention(q, k, v, implementation="xla")
        return jnp.sum(jnp.einsum("bnhd,hdc->bnc", o, proj) ** 2)

    def ours(w, x):
        qkv = jnp.einsum("bnc,cthd->bnthd", x, w)
        return attend(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])

    def stacked(w, x):
        qkv = jnp.einsum("bnc,tchd->tbnhd", x, w)
        return attend(qkv[0], qkv[1], qkv[2])

    def flat(w, x):
        qkv = (x @ w).reshape(b, n, 3, h, d)
        return attend(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])

    shapes = {
        "D,3,h,d": (ours, (dim, 3, h, d)),
        "3,D,h,d": (stacked, (3, dim, h, d)),
        "D,3hd": (flat, (dim, 3 * h * d)),
    }
    return {
        name: _hlo_counts(jax.grad(fn, argnums=(0, 1)), jnp.ones(shape) * 0.01, x)
        for name, (fn, shape) in shapes.items()
    }


def _time(fn, *args, iters=5) -> float:
    jax.block_until_ready(fn(*args))
    t0 = time.perf_counter()
    for _ in range(iters):
        r = fn(*args)
    jax.block_until_ready(r)
    return (time.perf_counter() - t0) / iters


def gelu_cost() -> dict:
    from nest_jax.models.layers import Mlp, gelu

    x = jax.random.normal(jax.random.key(0), (8 * 197, 384))
    out = {}
    for kind in ("exact", "tanh"):
        graph, params, rest = nnx.split(Mlp(384, 1536, act=gelu(kind), rngs=nnx.Rngs(0)), nnx.Param, ...)
        step = jax.jit(jax.grad(lambda p, x: jnp.sum(nnx.merge(graph, p, rest)(x) ** 2)))
        out[f"{kind}_ms"] = 1e3 * min(_time(step, params, x) for _ in range(3))
    out["tanh_over_exact"] = out["tanh_ms"] / out["exact_ms"]
    return out


def remat_memory() -> dict:
    from nest_jax.train.config_base import base_config
    from nest_jax.train.sharding import make_mesh
    from nest_jax.train.trainer import make_trainer

    out = {}
    for policy in (None, "nothing_saveable", "dots_with_no_batch_dims_saveable", "dots_saveable"):
        c = base_config()
        c.model.name = "vit_tiny_patch16_224"
        c.model.overrides = dict(patch_size=4, depth=4)
        c.model.remat, c.model.remat_policy = policy is not None, policy or "nothing_saveable"
        c.dataset.image_size = 32
        c.train.global_batch_size = 32
        c.optimizer.lr = 1e-3
        tr = make_trainer(
            c, make_mesh({"data": 1}, jax.devices()[:1]), num_classes=10, num_train_steps=10, warmup_steps=0
        )
        batch = {
            "image": jax.ShapeDtypeStruct((32, 32, 32, 3), np.float32),
            "label": jax.ShapeDtypeStruct((32,), np.int32),
        }
        m = tr.train_step.lower(tr.abstract_state, batch, jax.eval_shape(tr.init_rest), {}).compile().memory_analysis()
        out[policy or "off"] = {
            "temp_MiB": m.temp_size_in_bytes / 2**20,
            "argument_MiB": m.argument_size_in_bytes / 2**20,
        }
    return out


def optimizer_state_bytes() -> dict:
    from nest_jax.models import create_model
    from nest_jax.train.config_base import base_config
    from nest_jax.train.optim import make_optimizer

    params = nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: create_model("deit_small_patch16_224")), nnx.Param))
    out = {}
    for mu in (None, "bfloat16"):
        opt = base_config().optimizer
        opt.update(dict(lr=1e-3, mu_dtype=mu))
        state = jax.eval_shape(make_optimizer(opt, params, schedule=lambda s: 1e-3).init, params)
        out[mu or "float32"] = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state)) / 2**20
    out["params_MiB"] = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params)) / 2**20
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=os.path.join(REPO, "benchmarks", "step_anatomy.json"))
    args = ap.parse_args()
    result = dict(
        backend=jax.default_backend(),
        device=jax.devices()[0].device_kind,
        attention_hlo=attention_layout(),
        qkv_layout_hlo=qkv_layouts(),
        gelu=gelu_cost(),
        optimizer_state_MiB=optimizer_state_bytes(),
        remat=remat_memory(),
    )
    print(json.dumps(result, indent=1))
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
