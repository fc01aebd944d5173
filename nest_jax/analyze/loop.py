"""One pass over the evaluation split feeding every requested analysis; JSON, PNG and TensorBoard out.

The forward pass of each model is one jitted function recording the union of what the analyses
need; the batch is sharded over all local devices along its batch axis when it divides evenly
(parameters replicated), so large evaluation sets run data-parallel. Padding rows of the last
batch are dropped before the analyses see it.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from nest_jax.analysis.representations import forward_fn
from nest_jax.analyze.runners import ANALYSES, to_json


def _batches(config, batch_size: int, max_batches: int):
    from nest_jax import data

    total = data.num_eval_steps(config.dataset, batch_size)
    if max_batches:
        total = min(total, max_batches)
    it = data.eval_iterator(config.dataset, global_batch_size=batch_size, process_index=0, process_count=1)
    for i, batch in enumerate(it):
        if i >= total:
            break
        yield batch


def _progress(iterable, total: int, desc: str):
    try:
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit="batch")
    except ImportError:  # tqdm is optional
        return iterable


def analyse(
    names: list[str],
    subjects: list,
    config: Any,
    *,
    out: str,
    batch_size: int = 256,
    max_batches: int = 0,
    pool: str = "all",
    kernel: str = "linear",
    num_classes: int = 10,
    step: int = 0,
    skip_inapplicable: bool = False,
    options: dict | None = None,
) -> dict[str, dict]:
    """Runs analyses `names` on `subjects` over config's eval split; writes under `out`; returns numbers.

    skip_inapplicable: leave out (with a note on stderr) analyses that do not apply to these models
    (e.g. localization on a ResNet) instead of raising their UserError.
    options: settings of the robustness analyses (`--opt KEY=VALUE`), each read by those that know it.
    """
    import sys

    from nest_jax import data
    from nest_jax.errors import UserError

    runners, kept = [], []
    for n in names:
        try:
            runners.append(
                ANALYSES[n](subjects, pool=pool, kernel=kernel, num_classes=num_classes, config=config, options=options)
            )
            kept.append(n)
        except UserError as e:
            if not skip_inapplicable:
                raise
            print(f"note: skipping {n}: {e}", file=sys.stderr)
    names = kept
    capture = sorted({c for r in runners for c in r.capture})
    if any(r.needs_data for r in runners):
        # robustness analyses run the model themselves on perturbed copies of the batch
        forward = any(r.needs_data and not r.wants_batches for r in runners)
        fwd = [forward_fn(s.model, capture) for s in subjects] if forward else []
        devices = jax.local_devices()
        mesh = Mesh(np.array(devices), ("data",))
        total = data.num_eval_steps(config.dataset, batch_size)
        total = min(total, max_batches) if max_batches else total
        for batch in _progress(_batches(config, batch_size, max_batches), total, "analysing"):
            for r in runners:
                if r.wants_batches:
                    r.add_batch(batch)
            if not forward:
                continue
            images = np.asarray(batch["image"], np.float32)
            if len(images) % len(devices) == 0:
                images = jax.device_put(images, NamedSharding(mesh, P("data")))
            valid = np.asarray(batch["mask"]) > 0
            inters = []
            for f in fwd:
                _, inter = f(images)
                if not valid.all():
                    inter = jax.tree.map(lambda a: a[valid], inter)
                inters.append(inter)
            labels = np.asarray(batch["label"])[valid]
            for r in runners:
                if not r.wants_batches:
                    r.update(inters, labels)
    os.makedirs(out, exist_ok=True)
    results = {}
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(os.path.join(out, "tensorboard"))
    try:
        for name, r in zip(names, runners):
            numbers, figures = r.finish()
            results[name] = numbers
            with open(os.path.join(out, f"{name}.json"), "w") as f:
                json.dump(to_json(numbers), f)
            for stem, fig in figures.items():
                fig.savefig(os.path.join(out, f"{stem}.png"), dpi=110)
                writer.add_figure(f"{name}/{stem}", fig, global_step=step)
    finally:
        writer.close()
    return results
