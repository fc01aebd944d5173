"""Generator benchmarks: speed/memory at matched parameter count, and FID vs steps on digits.

    python benchmarks/generator.py speed --sizes 32 64 --batch 64          # -> benchmarks/generator_speed.json
    python benchmarks/generator.py fid --classifier /tmp/cls --steps 300    # -> generator_fid.{json,png}

speed: images/s of a jitted forward pass of the NesT generator, a plain ViT generator and the conv
(SAGAN-style) generator, each sized to the NesT generator's parameter count (conv: one width for
every stage; ViT: the width at a fixed depth), and peak memory from XLA's compiled memory analysis
(arguments + outputs + temporaries of the forward).
fid: trains the NesT and the conv generator on digits against the same NesT discriminator for the
same number of steps, once per seed, evaluating FID (features of a digits classifier, its workdir given) every
`--every` steps.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from nest_jax.models import create_model  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
NEST = {32: ("nest_gan_32", {}), 64: ("nest_gan_64", {})}


def count(m) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.Param)))


def abstract_count(name: str, **kw) -> int:
    m = nnx.eval_shape(lambda: create_model(name, rngs=nnx.Rngs(0), **kw))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(m, nnx.Param)))


def matched(size: int, target: int) -> dict[str, tuple[str, dict]]:
    """Conv and ViT generator settings whose parameter counts are closest to `target`."""
    ups = int(np.log2(size // 4))
    conv = min(
        (abs(abstract_count(f"sagan_generator_{size}", widths=(w,) * (ups + 1)) - target), w)
        for w in range(32, 1025, 16)
    )[1]
    vit = min(
        (abs(abstract_count(f"vit_generator_{size}", dim=d, num_heads=d // 64, depth=6) - target), d)
        for d in range(128, 1025, 64)
    )[1]
    return {
        "nest": NEST[size],
        "conv": (f"sagan_generator_{size}", dict(widths=(conv,) * (ups + 1))),
        "vit": (f"vit_generator_{size}", dict(dim=vit, num_heads=vit // 64, depth=6)),
    }


def speed(sizes, batch: int, repeats: int) -> list[dict]:
    rows = []
    for size in sizes:
        target = abstract_count(*NEST[size][:1], **NEST[size][1])
        for kind, (name, kw) in matched(size, target).items():
            model = create_model(name, rngs=nnx.Rngs(0), **kw)
            graphdef, state = nnx.split(model)
            fwd = jax.jit(lambda s, z: nnx.merge(graphdef, s)(z))
            z = jax.random.normal(jax.random.key(0), (batch, model.config.latent_dim))
            compiled = fwd.lower(state, z).compile()
            mem = compiled.memory_analysis()
            peak = (
                mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes - mem.alias_size_in_bytes
            )
            jax.block_until_ready(compiled(state, z))
            t = time.perf_counter()
            for _ in range(repeats):
                jax.block_until_ready(compiled(state, z))
            dt = (time.perf_counter() - t) / repeats
            row = dict(
                size=size,
                kind=kind,
                model=name,
                overrides={k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()},
                params=count(model),
                images_per_s=batch / dt,
                peak_mb=peak / 2**20,
                temp_mb=mem.temp_size_in_bytes / 2**20,
                batch=batch,
            )
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def fid_curve(classifier: str, steps: int, every: int, batch: int, samples: int, seeds: list[int]) -> dict:
    """{kind: {"params", "runs": [{"seed", "steps", "fid", "kid", "seconds"}, ...]}} per generator."""
    from nest_jax.train.gan import build_generator
    from nest_jax.train.loop import train_and_evaluate

    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "configs"))
    import digits_nest_gan

    curves = {}
    generators = {
        "nest": digits_nest_gan.get_config().gan.generator.to_dict(),
        # Same parameter budget class as the digits NesT generator (≈0.45M): widths 4×4 → 32 px.
        "conv": dict(name="sagan_generator_32", overrides=dict(widths=(128, 96, 64, 32))),
    }
    for kind, gen in generators.items():
        for seed in seeds:
            c = digits_nest_gan.get_config()
            c.seed, c.gan.generator = seed, gen
            c.train.num_train_steps, c.train.global_batch_size = steps, batch
            c.train.checkpoint_every_steps = steps
            c.evals.samples.every_steps = steps
            with c.unlocked():
                c.evals.fid = dict(
                    kind="fid", every_steps=every, prefix="", checkpoint=classifier, num_samples=samples, batch_size=256
                )
            workdir = f"/tmp/gen_fid_{kind}_{seed}"
            os.system(f"rm -rf {workdir}")
            t = time.time()
            train_and_evaluate(c, workdir)
            rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl")) if '"fid"' in line]
            run = dict(
                seed=seed,
                steps=[r["step"] for r in rows],
                fid=[r["fid"] for r in rows],
                kid=[r["kid"] for r in rows],
                seconds=time.time() - t,
            )
            curves.setdefault(kind, dict(params=count(build_generator(c, nnx.Rngs(0))), runs=[]))["runs"].append(run)
            print(kind, json.dumps(run), flush=True)
    return curves


def plot(curves: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for kind, c in curves.items():
        fid = np.asarray([r["fid"] for r in c["runs"]])  # (seeds, evaluations)
        steps = c["runs"][0]["steps"]
        label = f"{kind} generator ({c['params'] / 1e6:.2f}M), mean of {len(fid)} seeds"
        (line,) = ax.plot(steps, fid.mean(0), marker="o", label=label)
        ax.fill_between(steps, fid.min(0), fid.max(0), color=line.get_color(), alpha=0.2)
    ax.set_xlabel("training step")
    ax.set_ylabel("FID (digits classifier features)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    s.add_argument("--batch", type=int, default=64)
    s.add_argument("--repeats", type=int, default=5)
    s.add_argument("--out", default=os.path.join(HERE, "generator_speed.json"))
    f = sub.add_parser("fid")
    f.add_argument("--classifier", required=True, help="workdir of a digits classifier run")
    f.add_argument("--steps", type=int, default=300)
    f.add_argument("--every", type=int, default=50)
    f.add_argument("--batch", type=int, default=32)
    f.add_argument("--samples", type=int, default=1000)
    f.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    f.add_argument("--out", default=os.path.join(HERE, "generator_fid"))
    a = p.parse_args()
    meta = dict(
        device=str(jax.devices()[0].device_kind),
        backend=jax.default_backend(),
        jax=jax.__version__,
        date=time.strftime("%Y-%m-%d"),
        argv=sys.argv[1:],
    )
    if a.cmd == "speed":
        rows = speed(a.sizes, a.batch, a.repeats)
        with open(a.out, "w") as fh:
            json.dump(dict(meta, rows=rows), fh, indent=1)
    else:
        curves = fid_curve(a.classifier, a.steps, a.every, a.batch, a.samples, a.seeds)
        with open(a.out + ".json", "w") as fh:
            json.dump(dict(meta, curves=curves), fh, indent=1)
        plot(curves, a.out + ".png")


if __name__ == "__main__":
    jnp.zeros(())  # initialize the backend before timing anything
    main()
