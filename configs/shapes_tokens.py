"""Shape tokens at small scale (Naseer et al. 2021, §3.5) on the procedural shapes × textures set.

Four runs, one command each (32 px, 8 classes, 4,000 training images; a few minutes each on a CPU):

    python -m nest_jax.main --config=configs/shapes_tokens.py:resnet_stylized --workdir=/tmp/shapes_rn_sin
    python -m nest_jax.main --config=configs/shapes_tokens.py:resnet_natural  --workdir=/tmp/shapes_rn_in
    python -m nest_jax.main --config=configs/shapes_tokens.py:deit_shape      --workdir=/tmp/shapes_deit_shape
    python -m nest_jax.main --config=configs/shapes_tokens.py:deit_distilled  --workdir=/tmp/shapes_deit_dist

- resnet_stylized: the shape-biased teacher, a small ResNet trained on STYLIZED images (random
  textures), no augmentation, no label smoothing (the paper's SIN recipe);
- resnet_natural: the same ResNet on natural images (shape and texture agree);
- deit_shape: a DeiT with class + shape tokens on natural images, the shape token distilled (hard)
  from resnet_stylized;
- deit_distilled: a DeiT with class + distillation tokens on natural images, distilled from
  resnet_natural.
Then: shape bias of each token on cue-conflict images, top-1 of each token, and the per-layer
cosine similarity of class vs shape / distillation tokens (`nest_jax.analysis.per_block_tokens`,
`shape_bias`). The section `dataset.shapes` (variant, num_classes, num_train, num_test, seed,
clutter, rotation, min_scale, max_scale) configures `nest_jax.data.shapes.ShapesTexturesSource`
(dataset name "shapes").
"""

from nest_jax.train.config_base import augment, base_config, teacher

RESNET = dict(layers=(1, 1, 1, 1), widths=(64, 128, 256, 512))
DEIT = dict(patch_size=4, dim=64, depth=4, num_heads=2, mlp_dim=256, drop_path_rate=0.0)


def _base(model: str, variant: str):
    c = base_config()
    c.model.name = model
    c.dataset.update(
        dict(
            name="shapes",
            image_size=32,
            num_channels=3,
            normalize="inception",
            augment=augment(),
            eval_resize="resize",
        )
    )
    c.dataset.shapes.update(dict(variant=variant, num_classes=8, num_train=4000, num_test=1000, seed=0))
    c.train.update(
        dict(
            global_batch_size=64,
            eval_batch_size=200,
            num_epochs=8,
            log_every_steps=50,
            checkpoint_every_steps=250,
            max_to_keep=1,
        )
    )
    c.optimizer.update(
        dict(name="adamw", lr=1e-3, weight_decay=0.05, wd_mask="timm", schedule="cosine", warmup_epochs=0.5)
    )
    return c


def get_config(arg: str = "deit_shape"):
    if arg in ("resnet_stylized", "resnet_natural"):
        c = _base("resnet50", "stylized" if arg == "resnet_stylized" else "natural")
        c.model.overrides = dict(RESNET)
        return c
    if arg == "deit_shape":
        c = _base("deit_tiny_shape_patch16_224", "natural")
        c.model.overrides = dict(DEIT)
        c.distill.shape = teacher("resnet50", "/tmp/shapes_rn_sin", kind="hard", alpha=0.5, **RESNET)
        return c
    if arg == "deit_distilled":
        c = _base("deit_tiny_distilled_patch16_224", "natural")
        c.model.overrides = dict(DEIT)
        c.distill.dist = teacher("resnet50", "/tmp/shapes_rn_in", kind="hard", alpha=0.5, **RESNET)
        return c
    raise ValueError(f"unknown run {arg!r}: resnet_stylized, resnet_natural, deit_shape or deit_distilled")
