"""Checkpoint save and restore time of the main job's train state, local disk vs a gs:// bucket
served by fake-gcs-server on 127.0.0.1 (tests/gcs_emulator.py): what the object-store protocol
costs per checkpoint (many small HTTP requests), without a real network's latency.

The state is configs/digits_nest_tiny.py's model params plus AdamW's two moments (the train
state's bulk), saved with `nest_jax.train.checkpoint.Checkpointer` (orbax, checksums, retention)
and restored into the same shardings.

    python benchmarks/gcs_checkpoint.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.gcs_emulator import BUCKET, Emulator, emulator_env  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    emulator = Emulator()
    os.environ.update(emulator_env(emulator.url))  # before gcsfs and TensorStore are first used
    import jax
    import numpy as np
    import optax
    from flax import nnx

    from configs.digits_nest_tiny import get_config
    from nest_jax.models import create_model
    from nest_jax.train.checkpoint import Checkpointer

    cfg = get_config()
    model = create_model(cfg.model.name, num_classes=10, **cfg.model.overrides)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    opt = optax.adamw(1e-3).init(params)
    state = {"params": params, "mu": opt[0].mu, "nu": opt[0].nu}
    state = jax.device_put(state)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    shardings = jax.tree.map(lambda x: x.sharding, state)
    n = sum(x.size for x in jax.tree.leaves(state))
    print(f"state: {n:,} floats ({n * 4 / 2**20:.1f} MiB) in {len(jax.tree.leaves(state))} arrays")
    with tempfile.TemporaryDirectory() as local:
        warm = Checkpointer(os.path.join(local, "warm-up"), max_to_keep=1)  # compiles the checksums
        warm.save(1, state)
        warm.wait()
        jax.block_until_ready(warm.restore(abstract, shardings, 1))
        warm.close()
        for where, workdir in (
            ("local disk", os.path.join(local, "bench")),
            ("fake-gcs-server", f"gs://{BUCKET}/bench"),
        ):
            ckpt = Checkpointer(workdir, max_to_keep=2)
            saves, restores = [], []
            for step in range(1, args.repeats + 1):
                t = time.perf_counter()
                ckpt.save(step, state)
                ckpt.wait()
                saves.append(time.perf_counter() - t)
                t = time.perf_counter()
                out = ckpt.restore(abstract, shardings, step)
                jax.block_until_ready(out)
                restores.append(time.perf_counter() - t)
            ckpt.close()
            print(
                f"{where:16s} save {np.median(saves):.2f} s  restore {np.median(restores):.2f} s "
                f"(median of {args.repeats}; first save {saves[0]:.2f} s)"
            )
    emulator.stop()


if __name__ == "__main__":
    main()
