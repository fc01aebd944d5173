"""The robustness evaluators run against a real train state (digits, a tiny ViT) and return flat
float metrics; the zero-drop point of the occlusion curve is the model's plain eval accuracy."""

from flax import nnx

from nest_jax.analysis import robustness_evaluators as R
from nest_jax.data import eval_iterator
from nest_jax.train import sharding as shd
from nest_jax.train.config_base import digits_vit_config
from nest_jax.train.trainer import make_trainer


def test_evaluators_run_on_a_train_state():
    config = digits_vit_config("vit_tiny_patch16_224")
    config.model.overrides = dict(patch_size=8, dim=16, depth=2, num_heads=2, mlp_dim=32)
    config.train.eval_batch_size = 64
    mesh = shd.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    trainer = make_trainer(config, mesh, num_classes=10, num_train_steps=1, warmup_steps=0)
    state, rest = trainer.init_state(), trainer.init_rest()
    cfg = dict(
        max_batches=1,
        ratios=(0.0, 0.5),
        grids=((1, 1), (2, 2)),
        corruptions=("contrast",),
        severities=(1,),
        steps=2,
        shots=(1,),
        seeds=1,
    )
    out = {}
    for name, cls in (
        ("occlusion", R.OcclusionEvaluator),
        ("patch_shuffle", R.PatchShuffleEvaluator),
        ("corruptions", R.CorruptionsEvaluator),
        ("per_block_tokens", R.PerBlockTokensEvaluator),
    ):
        out.update(cls(name, cfg, config=config, trainer=trainer, data=None).run(state, rest, 0))
    assert all(isinstance(v, float) for v in out.values())
    assert {"occlusion/top1/0", "patch_shuffle/1x1", "corruptions/mce", "per_block_tokens/top1/inference/1"} <= set(out)
    # Three views of the unperturbed model agree: no drop, the 1×1 shuffle and the last layer's tokens.
    assert out["occlusion/top1/0"] == out["patch_shuffle/1x1"] == out["per_block_tokens/top1/inference/1"]
    ev = R.OcclusionEvaluator("occlusion", cfg, config=config, trainer=trainer, data=None)
    batch = next(eval_iterator(config.dataset, global_batch_size=64, process_index=0, process_count=1))
    metrics = trainer.eval_step(state["params"], state.get("batch_stats"), batch, rest)
    assert abs(out["occlusion/top1/0"] - float(metrics["top1"]) / float(metrics["count"])) < 1e-6
    assert isinstance(ev.model(state, rest), nnx.Module)
