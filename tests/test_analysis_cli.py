"""`python -m nest_jax.analyze` end to end (in process, tiny ViT on digits) and the training-time
evaluators, checked against the NumPy references of the metric tests."""

import json
import types

import numpy as np
import pytest
from flax import nnx

from nest_jax.analyze.__main__ import main
from nest_jax.models import create_model
from nest_jax.train.evaluators import EvalData, flatten, make_evaluator, model_fn_of
from nest_jax.train.sharding import make_mesh
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
    cka = json.loads((out / "cka.json").read_text())
    assert set(cka) == {"normal", "ablated", "normal|ablated"}
    np.testing.assert_allclose(np.diag(cka["normal"]["matrix"]), 1.0, atol=1e-5)
    assert np.asarray(cka["normal|ablated"]["matrix"]).shape == (2, 2)
    ratios = json.loads((out / "norm_ratio.json").read_text())
    assert {b: set(g) for b, g in ratios["normal"].items()} == {"attn": {"cls", "spatial"}, "mlp": {"cls", "spatial"}}
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


def test_representation_evaluators_match_numpy_references():
    """cka and attention_distance through the evaluator contract (model_fn, EvalData) against the
    NumPy references; the padded rows of the last batch are left out, not counted."""
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
    rng = np.random.default_rng(0)
    images = [rng.normal(size=(8, 16, 16, 3)).astype(np.float32) for _ in range(2)]
    padded = np.concatenate([images[0][:4], np.zeros_like(images[0][:4])])
    data = EvalData(_config(16), _Batches(images + [padded]), make_mesh({"data": -1}))
    model_fn, state = model_fn_of(model)
    out = flatten(make_evaluator("cka", model_fn, data, {"pool": "mean"}, where="test").run(state, 0))
    feats = [
        [np.asarray(h[:, 1:].mean(1), np.float64) for h in model(x, capture="layers")[1]["layers"]]
        for x in images + [images[0][:4]]
    ]
    np.testing.assert_allclose(out["matrix"], np_minibatch(feats, feats), atol=1e-4)
    assert out["first_last"] == pytest.approx(out["matrix"][0, 2]) and out["examples"] == 20
    out = flatten(make_evaluator("attention_distance", model_fn, data, {}, where="test").run(state, 0))
    weights = [
        np.concatenate([np.asarray(model(x, capture="attention")[1]["attention"][i]) for x in images + [padded[:4]]])
        for i in range(3)
    ]
    want = np.stack([np_distance(w, (4, 4), 4, 1, False) for w in weights])
    np.testing.assert_allclose(out["heads"], want, rtol=1e-4)
    assert out["layer1"] == pytest.approx(want[1].mean(), rel=1e-4)


class _Batches:
    """A data module serving fixed batches (label 0; the last batch's second half is padding)."""

    def __init__(self, images):
        self.images = images

    def get_info(self, ds_cfg):
        return types.SimpleNamespace(num_classes=10)

    def eval_iterator(self, ds_cfg, *, global_batch_size, process_index, process_count):
        for i, x in enumerate(self.images):
            mask = np.ones(len(x), np.float32)
            if i == len(self.images) - 1:
                mask[4:] = 0
            yield {"image": x, "label": np.zeros(len(x), np.int32), "mask": mask}


def _config(size):
    from nest_jax.train.config_base import base_config

    c = base_config()
    c.dataset.image_size, c.dataset.normalize, c.train.eval_batch_size = size, "imagenet", 8
    return c
