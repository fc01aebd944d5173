"""NesT on CIFAR-10 from scratch, the official recipe (Zhang et al. 2022 and the official code; docs/recipes.md).

    python -m nest_jax.main --config=configs/cifar10_nest.py:tiny --workdir=/tmp/nest_cifar10

Config argument: tiny | small | base (nest_{size}_cifar: 6.0M / 22.8M / 89.1M parameters; paper
top-1 96.04 / 96.97 / 97.20). AdamW lr 2.5e-4 × batch/256, wd 0.05 on all but the position
embeddings, 5 warmup epochs, cosine to 0 over 300 epochs; pad-2 crop + flip, RandAugment(2, 9±0.5,
p 0.5), random erasing 0.25, mixup 0.8 / CutMix 1.0 (NesT sampling) with label smoothing 0.1.
"""

from nest_jax.train.config_base import augment, base_config


def get_config(arg: str = "tiny", dataset: str = "cifar10"):
    if arg not in ("tiny", "small", "base"):
        raise ValueError(f"config argument must be tiny, small or base, got {arg!r}")
    c = base_config()
    c.model.name = f"nest_{arg}_cifar"
    c.model.overrides = dict(dtype="bfloat16")  # bf16 compute, f32 parameters
    c.dataset.update(
        dict(
            name=dataset,
            image_size=32,
            num_channels=3,
            normalize="cifar",
            eval_resize="none",
            train_split="train",
            eval_split="test",
            augment=augment(
                flip=True,
                cifar_crop=True,
                crop_padding=2,
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
            eval_every_steps=2000,
            checkpoint_every_steps=2000,
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
            warmup_epochs=5.0,
            min_lr=0.0,
        )
    )
    return c
