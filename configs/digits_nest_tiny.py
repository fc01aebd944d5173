"""THE DEFAULT job: a 0.26M-parameter NesT on scikit-learn digits, ≥ 99.5% test top-1 in < 150 s on 2 cores.

    python -m nest_jax.main --config=configs/digits_nest_tiny.py --workdir=/tmp/nest_digits

Target: ≥ 99.5% top-1 on the 450 test digits for every seed in ≤ 150 s on a 2-core CPU, compile
included (measured figures: BENCHMARKS.md, "The main job over five seeds"; how the recipe was
chosen on a held-out part of the training images: docs/main_job.md). The model is
`nest_tiny_cifar`'s design made small (`config_base.digits_nest_overrides`): patch 4 (8 × 8 tokens,
one per original digit pixel), blocks of 2 × 2 tokens, 3 levels (16 → 4 → 1 blocks) of 1, 1 and 2
layers, width 64, 2 heads, multi-query attention. Training images are rotated (±15°), zoomed
(×1/1.15 to ×1.15) and shifted by up to 10% of the image (sub-pixel) at random, the classic
distortions of digit recognition (Simard et al. 2003); batch 64, AdamW lr 2e-3, cosine schedule.
"""

from nest_jax.train.config_base import augment, base_config, digits_nest_overrides


def get_config():
    c = base_config()
    c.model.name = "nest_tiny_cifar"
    c.model.overrides = digits_nest_overrides()
    c.dataset.update(
        dict(
            name="digits",
            train_split="train",
            eval_split="test",
            image_size=32,
            num_channels=1,
            normalize="digits",
            augment=augment(affine=dict(degrees=15.0, translate=0.1, scale=1.15)),
            eval_resize="resize",
            resize_method="bilinear",
        )
    )
    c.train.update(
        dict(
            global_batch_size=64,
            eval_batch_size=128,
            num_epochs=35,
            log_every_steps=50,
            eval_every_steps=0,
            checkpoint_every_steps=200,
            max_to_keep=2,
        )
    )
    c.optimizer.update(
        dict(name="adamw", lr=2e-3, weight_decay=0.05, wd_mask="nest", schedule="cosine", warmup_epochs=1.0)
    )
    return c
