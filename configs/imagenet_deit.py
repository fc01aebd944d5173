"""DeiT-Ti/S/B on ImageNet-1k, the DeiT recipe (Touvron et al. 2021, training details; docs/recipes.md); `*_distilled` adds a teacher.

    python -m nest_jax.main --config=configs/imagenet_deit.py:small --workdir=DIR
    python -m nest_jax.main --config=configs/imagenet_deit.py:small_distilled --workdir=DIR \
        --config.distill.dist.checkpoint=/path/to/teacher   # + .model / .source for another teacher

AdamW lr 5e-4 × batch/512, wd 0.05 (not on biases, norms, tokens, position embeddings), 300 epochs,
cosine, 5 warmup epochs from 1e-6, min lr 1e-5, drop path 0.1, RandAugment m9 mstd 0.5, mixup 0.8 /
CutMix 1.0 (Beta sampling), label smoothing 0.1, random erasing 0.25, repeated augmentation ×3,
EMA 0.99996; eval bicubic resize 256 + crop 224. The paper's teacher is a RegNetY-16GF, which
nest_jax does not implement: the default teacher here is an imported NesT-B (official weights),
hard distillation with α = 0.5.
"""

from nest_jax.train.config_base import augment, base_config, teacher


def get_config(arg: str = "tiny"):
    size, _, distilled = arg.partition("_")
    if size not in ("tiny", "small", "base") or distilled not in ("", "distilled"):
        raise ValueError(f"config argument must be tiny|small|base[_distilled], got {arg!r}")
    c = base_config()
    c.model.name = f"deit_{size}{'_distilled' if distilled else ''}_patch16_224"
    c.model.overrides = dict(drop_path_rate=0.1, dtype="bfloat16")
    c.dataset.update(
        dict(
            name="imagenet2012",
            image_size=224,
            num_channels=3,
            normalize="imagenet",
            train_split="train",
            eval_split="validation",
            repeated_aug=3,
            eval_resize="resize_crop",
            crop_fraction=0.875,
            resize_method="bicubic",
            augment=augment(
                inception_crop=True,
                min_area=0.08,
                flip=True,
                random_erasing=0.25,
                randaugment=dict(layers=2, magnitude=9.0, magnitude_std=0.5, prob=1.0),
            ),
        )
    )
    c.mix.update(dict(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5, label_smoothing=0.1, sampling="beta"))
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
            base_lr=5e-4,
            base_batch=512,
            weight_decay=0.05,
            wd_mask="timm",
            schedule="cosine",
            warmup_epochs=5.0,
            warmup_init_lr=1e-6,
            min_lr=1e-5,
            ema_decay=0.99996,
        )
    )
    if distilled:
        c.distill.dist = teacher("nest_base", "", source="nest_official", kind="hard", alpha=0.5)
    return c
