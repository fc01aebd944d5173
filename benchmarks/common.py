"""Benchmark helpers: wall-clock timing of blocking callables, the machine's measured matmul peak.

Timings on a shared machine are noisy; callers should alternate the systems they compare and report
ratios measured side by side, not absolute numbers from separate runs.
"""

from __future__ import annotations

import platform
import statistics
import subprocess
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp


def pin_two_level_digits_nest(config) -> None:
    """The earlier 2-level digits NesT recipe (364,810 parameters:
    blocks of 4 × 4 tokens, 2 levels of 3 + 4 layers, width 64, 2 heads; no augmentation): the
    model the data-efficiency and representation figures in BENCHMARKS.md were measured with."""
    config.model.overrides = dict(
        patch_size=4, block_size=4, dims=(64, 64), depths=(3, 4), heads=(2, 2), drop_path_rate=0.0
    )
    config.dataset.augment.affine = dict(degrees=0.0, translate=0.0, scale=1.0)


def cpu_model() -> str:
    """`lscpu` model name (falls back to `platform.processor()`)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def time_calls(fn: Callable[[], None], iters: int) -> float:
    """Seconds per call of `fn` (which must block until its work is done), averaged over `iters`."""
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def matmul_peak_flops(n: int = 2048, iters: int = 5, dtype=jnp.float32) -> float:
    """Achieved FLOP/s of a jitted (n, n) @ (n, n) matmul: the machine's practical dense peak.

    The best of `iters` timings is taken (a peak, not a typical value), so MFU is not flattered
    by a peak measured while the machine was busy.
    """
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    mm = jax.jit(jnp.matmul)
    mm(a, b).block_until_ready()
    best = min(time_calls(lambda: mm(a, b).block_until_ready(), 1) for _ in range(iters))
    return 2.0 * n**3 / best


def compiled_flops(compiled) -> float:
    """FLOPs of one call of a compiled XLA executable, from XLA's cost analysis (0 if unknown)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax: one dict per device program
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", 0.0))


def device_augment_batch(ds_cfg, batch: int, seed: int = 0) -> dict:
    """A host batch as `dataset.augment_on="device"` sends it, for step timings: random uint8
    crops of `ds_cfg.image_size` and each example's random choices from the host samplers."""
    import numpy as np

    from nest_jax.data.preprocess import device_choices, example_rng
    from nest_jax.data.train_stream import stack

    size, channels = int(ds_cfg.image_size), int(ds_cfg.num_channels)
    sample = device_choices(ds_cfg)
    choices = stack([sample(lambda stage, i=i: example_rng(seed, 0, i, stage)) for i in range(batch)])
    images = np.random.default_rng(seed).integers(0, 256, (batch, size, size, channels), dtype=np.uint8)
    labels = np.zeros(batch, np.int32)
    return {"image": images, "label": labels, "augment": choices}
