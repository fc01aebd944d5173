"""Accelerator training and inference throughput: nest_jax's trainer vs timm + PyTorch, one device.

    python benchmarks/gpu_train.py                      # on a GPU: the four shipped configs, batch 128
    python benchmarks/gpu_train.py --max-batch          # + the largest batch of ViT-L/16 and NesT-B (remat off/on)
    python benchmarks/gpu_train.py --cpu                # quick CPU record: batch 4, 64 px, timm eager
    python benchmarks/gpu_train.py --cases vit_b16 --no-timm --profile /tmp/prof   # + a trace summary

nest_jax side: `make_trainer` from the shipped config (imagenet_deit:small, imagenet_deit:base =
ViT-B/16, imagenet_nest:tiny, imagenet_nest:base): bf16 compute, mixup/CutMix, label smoothing,
drop path, AdamW with the config's schedule, EMA, donated state — exactly the step `nest_jax.main`
runs — on a synthetic batch already on the device. Inference: the merged model's jitted forward.
timm side: the same architecture (`deit_*_patch16_224`, `nest_*_jx`), bf16 autocast, timm's
Mixup + soft-target cross-entropy, AdamW (`fused=True` on CUDA) and `torch.compile` (on CPU:
eager, no compile). Both see the same batch size and resolution.

MFU uses analytic model FLOPs (XLA's GPU cost analysis misses the FLOPs inside cuBLAS/cuDNN
custom calls): a matmul of (m, k) by (k, n) is 2·m·k·n; training = 3 × forward (backward ≈ two
forward matmuls per forward matmul); rematerialized recompute is not counted (model FLOPs, not
hardware FLOPs). Per image, a transformer layer over N tokens of width D with MLP width M, h query
heads and g K/V heads of dim d is 2N·D·(h + 2g)·d (q, k, v) + 4N²·h·d (scores, weighted sum) +
2N·h·d·D (out projection) + 4N·D·M (MLP); ViT adds the patch embedding 2·(HW/P²)·P²C·D and the
heads; NesT adds, per level, its blocks × that layer cost and the 3×3 aggregation conv
2·H·W·9·C_in·C_out at the level below's resolution. Peak: 989 TFLOP/s dense bf16 for H100/H200
(NVIDIA's datasheet), else the measured bf16 matmul peak of the device.
Prints a markdown table and writes JSON (`--json`).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import sys
import time

# JAX and PyTorch share one GPU in this process: JAX takes memory as it needs it instead of 75% of
# the device up front, which would leave timm too little.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import device_augment_batch, matmul_peak_flops  # noqa: E402
from trace_summary import summarize  # noqa: E402

NUM_CLASSES = 1000
# case -> (config file, config argument, timm model name)
CASES = {
    "deit_small": ("imagenet_deit.py", "small", "deit_small_patch16_224"),
    "vit_b16": ("imagenet_deit.py", "base", "deit_base_patch16_224"),
    "nest_tiny": ("imagenet_nest.py", "tiny", "nest_tiny_jx"),
    "nest_base": ("imagenet_nest.py", "base", "nest_base_jx"),
    "vit_l16": ("imagenet_deit.py", "base", "vit_large_patch16_224"),  # the DeiT-B recipe on ViT-L/16
}
DEFAULT_CASES = ("deit_small", "vit_b16", "nest_tiny", "nest_base")
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}
PROFILE_STEPS = 5


# ------------------------------------------------------------------------------------- FLOPs
def layer_flops(n: int, dim: int, mlp: int, heads: int, kv_heads: int, head_dim: int) -> float:
    """Forward FLOPs of one pre-norm transformer layer on one sequence of n tokens."""
    qkv = 2 * n * dim * (heads + 2 * kv_heads) * head_dim
    attn = 4 * n * n * heads * head_dim
    return qkv + attn + 2 * n * heads * head_dim * dim + 4 * n * dim * mlp


def forward_flops(model) -> float:
    """Analytic forward FLOPs per image of a nest_jax ViT/DeiT or NesT (see the module docstring)."""
    c = model.config
    if type(model).__name__ == "ViT":
        gh, gw = c.grid
        n = gh * gw + c.num_prefix
        stem = 2 * gh * gw * c.patch_size**2 * c.in_chans * c.dim
        heads = 2 * c.dim * c.num_classes * (c.num_prefix if c.pool == "token" else 1)
        return stem + c.depth * layer_flops(n, c.dim, c.mlp_dim, c.num_heads, c.num_heads, c.dim // c.num_heads) + heads
    total = 2 * (c.feature_sizes[0][0] * c.feature_sizes[0][1]) * c.patch_size**2 * c.in_chans * c.dims[0]
    for i, (dim, depth, heads) in enumerate(zip(c.dims, c.depths, c.heads)):
        blocks = c.blocks_per_level[i][0] * c.blocks_per_level[i][1]
        kv = 1 if c.attention == "multi_query" else heads
        total += blocks * depth * layer_flops(c.tokens_per_block, dim, int(dim * c.mlp_ratio), heads, kv, dim // heads)
        if i:
            h, w = c.feature_sizes[i - 1]
            total += 2 * h * w * 9 * c.dims[i - 1] * dim
    return total + 2 * c.dims[-1] * c.num_classes


def peak_flops() -> tuple[float, str]:
    kind = jax.devices()[0].device_kind
    for name, peak in PEAK_BF16.items():
        if name in kind:
            return peak, f"{kind} datasheet bf16 dense"
    import jax.numpy as jnp

    return matmul_peak_flops(n=1024, dtype=jnp.bfloat16), f"{kind} measured bf16 matmul"


# ------------------------------------------------------------------------------------- nest_jax
def load_config(case: str, batch: int, img: int, remat: bool = False, dtype: str = "config"):
    fname, arg, _ = CASES[case]
    spec = importlib.util.spec_from_file_location(f"cfg_{case}", os.path.join(REPO, "configs", fname))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config(arg)
    c.dataset.image_size = img
    c.train.global_batch_size = batch
    c.mesh.axes = dict(data=-1, fsdp=1, tensor=1)
    c.model.remat = remat
    if case == "vit_l16":
        c.model.name = CASES[case][2]
    if dtype != "config":
        c.model.overrides.dtype = dtype
    if ARGS is not None and ARGS.augment_on != "host":
        c.dataset.augment_on = ARGS.augment_on
    if ARGS is not None and ARGS.attn_impl:
        c.model.overrides.attn_impl = ARGS.attn_impl
    return c


def _sync(tree):
    jax.block_until_ready(tree)


def jax_case(case: str, batch: int, img: int, steps: int, remat: bool = False) -> dict:
    from flax import nnx

    from nest_jax.train.sharding import make_mesh
    from nest_jax.train.trainer import build_model, make_trainer

    config = load_config(case, batch, img, remat, ARGS.dtype)
    mesh = make_mesh(dict(config.mesh.axes), devices=jax.devices()[:1])
    tr = make_trainer(config, mesh, num_classes=NUM_CLASSES, num_train_steps=100_000, warmup_steps=100)
    flops = forward_flops(nnx.eval_shape(lambda: build_model(config, NUM_CLASSES, nnx.Rngs(0))))
    key = jax.random.key(0)
    batch_arrays = {
        "image": jax.device_put(jax.random.normal(key, (batch, img, img, 3)), tr.batch_sharding),
        "label": jax.device_put(jax.random.randint(key, (batch,), 0, NUM_CLASSES), tr.batch_sharding),
    }
    if config.dataset.augment_on == "device":  # uint8 crops + the host's random choices
        host = device_augment_batch(config.dataset, batch)
        batch_arrays = jax.device_put(dict(host, label=np.asarray(batch_arrays["label"])), tr.batch_sharding)
    state, rest = tr.init_state(), tr.init_rest()
    t0 = time.perf_counter()
    step = tr.train_step.lower(state, batch_arrays, rest, {}).compile()
    compile_s = time.perf_counter() - t0
    mem = step.memory_analysis()
    state, metrics = step(state, batch_arrays, rest, {})
    _sync(metrics)
    dispatch, t0 = [], time.perf_counter()
    for _ in range(steps):
        t1 = time.perf_counter()
        state, metrics = step(state, batch_arrays, rest, {})
        dispatch.append(time.perf_counter() - t1)  # the call returns before the device finishes
    _sync(metrics)
    step_s = (time.perf_counter() - t0) / steps
    profile = None
    if ARGS.profile:  # a few more steps under the profiler, after the timed ones
        trace_dir = os.path.join(ARGS.profile, case)
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            for _ in range(PROFILE_STEPS):
                state, metrics = step(state, batch_arrays, rest, {})
            _sync(metrics)
        profile = summarize(trace_dir, steps=PROFILE_STEPS)

    infer = jax.jit(lambda p, s, r, x: tr.model(p, s, r)(x, train=False))
    args = (state["params"], state.get("batch_stats"), rest, batch_arrays["image"])
    _sync(infer(*args))
    t0 = time.perf_counter()
    for _ in range(steps):
        out = infer(*args)
    _sync(out)
    infer_s = (time.perf_counter() - t0) / steps
    stats = jax.devices()[0].memory_stats() or {}
    return dict(
        train_img_s=batch / step_s,
        infer_img_s=batch / infer_s,
        step_ms=1e3 * step_s,
        dispatch_ms=1e3 * float(np.median(dispatch)),
        compile_s=compile_s,
        flops_fwd_per_img=flops,
        peak_bytes=stats.get("peak_bytes_in_use"),
        compiled_bytes=mem.argument_size_in_bytes
        + mem.output_size_in_bytes
        + mem.temp_size_in_bytes
        - mem.alias_size_in_bytes
        if mem is not None
        else None,
        profile=profile,
    )


# ------------------------------------------------------------------------------------- timm
def timm_case(case: str, batch: int, img: int, steps: int, compile_model: bool) -> dict:
    import timm
    import torch
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy

    cuda = torch.cuda.is_available() and not ARGS.cpu
    device = "cuda" if cuda else "cpu"
    bf16 = ARGS.dtype != "float32"  # "config": the shipped configs compute in bf16
    torch.set_num_threads(ARGS.torch_threads or os.cpu_count())
    torch.manual_seed(0)
    drop_path = load_config(case, batch, img).model.overrides.get("drop_path_rate", 0.2)
    model = (
        timm.create_model(
            CASES[case][2], pretrained=False, num_classes=NUM_CLASSES, drop_path_rate=drop_path, img_size=img
        )
        .to(device)
        .train()
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05, **({"fused": True} if cuda else {}))
    mix = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=NUM_CLASSES)
    loss_fn = SoftTargetCrossEntropy()
    x = torch.randn(batch, 3, img, img, device=device)
    y = torch.randint(0, NUM_CLASSES, (batch,), device=device)
    fwd = torch.compile(model) if compile_model else model

    def train():
        xm, ym = mix(x, y)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(fwd(xm), ym)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    def sync():
        if cuda:
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    train()
    sync()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        train()
    sync()
    step_s = (time.perf_counter() - t0) / steps
    model.eval()
    with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        fwd(x)
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            fwd(x)
        sync()
    infer_s = (time.perf_counter() - t0) / steps
    return dict(
        timm_train_img_s=batch / step_s,
        timm_infer_img_s=batch / infer_s,
        timm_compile_s=compile_s,
        timm_peak_bytes=torch.cuda.max_memory_allocated() if cuda else None,
    )


# ------------------------------------------------------------------------------------- max batch
def fits(case: str, batch: int, img: int, remat: bool) -> bool:
    """Compiles the train step and compares its memory analysis with the device's limit."""
    from nest_jax.train.sharding import make_mesh
    from nest_jax.train.trainer import make_trainer

    config = load_config(case, batch, img, remat)
    mesh = make_mesh(dict(config.mesh.axes), devices=jax.devices()[:1])
    tr = make_trainer(config, mesh, num_classes=NUM_CLASSES, num_train_steps=1000, warmup_steps=10)
    shape = {
        "image": jax.ShapeDtypeStruct((batch, img, img, 3), np.float32, sharding=tr.batch_sharding),
        "label": jax.ShapeDtypeStruct((batch,), np.int32, sharding=tr.batch_sharding),
    }
    try:
        m = tr.train_step.lower(tr.abstract_state, shape, jax.eval_shape(tr.init_rest), {}).compile().memory_analysis()
    except Exception as e:  # XLA refuses programs that cannot fit
        if "RESOURCE_EXHAUSTED" in str(e) or "memory" in str(e).lower():
            return False
        raise
    need = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
    return need <= 0.95 * jax.devices()[0].memory_stats()["bytes_limit"]


