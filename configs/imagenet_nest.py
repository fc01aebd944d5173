"""NesT-T/S/B on ImageNet-1k, the official recipe (Zhang et al. 2022 and the official code; docs/recipes.md).

    python -m nest_jax.main --config=configs/imagenet_nest.py:base --workdir=gs://bucket/nest_base \
        --config.dataset.data_dir=/path/to/tfds

Paper top-1 after 300 epochs: 81.5 / 83.3 / 83.8. AdamW lr 2.5e-4 × batch/256 (1024 → 1e-3), wd 0.05
on all but the position embeddings, 20 warmup epochs, cosine to 0; inception crop (min area 0.05),
flip, RandAugment(2, 9±0.5, p 0.5), colour jitter 0.3, random erasing 0.25, mixup 0.8 / CutMix 1.0
with NesT sampling, label smoothing 0.1; eval bilinear resize 256 + centre crop 224. Drop path is
the variant's (0.2 / 0.3 / 0.5). Parameters FSDP-sharded over `fsdp` when the mesh has one.
"""

from nest_jax.train.config_base import augment, base_config


def get_config(arg: str = "tiny"):
    if arg not in ("tiny", "small", "base"):
        raise ValueError(f"config argument must be tiny, small or base, got {arg!r}")
    c = base_config()
    c.model.name = f"nest_{arg}"
    c.model.overrides = dict(dtype="bfloat16")
    c.dataset.update(
        dict(
            name="imagenet2012",
            image_size=224,
            num_channels=3,
            normalize="imagenet",
            train_split="train",
            eval_split="validation",
            eval_resize="resize_crop",
            crop_fraction=0.875,
            resize_method="bilinear",
            augment=augment(
                inception_crop=True,
                min_area=0.05,
                flip=True,
                color_jitter=0.3,
                random_erasing=0.25,
                randaugment=dict(layers=2, magnitude=9.0, magnitude_std=0.5, prob=0.5),
            ),
        )
    )
    c.mix.update(dict(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5, label_smoothing=0.1, sampling="nest"))
    c.train.update(
        dict(
            global_batch_size=1024,
            eval_batch_size=1000,
            num_epochs=300,
            log_every_steps=100,
            eval_every_steps=5000,
            checkpoint_every_steps=2500,
        )
    )
    c.optimizer.update(
        dict(
            name="adamw",
            base_lr=2.5e-4,
            base_batch=256,
            weight_decay=0.05,
            wd_mask="nest",
            schedule="cosine",
            warmup_epochs=20.0,
        )
    )
    return c
