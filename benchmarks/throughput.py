"""Images/s of inference and of a training step, nest_jax (JAX) side by side with timm (PyTorch).

    python benchmarks/throughput.py --model vit_small_patch16_224 --batch 32 --img-size 224 \
        --mode both --dtype float32 --rounds 5

Both frameworks get the same model, batch, resolution and dtype. The measurements alternate
(JAX, timm, JAX, timm, …) so that load from other processes hits both alike; the reported
ratio is the median of the per-round ratios. Training step = forward + cross-entropy backward +
AdamW update (JAX: one jitted function with donated state; timm: `loss.backward()` +
`torch.optim.AdamW.step()`). MFU = XLA cost-analysis FLOPs per second / the machine's measured
float32 matmul peak (`benchmarks/common.py`).

Prints a markdown table row per (model, mode) and a JSON record (also written to `--json`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import compiled_flops, cpu_model, matmul_peak_flops, median, time_calls  # noqa: E402

from nest_jax.models import create_model  # noqa: E402
from nest_jax.models.functional import pure  # noqa: E402

Runner = Callable[[], None]  # one blocking call: one batch through the model (or one step)


# ----------------------------------------------------------------------------------------- JAX
def cross_entropy(logits, labels):
    """Mean CE; multi-token models (DeiT distilled) train every head on the labels here."""
    heads = logits.values() if isinstance(logits, dict) else [logits]
    return sum(
        optax.softmax_cross_entropy_with_integer_labels(h.astype(jnp.float32), labels).mean() for h in heads
    ) / len(heads)


def jax_runners(args) -> dict[str, tuple[Runner, float]]:
    """mode -> (runner, FLOPs per call) for the nest_jax model."""
    overrides = {"dtype": jnp.bfloat16} if args.dtype == "bfloat16" else {}
    model = create_model(args.model, img_size=args.img_size, **overrides)
    apply, params, state = pure(model)
    key = jax.random.key(0)
    x = jax.random.normal(key, (args.batch, args.img_size, args.img_size, 3), jnp.float32)
    y = jax.random.randint(key, (args.batch,), 0, 1000)
    out = {}
    if args.mode in ("infer", "both"):
        infer = jax.jit(apply).lower(params, x, state=state).compile()
        out["infer"] = (lambda: infer(params, x, state=state).block_until_ready(), compiled_flops(infer))
    if args.mode == "infer":
        return out
    tx = optax.adamw(1e-3, weight_decay=0.05)

    def train_step(params, opt_state, state, x, y):
        def loss_fn(p):
            (logits, recorded), new_state = apply(p, x, state=state, train=True, capture="heads")
            logits = recorded["heads"] or logits  # each head's own logits (a ResNet/NesT has none)
            return cross_entropy(logits, y), new_state

        (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, state, loss

    carry = [params, tx.init(params), state]
    step = jax.jit(train_step, donate_argnums=(0, 1, 2)).lower(*carry, x, y).compile()

    def run_train():  # the step donates its inputs: keep its outputs for the next call
        new = step(*carry, x, y)
        carry[0], carry[1], carry[2] = new[:3]
        new[3].block_until_ready()

    out["train"] = (run_train, compiled_flops(step))
    return out


# ----------------------------------------------------------------------------------------- timm
def timm_runners(args) -> dict[str, Runner]:
    """mode -> runner for the timm model of the same architecture (PyTorch, CPU)."""
    import timm
    import torch

    torch.set_num_threads(os.cpu_count())
    model = timm.create_model(args.timm_model or args.model, pretrained=False, num_classes=1000, img_size=args.img_size)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size)
    y = torch.randint(0, 1000, (args.batch,))
    bf16 = args.dtype == "bfloat16"
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)  # noqa: E731
    out = {}
    if args.mode in ("infer", "both"):

        def run_infer():
            model.eval()
            with torch.inference_mode(), autocast():
                model(x)

        out["infer"] = run_infer
    if args.mode in ("train", "both"):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)

        def run_train():
            model.train()
            with autocast():
                logits = model(x)
                logits = logits if torch.is_tensor(logits) else sum(logits) / len(logits)
                loss = torch.nn.functional.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        out["train"] = run_train
    return out


# ----------------------------------------------------------------------------------------- main
def measure(args) -> list[dict]:
    peak = matmul_peak_flops()
    jx = jax_runners(args)
    tm = {} if args.no_timm else timm_runners(args)
    records = []
    for mode, (run_jax, flops) in jx.items():
        run_timm = tm.get(mode)
        for _ in range(args.warmup):
            run_jax()
            if run_timm:
                run_timm()
        jax_s, timm_s = [], []
        for _ in range(args.rounds):  # alternate so that background load hits both alike
            jax_s.append(time_calls(run_jax, args.iters))
            if run_timm:
                timm_s.append(time_calls(run_timm, args.iters))
        jax_ips = args.batch / median(jax_s)
        rec = dict(
            model=args.model,
            mode=mode,
            batch=args.batch,
            img_size=args.img_size,
            dtype=args.dtype,
            jax_img_s=jax_ips,
            flops_per_step=flops,
            mfu=flops / median(jax_s) / peak,
            peak_flops=peak,
            rounds=args.rounds,
            iters=args.iters,
            jax_s=jax_s,
        )
        if run_timm:
            rec.update(
                timm_img_s=args.batch / median(timm_s),
                timm_s=timm_s,
                ratio=median([t / j for j, t in zip(jax_s, timm_s)]),
                ratio_min=min(t / j for j, t in zip(jax_s, timm_s)),
                ratio_max=max(t / j for j, t in zip(jax_s, timm_s)),
            )
        records.append(rec)
    return records


def table_row(r: dict) -> str:
    timm_ips = f"{r['timm_img_s']:.1f}" if "timm_img_s" in r else "—"
    ratio = f"{r['ratio']:.2f} ({r['ratio_min']:.2f}–{r['ratio_max']:.2f})" if "ratio" in r else "—"
    return (
        f"| {r['model']} | {r['mode']} | {r['dtype']} | {r['batch']} | {r['jax_img_s']:.1f} | "
        f"{timm_ips} | {ratio} | {100 * r['mfu']:.0f}% |"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vit_small_patch16_224")
    p.add_argument("--timm-model", default=None, help="timm name, when it differs from --model")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--mode", choices=("infer", "train", "both"), default="both")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--rounds", type=int, default=5, help="alternating JAX/timm measurement rounds")
    p.add_argument("--iters", type=int, default=3, help="calls timed per round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-timm", action="store_true", help="measure the JAX model only")
    p.add_argument("--json", default=None, help="also append the JSON records to this file")
    args = p.parse_args(argv)
    records = measure(args)
    meta = dict(
        date=datetime.date.today().isoformat(),
        cpu=cpu_model(),
        cores=os.cpu_count(),
        jax=jax.__version__,
        backend=jax.default_backend(),
        xla_flags=os.environ.get("XLA_FLAGS", ""),
    )
    print("| model | mode | dtype | batch | img/s JAX | img/s timm | JAX/timm (min–max) | MFU |")
    print("|---|---|---|---|---|---|---|---|")
    for r in records:
        print(table_row(r))
    for r in records:
        r.update(meta)
        print(json.dumps(r))
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
