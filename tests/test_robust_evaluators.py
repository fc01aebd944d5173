"""The robustness evaluators run against a real train state (digits, a tiny ViT) through the
evaluator contract and read their images through the injected data module (the old evaluators
imported `nest_jax.data` themselves and read as process 0 of 1); the zero-drop point of the
occlusion curve is the model's plain eval accuracy."""

import jax
import numpy as np

from nest_jax import data as nest_data
from nest_jax.train import sharding as shd
from nest_jax.train.config_base import digits_vit_config
from nest_jax.train.evaluators import EvalData, build_evaluators
from nest_jax.train.trainer import make_trainer


class RecordingData:
    """`nest_jax.data`, recording the process shard every evaluation read asks for."""

    def __init__(self):
        self.reads = []

    def get_info(self, ds_cfg):
        return nest_data.get_info(ds_cfg)

    def eval_iterator(self, ds_cfg, **kw):
        self.reads.append((kw["process_index"], kw["process_count"]))
        return nest_data.eval_iterator(ds_cfg, **kw)


def test_evaluators_run_on_a_train_state_through_the_injected_data_module():
    config = digits_vit_config("vit_tiny_patch16_224")
    config.model.overrides = dict(patch_size=8, dim=16, depth=2, num_heads=2, mlp_dim=32)
    config.train.eval_batch_size = 64
    batches = dict(max_batches=1)
    config.evals = dict(
        val=dict(kind="classification", max_batches=1, prefix="eval_"),
        occlusion=dict(kind="occlusion", ratios=(0.0, 0.5), salient=False, **batches),
        patch_shuffle=dict(kind="patch_shuffle", grids=((1, 1), (2, 2)), **batches),
        corruptions=dict(kind="corruptions", corruptions=("contrast",), severities=(1,), **batches),
        per_block_tokens=dict(kind="per_block_tokens", **batches),
    )
    mesh = shd.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    trainer = make_trainer(config, mesh, num_classes=10, num_train_steps=1, warmup_steps=0)
    state, rest = trainer.init_state(), trainer.init_rest()
    module = RecordingData()
    evaluators = build_evaluators(
        config, lambda s: trainer.model(s["params"], s.get("batch_stats"), rest), EvalData(config, module, mesh)
    )
    out = {}
    for ev in evaluators.values():
        out.update(ev.run(state, 0))
    # Metrics are floats; the x-axes of the curves (drop ratios, occluded cells) are 1-d arrays.
    assert all(isinstance(v, float) or np.ndim(v) == 1 for v in out.values())
    assert np.ndim(out["occlusion/ratios"]) == 1 and isinstance(out["occlusion/top1/1"], float)
    assert {
        "occlusion/top1/0",
        "patch_shuffle/top1/1x1",
        "corruptions/mce",
        "per_block_tokens/top1/inference/1",
    } <= set(out)
    # Three views of the unperturbed model agree: no drop, the 1×1 shuffle and the last layer's tokens,
    # and they are the classification evaluator's top-1 on the same batch.
    assert out["occlusion/top1/0"] == out["patch_shuffle/top1/1x1"] == out["per_block_tokens/top1/inference/1"]
    assert abs(out["occlusion/top1/0"] - out["eval_top1"]) < 1e-6 and out["eval_count"] == 64
    assert module.reads and set(module.reads) == {(jax.process_index(), jax.process_count())}
    assert np.isfinite(out["corruptions/mce"])
