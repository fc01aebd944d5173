"""Where the CPU time of a ViT-S layer goes: XLA:CPU kernels vs PyTorch's, side by side.

    python benchmarks/cpu_kernels.py [--json benchmarks/cpu_kernels.json]

The kernels of one ViT-S/16 encoder layer at batch 32 (B·N = 32·197 tokens, D = 384, 6 heads of
64), each timed in JAX (jitted, float32) and in PyTorch (same shapes, same thread count),
alternating, best of `--rounds`. The per-kernel ratio bounds what any arrangement of the
model code can reach: a model made of these kernels cannot be much faster than its slowest
big kernel allows.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cpu_model  # noqa: E402

B, N, D, H = 32, 197, 384, 6
DH = D // H


def best_ms(fn, rounds: int) -> float:
    fn()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def jax_kernels() -> dict:
    k = jax.random.split(jax.random.key(0), 4)
    x2 = jax.random.normal(k[0], (B * N, D))
    w1 = jax.random.normal(k[1], (D, 4 * D))
    q = jax.random.normal(k[2], (B, H, N, DH))
    x3 = x2.reshape(B, N, D)
    s = jnp.ones((D,))

    def ln(x, s, b):
        m = x.mean(-1, keepdims=True)
        v = ((x - m) ** 2).mean(-1, keepdims=True)
        return (x - m) * jax.lax.rsqrt(v + 1e-6) * s + b

    def attn(q):
        p = jax.nn.softmax(jnp.einsum("bhqd,bhkd->bhqk", q, q) * DH**-0.5, axis=-1)
        return jnp.einsum("bhqk,bhkd->bhqd", p, q)

    fns = {
        "mlp fc1 GEMM (6304x384 @ 384x1536)": (jax.jit(jnp.matmul), (x2, w1)),
        "attention logits (192 x 197x64 @ 64x197)": (jax.jit(lambda q: jnp.einsum("bhqd,bhkd->bhqk", q, q)), (q,)),
        "attention core fwd (logits, softmax, AV)": (jax.jit(attn), (q,)),
        "LayerNorm fwd+bwd (x, scale, bias)": (
            jax.jit(jax.grad(lambda x, s, b: jnp.sum(ln(x, s, b) ** 2), argnums=(0, 1, 2))),
            (x3, s, s * 0),
        ),
    }
    return {name: (lambda f=f, a=a: jax.block_until_ready(f(*a))) for name, (f, a) in fns.items()}


def torch_kernels() -> dict:
    import torch

    torch.set_num_threads(os.cpu_count())
    x2, w1 = torch.randn(B * N, D), torch.randn(D, 4 * D)
    q = torch.randn(B, H, N, DH)
    x3 = torch.randn(B, N, D, requires_grad=True)
    norm = torch.nn.LayerNorm(D, eps=1e-6)
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def ln_fb():
        norm.zero_grad()
        x3.grad = None
        (norm(x3) ** 2).sum().backward()

    def nograd(f):
        def run():
            with torch.no_grad():
                f()

        return run

    return {
        "mlp fc1 GEMM (6304x384 @ 384x1536)": nograd(lambda: x2 @ w1),
        "attention logits (192 x 197x64 @ 64x197)": nograd(lambda: q @ q.transpose(-1, -2)),
        "attention core fwd (logits, softmax, AV)": nograd(lambda: sdpa(q, q, q)),
        "LayerNorm fwd+bwd (x, scale, bias)": ln_fb,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    jx, tm = jax_kernels(), torch_kernels()
    rows = []
    print("| kernel | JAX ms | PyTorch ms | JAX/PyTorch speed |\n|---|---|---|---|")
    for name in jx:
        j, t = best_ms(jx[name], args.rounds), best_ms(tm[name], args.rounds)
        rows.append(dict(kernel=name, jax_ms=j, torch_ms=t, speed_ratio=t / j))
        print(f"| {name} | {j:.1f} | {t:.1f} | {t / j:.2f} |")
    meta = dict(
        date=datetime.date.today().isoformat(), cpu=cpu_model(), cores=os.cpu_count(), jax=jax.__version__, rows=rows
    )
    print(json.dumps(meta))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
