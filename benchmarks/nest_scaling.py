"""NesT cost: nest_jax vs timm side by side, and how cost grows with resolution (NesT vs DeiT).

    python benchmarks/nest_scaling.py            # both parts, writes benchmarks/nest_scaling.png
    python benchmarks/nest_scaling.py --part side   (or --part scaling)

Part 1 (side by side, same run, alternating JAX/timm rounds, ratio = median per-round timm/JAX
time): nest_tiny at 224 (timm `nest_tiny_jx`: TF-SAME pooling, as nest_jax's default) and the
CIFAR NesT-T at 32 (timm `Nest(img_size=32, patch_size=1, num_levels=4, …)`). timm's Nest has no
multi-query attention, so nest_jax's CIFAR model is built with `attention="multi_head"` here: the
same architecture on both sides. Drop path is off on both sides (identical compute). Train step =
forward + cross-entropy backward + AdamW (JAX: one jitted step, donated state).

Part 2 (resolution): nest_tiny and deit_small_patch16_224 at 224, 384, 512 px, inference, batch 1.
NesT at a new resolution keeps its block count and grows its blocks (official policy; 24×24 tokens
at 384, 32×32 at 512); DeiT keeps 16-px patches, so its token count grows. JAX: images/s, and XLA's
`memory_analysis()` of the compiled forward (temp + argument bytes). PyTorch (timm): images/s and
peak-RSS growth of one forward, each config in a fresh subprocess (`resource.getrusage`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cpu_model, median, time_calls  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CIFAR_TIMM = dict(
    img_size=32,
    patch_size=1,
    num_levels=4,
    embed_dims=(192,) * 4,
    num_heads=(3,) * 4,
    depths=(3,) * 4,
    num_classes=10,
    pad_type="same",
    drop_path_rate=0.0,
)
SIDE = [  # name, nest_jax (model, kwargs), timm (name or kwargs for timm's Nest), batch
    ("nest_tiny @224", ("nest_tiny", dict(num_classes=1000, drop_path_rate=0.0)), "nest_tiny_jx", 4),
    (
        "nest_tiny_cifar @32",
        ("nest_tiny_cifar", dict(num_classes=10, drop_path_rate=0.0, attention="multi_head")),
        CIFAR_TIMM,
        32,
    ),
]
SCALING = [("nest_tiny", "nest_tiny_jx"), ("deit_small_patch16_224", "deit_small_patch16_224")]
RESOLUTIONS = (224, 384, 512)


# ----------------------------------------------------------------------------------------- JAX
def jax_runners(name: str, kwargs: dict, batch: int, img: int, train: bool):
    """(infer runner, train runner or None, compiled forward) for a nest_jax model."""
    import jax
    import optax

    from nest_jax.models import create_model
    from nest_jax.models.functional import pure

    model = create_model(name, img_size=img, **kwargs)
    apply, params, state = pure(model)
    classes = kwargs.get("num_classes", 1000)
    x = jax.random.normal(jax.random.key(0), (batch, img, img, 3))
    y = jax.random.randint(jax.random.key(1), (batch,), 0, classes)
    fwd = jax.jit(lambda p, x: apply(p, x, state=state)).lower(params, x).compile()
    infer = lambda: fwd(params, x).block_until_ready()  # noqa: E731
    if not train:
        return infer, None, fwd
    tx = optax.adamw(1e-3, weight_decay=0.05)

    def step(params, opt_state, x, y):
        def loss_fn(p):
            return optax.softmax_cross_entropy_with_integer_labels(apply(p, x, state=state), y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    carry = [params, tx.init(params)]
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(*carry, x, y).compile()

    def run_train():
        carry[0], carry[1], loss = compiled(*carry, x, y)
        loss.block_until_ready()

    return infer, run_train, fwd


# ----------------------------------------------------------------------------------------- timm
def timm_model(spec, img: int):
    import timm
    from timm.models.nest import Nest

    if isinstance(spec, dict):
        return Nest(**spec)
    return timm.create_model(spec, pretrained=False, img_size=img, drop_path_rate=0.0)


def timm_runners(spec, batch: int, img: int):
    import torch

    torch.set_num_threads(os.cpu_count())
    model = timm_model(spec, img)
    x = torch.randn(batch, 3, img, img)
    classes = spec["num_classes"] if isinstance(spec, dict) else 1000
    y = torch.randint(0, classes, (batch,))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)

    def infer():
        model.eval()
        with torch.inference_mode():
            model(x)

    def train():
        model.train()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return infer, train


def torch_worker(spec: str, img: int, batch: int, iters: int) -> None:
    """Runs in a fresh process: peak-RSS growth of one forward and images/s; prints JSON."""
    import torch

    torch.set_num_threads(os.cpu_count())
    model = timm_model(spec, img).eval()
    x = torch.randn(batch, 3, img, img)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with torch.inference_mode():
        model(x)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        secs = [time_calls(lambda: model(x), 1) for _ in range(iters)]
    print(json.dumps(dict(rss_growth_mb=(peak - base) / 1024, img_s=batch / median(secs))))


# ----------------------------------------------------------------------------------------- parts
def side_by_side(rounds: int, iters: int) -> list[dict]:
    out = []
    for label, (name, kw), spec, batch in SIDE:
        img = 224 if "224" in label else 32
        j_inf, j_tr, _ = jax_runners(name, kw, batch, img, train=True)
        t_inf, t_tr = timm_runners(spec, batch, img)
        for mode, rj, rt in (("infer", j_inf, t_inf), ("train", j_tr, t_tr)):
            rj(), rt()  # warm-up
            js, ts = [], []
            for _ in range(rounds):  # alternate: background load hits both alike
                js.append(time_calls(rj, iters))
                ts.append(time_calls(rt, iters))
            rec = dict(
                model=label,
                mode=mode,
                batch=batch,
                jax_img_s=batch / median(js),
                timm_img_s=batch / median(ts),
                ratio=median([t / j for j, t in zip(js, ts)]),
            )
            print(json.dumps(rec), flush=True)
            out.append(rec)
    return out


def scaling(iters: int) -> list[dict]:
    out = []
    for name, timm_name in SCALING:
        for img in RESOLUTIONS:
            j_inf, _, fwd = jax_runners(name, dict(num_classes=1000), 1, img, train=False)
            j_inf()
            secs = [time_calls(j_inf, 1) for _ in range(iters)]
            mem = fwd.memory_analysis()
            proc = subprocess.run(
                [sys.executable, __file__, "--torch-worker", timm_name, str(img), "1", str(iters)],
                capture_output=True,
                text=True,
                check=True,
            )
            torch_rec = json.loads(proc.stdout.strip().splitlines()[-1])
            rec = dict(
                model=name,
                img=img,
                jax_img_s=1 / median(secs),
                xla_temp_mb=mem.temp_size_in_bytes / 2**20,
                xla_arg_mb=mem.argument_size_in_bytes / 2**20,
                timm_img_s=torch_rec["img_s"],
                torch_rss_growth_mb=torch_rec["rss_growth_mb"],
            )
            print(json.dumps(rec), flush=True)
            out.append(rec)
    return out


def plot(records: list[dict], path: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.6))
    axes = fig.subplots(1, 3)
    for name, marker in (("nest_tiny", "o"), ("deit_small_patch16_224", "s")):
        rs = [r for r in records if r["model"] == name]
        res = [r["img"] for r in rs]
        axes[0].plot(res, [1e3 / r["jax_img_s"] for r in rs], marker + "-", label=f"{name} JAX")
        axes[0].plot(res, [1e3 / r["timm_img_s"] for r in rs], marker + "--", label=f"{name} timm")
        axes[1].plot(res, [r["xla_temp_mb"] + r["xla_arg_mb"] for r in rs], marker + "-", label=f"{name} XLA")
        axes[1].plot(res, [r["torch_rss_growth_mb"] for r in rs], marker + "--", label=f"{name} torch RSS")
        base = rs[0]
        axes[2].plot(res, [base["jax_img_s"] / r["jax_img_s"] for r in rs], marker + "-", label=f"{name} JAX")
        axes[2].plot(res, [base["timm_img_s"] / r["timm_img_s"] for r in rs], marker + "--", label=f"{name} timm")
    for ax, title in zip(axes, ("ms / image (batch 1)", "peak memory, MiB", "time relative to 224 px")):
        ax.set_xlabel("resolution (px)")
        ax.set_title(title, fontsize=9)
        ax.set_xticks(RESOLUTIONS)
        ax.set_yscale("log")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("side", "scaling", "both"), default="both")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iters", type=int, default=2)
    p.add_argument("--png", default=os.path.join(HERE, "nest_scaling.png"))
    p.add_argument("--torch-worker", nargs=4, metavar=("SPEC", "IMG", "BATCH", "ITERS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.torch_worker:
        spec, img, batch, iters = args.torch_worker
        return torch_worker(spec, int(img), int(batch), int(iters))
    print(f"# {datetime.date.today()} · {cpu_model()} · {os.cpu_count()} cores", flush=True)
    if args.part in ("side", "both"):
        recs = side_by_side(args.rounds, args.iters)
        print("| model | mode | batch | img/s JAX | img/s timm | timm time / JAX time |\n|---|---|---|---|---|---|")
        for r in recs:
            print(
                f"| {r['model']} | {r['mode']} | {r['batch']} | {r['jax_img_s']:.2f} | {r['timm_img_s']:.2f} "
                f"| {r['ratio']:.2f} |"
            )
    if args.part in ("scaling", "both"):
        recs = scaling(args.iters + 1)
        print(
            "| model | px | img/s JAX | img/s timm | XLA temp+args MiB | torch RSS growth MiB |\n"
            "|---|---|---|---|---|---|"
        )
        for r in recs:
            print(
                f"| {r['model']} | {r['img']} | {r['jax_img_s']:.2f} | {r['timm_img_s']:.2f} | "
                f"{r['xla_temp_mb'] + r['xla_arg_mb']:.0f} | {r['torch_rss_growth_mb']:.0f} |"
            )
        plot(recs, args.png)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