def max_batch(case: str, img: int, remat: bool, hi: int = 4096) -> int:
    lo = 0
    while lo < hi:  # largest b in [0, hi] with fits(b)
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(case, mid, img, remat) else (lo, mid - 1)
    return lo


# ------------------------------------------------------------------------------------- main
def main() -> None:
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=None, choices=sorted(CASES), help=f"default: {DEFAULT_CASES}")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--img-size", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--cpu", action="store_true", help="quick CPU record: batch 4, 64 px, timm eager")
    ap.add_argument(
        "--dtype",
        choices=("config", "float32"),
        default="config",
        help="config: the shipped configs' bf16 (timm: bf16 autocast); float32: both sides in float32",
    )
    ap.add_argument(
        "--attn-impl",
        choices=("auto", "cudnn", "xla", "explicit"),
        default=None,
        help="the models' attention kernel (default: the config's, i.e. auto)",
    )
    ap.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="CPU threads for PyTorch (default: all cores). On a loaded machine OpenMP's barriers "
        "make 2 threads slower than 1; pair with XLA_FLAGS=--xla_cpu_multi_thread_eigen=false",
    )
    ap.add_argument(
        "--augment-on",
        choices=("host", "device"),
        default="host",
        help="device: the step also runs RandAugment, jitter, normalization and erasing (dataset.augment_on)",
    )
    ap.add_argument("--no-timm", action="store_true")
    ap.add_argument(
        "--profile",
        default=None,
        help=f"folder: trace {PROFILE_STEPS} more nest_jax steps per case there and add a summary "
        "(benchmarks/trace_summary.py: device busy fraction, top kernels) to the record",
    )
    ap.add_argument("--max-batch", action="store_true", help="binary-search the largest batch (GPU only)")
    ap.add_argument("--json", default=os.path.join(REPO, "benchmarks", "gpu_train.json"))
    ARGS = args = ap.parse_args()
    cpu = args.cpu or jax.default_backend() == "cpu"
    cases = args.cases or (["deit_small", "nest_tiny"] if cpu else list(DEFAULT_CASES))
    batch, img = args.batch or (4 if cpu else 128), args.img_size or (64 if cpu else 224)
    steps = args.steps or (3 if cpu else 20)
    peak, peak_src = peak_flops()
    records = []
    for case in cases:
        rec = dict(
            case=case,
            config=":".join(CASES[case][:2]),
            batch=batch,
            img_size=img,
            steps=steps,
            dtype=args.dtype,
            attn_impl=args.attn_impl or "auto",
            augment_on=args.augment_on,
            torch_threads=args.torch_threads,
        )
        rec.update(jax_case(case, batch, img, steps))
        rec["mfu"] = 3 * rec["flops_fwd_per_img"] * rec["train_img_s"] / peak
        if not args.no_timm:
            rec.update(timm_case(case, batch, img, steps, compile_model=not cpu))
            rec["train_ratio"] = rec["train_img_s"] / rec["timm_train_img_s"]
            rec["infer_ratio"] = rec["infer_img_s"] / rec["timm_infer_img_s"]
        records.append(rec)
        print(json.dumps(rec), flush=True)
    largest = {}
    if args.max_batch and not cpu:
        for case in ("vit_l16", "nest_base"):
            for remat in (False, True):
                largest[f"{case} remat={remat}"] = max_batch(case, img, remat)
                print(case, remat, largest[f"{case} remat={remat}"], flush=True)
    gb = lambda b: f"{b / 2**30:.1f}" if b else "—"  # noqa: E731
    print(f"\npeak {peak / 1e9:.1f} GFLOP/s ({peak_src}); {jax.devices()[0].device_kind}\n")
    print(
        "| case | batch | img | train img/s nest_jax | timm | ratio | infer img/s nest_jax | timm | ratio | "
        "MFU | step ms | dispatch ms | compile s nest_jax / timm | peak GiB nest_jax / timm |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in records:
        t = lambda k, f="{:.1f}": f.format(r[k]) if r.get(k) is not None else "—"  # noqa: E731
        print(
            f"| {r['case']} | {r['batch']} | {r['img_size']} | {t('train_img_s')} | {t('timm_train_img_s')} | "
            f"{t('train_ratio', '{:.2f}')} | {t('infer_img_s')} | {t('timm_infer_img_s')} | {t('infer_ratio', '{:.2f}')} | "
            f"{100 * r['mfu']:.1f}% | {r['step_ms']:.1f} | {r['dispatch_ms']:.2f} | {t('compile_s')} / "
            f"{t('timm_compile_s')} | {gb(r.get('peak_bytes') or r.get('compiled_bytes'))} / "
            f"{gb(r.get('timm_peak_bytes'))} |"
        )
    for k, v in largest.items():
        print(f"largest batch {k}: {v}")
    meta = dict(
        date=datetime.date.today().isoformat(),
        device=jax.devices()[0].device_kind,
        backend=jax.default_backend(),
        jax=jax.__version__,
        peak_flops=peak,
        peak_source=peak_src,
        load_average=os.getloadavg(),
    )
    with open(args.json, "w") as f:
        json.dump(dict(meta, records=records, largest_batch=largest), f, indent=1)


ARGS = None
if __name__ == "__main__":
    main()
