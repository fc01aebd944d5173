"""`python -m nest_jax.analyze` end to end (in process, tiny ViT on digits) and the training-time
evaluators, checked against the NumPy references of the metric tests."""

import json
import types

import jax
import numpy as np
import pytest
from flax import nnx

from nest_jax.analysis.evaluators import AttentionDistance, CKASnapshot
from nest_jax.analyze.__main__ import main
from nest_jax.models import create_model
from tests.test_analysis_attention_norms import np_distance
from tests.test_analysis_cka import np_minibatch

CONFIG = """
from nest_jax.train.config_base import digits_vit_config
def get_config():
    c = digits_vit_config("vit_tiny_patch16_224")
    c.model.overrides = dict(patch_size=8, dim=16, depth=2, num_heads=2, mlp_dim=32)
    return c
"""


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny_vit.py"
    path.write_text(CONFIG)
    return str(path)


def test_cli_compares_normal_and_skip_removed_models(config_file, tmp_path):
    out = tmp_path / "out"
    rc = main(
        [
            "cka,norm_ratio,pos_embed",
            f"--config={config_file}",
            f"--out={out}",
            "--batch-size=32",
            "--max-batches=1",
            f"--compare-config={config_file}",
            "--compare-set=model.overrides.skip_removed=(0,)",
            "--label=normal",
            "--compare-label=ablated",
        ]
    )
    assert rc == 0
    cka = json.loads((out / "cka.json").read_text())["matrices"]
    assert set(cka) == {"normal", "ablated", "normal|ablated"}
    np.testing.assert_allclose(np.diag(cka["normal"]), 1.0, atol=1e-5)
    assert np.asarray(cka["normal|ablated"]).shape == (2, 2)
    ratios = json.loads((out / "norm_ratio.json").read_text())["ratios"]
    assert set(ratios["normal"]) == {"attn/cls", "attn/spatial", "mlp/cls", "mlp/spatial"}
    for stem in ("cka_normal", "cka_normal_vs_ablated", "norm_ratio_ablated", "pos_embed_normal"):
        assert (out / f"{stem}.png").stat().st_size > 1000
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


def test_cli_bad_input_is_one_line_exit_2(config_file, tmp_path, capsys):
    assert main(["nonsense", f"--config={config_file}", f"--out={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown analysis 'nonsense'" in err[0] and "cka" in err[0]
    assert main(["cka", "--config=/no/such.py", f"--out={tmp_path}"]) == 2
    assert "config file /no/such.py does not exist" in capsys.readouterr().err
    assert main(["cka", f"--config={config_file}", "--checkpoint=/no/such/dir", f"--out={tmp_path}"]) == 2
    assert "does not exist" in capsys.readouterr().err


class _Trainer:
    """The piece of the trainer the evaluators use: `model(params, batch_stats, rest)`."""

    def __init__(self, model):
        self.graphdef, self.params, self.rest = nnx.split(model, nnx.Param, ...)
        self.batch_sharding = None

    def model(self, params, stats, rest):
        return nnx.merge(self.graphdef, nnx.State(params), rest)


def test_evaluators_match_numpy_references():
    model = create_model(
        "vit_tiny_patch16_224",
        num_classes=10,
        img_size=16,
        rngs=nnx.Rngs(0),
        patch_size=4,
        dim=16,
        depth=3,
        num_heads=2,
        mlp_dim=32,
    )
    trainer = _Trainer(model)
    rng = np.random.default_rng(0)
    batches = [
        dict(
            image=rng.normal(size=(8, 16, 16, 3)).astype(np.float32),
            label=np.zeros(8, np.int32),
            mask=np.ones(8, np.float32),
        )
        for _ in range(2)
    ]
    batches.append(dict(batches[0], mask=np.r_[np.ones(4), np.zeros(4)].astype(np.float32)))  # padded: skipped
    data = types.SimpleNamespace(eval_iterator=lambda *a, **k: iter(batches))
    config = types.SimpleNamespace(dataset=None, train={"eval_batch_size": 8})
    state = {"params": nnx.to_pure_dict(trainer.params)}
    kw = dict(config=config, trainer=trainer, data=data)
    out = CKASnapshot("cka", {"num_batches": 5, "pool": "mean"}, **kw).run(state, trainer.rest, 0)
    feats = [
        [np.asarray(h[:, 1:].mean(1), np.float64) for h in model(b["image"], capture="layers")[1]["layers"]]
        for b in batches[:2]
    ]
    np.testing.assert_allclose(out["cka/matrix"], np_minibatch(feats, feats), atol=1e-4)
    assert out["cka/first_last"] == pytest.approx(out["cka/matrix"][0, 2])
    out = AttentionDistance("dist", {"num_batches": 2}, **kw).run(state, trainer.rest, 0)
    weights = [
        np.concatenate([np.asarray(model(b["image"], capture="attention")[1]["attention"][i]) for b in batches[:2]])
        for i in range(3)
    ]
    want = np.stack([np_distance(w, (4, 4), 4, 1, False) for w in weights])
    np.testing.assert_allclose(out["dist/heads"], want, rtol=1e-4)
    assert out["dist/layer1"] == pytest.approx(want[1].mean(), rel=1e-4)
    assert jax.tree.leaves(out)
