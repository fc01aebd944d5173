"""What was tried to train the `--full` tier's stylized ViT beyond its 800 steps (REPRODUCTIONS.md):

    python benchmarks/stylized_trials.py           # ~25 min on 2 CPU cores

The ViT of `benchmarks/reproduce.py --full` trained on the stylized world's first 9000 training
images with other learning rates, twice the steps, or starting from the natural-world ViT's weights.
Each trial reports top-1 on the remaining 1000 stylized training images (held out; the test split
is not used) and on 1000 of its own training images, and the class token's shape bias on the
cue-conflict test images. Writes benchmarks/stylized_trials.json, which the report quotes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from flax import nnx

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import reproduce as RP  # noqa: E402
import reproduce_claims as C  # noqa: E402
import shape_tokens as ST  # noqa: E402

HELD_OUT = 1000
# (start, learning rate, steps); the reproduce run itself uses ("scratch", 1e-3, 800).
TRIALS = (("scratch", 1e-3, 800), ("scratch", 3e-4, 800), ("scratch", 1e-3, 1600), ("scratch", 3e-4, 1600),
          ("natural", 1e-3, 800))  # fmt: skip


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join(HERE, "stylized_trials.json"))
    args = p.parse_args(argv)
    tier = RP.TIERS["full"]
    sty, cue = RP.arrays(tier, "stylized", "train"), RP.arrays(tier, "cue_conflict", "test")
    x, y = sty["image"][:-HELD_OUT], sty["label"][:-HELD_OUT]
    xv, yv = sty["image"][-HELD_OUT:], sty["label"][-HELD_OUT:]
    natural = None
    results = []
    for start, lr, steps in TRIALS:
        model = RP.build("vit_stylized", tier, seed=4)
        if start == "natural":
            if natural is None:
                nat = RP.arrays(tier, "natural", "train")
                natural = RP.build("vit_natural", tier, seed=0)
                ST.train(natural, nat["image"], nat["label"], tier["steps"], bs=tier["batch"], seed=0)
            nnx.update(model, nnx.state(natural, nnx.Param))
        t0 = time.time()
        ST.train(model, x, y, steps, lr=lr, bs=tier["batch"], seed=4)
        r = dict(start=start, lr=lr, steps=steps, seconds=round(time.time() - t0, 1))
        r.update(held_out_top1=C.top1(model, xv, yv), train_top1=C.top1(model, x[:HELD_OUT], y[:HELD_OUT]))
        r["shape_bias"] = C.token_shape_bias(model, cue)["cls"]
        print(json.dumps(r), flush=True)
        results.append(r)
    with open(args.out, "w") as f:
        json.dump(
            dict(date=time.strftime("%Y-%m-%d"), command="python benchmarks/stylized_trials.py", trials=results),
            f,
            indent=1,
        )
    return results


if __name__ == "__main__":
    main()
