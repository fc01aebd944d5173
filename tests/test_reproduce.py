"""`python benchmarks/reproduce.py --smoke`: the whole pipeline (world, training, caching, every
measured claim, the report) on tiny models trained for two steps."""

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_smoke_tier_writes_every_claim_with_a_verdict(tmp_path):
    reproduce = _load("reproduce")
    out = tmp_path / "REPRODUCTIONS.md"
    result = reproduce.main(["--smoke", f"--out={out}", f"--checkpoints={tmp_path / 'ckpt'}"])
    (cached,) = (tmp_path / "ckpt").iterdir()  # one folder per tier and settings
    assert cached.name.startswith("smoke-")
    cached_models = [*reproduce.MODELS, *reproduce.A.FINETUNED]
    assert sorted(p.name for p in cached.iterdir()) == sorted(f"{m}.npz" for m in cached_models)
    text = out.read_text()
    rows = result["rows"]
    assert len(rows) == 21
    for r in rows:
        assert r["verdict"] in ("reproduced", "partly", "not reproduced")
        assert r["models"] and set(r["models"]) <= set(reproduce.MODELS)  # what the undertrained flag reads
        assert f"| {r['claim']} |" in text and f"**{r['verdict']}**" in text
        for fig in re.findall(r"docs/reproductions/[\w.]+\.png", r["figure"]):
            assert (tmp_path / fig).is_file()
    for claim, _ in reproduce.NOT_RUN:
        assert f"| {claim} |" in text
    counts = re.search(r"Verdicts: (\d+) reproduced, (\d+) partly, (\d+) not reproduced", text)
    assert counts and sum(map(int, counts.groups())) == len(rows)
    assert all(0.0 <= a <= 1.0 for a in result["accuracy"].values()) and len(result["accuracy"]) == len(
        reproduce.MODELS
    )


def test_localization_helpers_on_hand_made_masks():
    """The boxes and coverages the NesT localization row rests on, against values worked by hand."""
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    nest = _load("reproduce_nest")
    mask = np.zeros((2, 8, 8), bool)
    mask[0, 2:5, 3:7] = True  # a 3×4 object
    assert nest.mask_box(mask[0]) == (2, 3, 5, 7)
    assert nest.mask_box(mask[1]) == (0, 0, 8, 8)  # no object: the whole image
    boxes = np.asarray([[2, 3, 4, 5], [0, 0, 4, 4]])
    np.testing.assert_allclose(nest.box_coverage(boxes, mask), [1.0, 0.0])
    np.testing.assert_allclose(nest.box_coverage(np.asarray([[0, 0, 8, 8]] * 2), mask), [12 / 64, 0.0])
    gt = np.asarray([[2, 3, 5, 7], [0, 0, 5, 5]])  # mean size 4 × 4.5
    np.testing.assert_array_equal(nest.centre_boxes(gt, 8), [[2, 2, 6, 6]] * 2)


def test_weights_move_to_a_larger_grid_with_the_position_table_resized():
    """`with_weights_of` copies every parameter; at the same size the logits are the source's, at a
    larger size only the patch rows of the position table change (the class-token row is kept)."""
    import sys

    import jax
    from flax import nnx

    from nest_jax.models import create_model

    sys.path.insert(0, str(REPO / "benchmarks"))
    ab = _load("reproduce_ablations")
    kw = dict(num_classes=3, patch_size=8, dim=16, depth=1, num_heads=2, mlp_dim=32)
    make = lambda size, seed: create_model("vit_tiny_patch16_224", img_size=size, rngs=nnx.Rngs(seed), **kw)  # noqa: E731
    src = make(32, 0)
    x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
    same = ab.with_weights_of(src, make(32, 1))
    np.testing.assert_array_equal(np.asarray(same(x, train=False)), np.asarray(src(x, train=False)))
    big = ab.with_weights_of(src, make(48, 1))
    pos_src, pos_big = np.asarray(src.pos_embed[...]), np.asarray(big.pos_embed[...])
    assert pos_src.shape == (1, 1 + 16, 16) and pos_big.shape == (1, 1 + 36, 16)
    np.testing.assert_array_equal(pos_big[:, 0], pos_src[:, 0])
    np.testing.assert_array_equal(np.asarray(big.head.kernel[...]), np.asarray(src.head.kernel[...]))
