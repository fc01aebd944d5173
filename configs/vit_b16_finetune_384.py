"""Fine-tune an imported ViT-B/16 at 384 px (Dosovitskiy et al. 2021, App. B.1.1 SGD recipe; docs/recipes.md).

    python -m nest_jax.main --config=configs/vit_b16_finetune_384.py --workdir=DIR \
        --config.init_from.checkpoint=/path/to/ViT-B_16.npz

SGD momentum 0.9, no weight decay, global-norm clip 1.0, batch 512, cosine with 500 warmup steps,
lr 0.03. Google weights: tanh GELU, official init, inputs in [-1, 1]; the position table is
resized to the 24×24 grid and the head re-initialized for the new class count.
"""

from nest_jax.train.config_base import augment, base_config


def get_config(arg: str = "imagenet2012"):
    c = base_config()
    c.model.name = "vit_base_patch16_224"
    c.model.img_size = 384
    c.model.overrides = dict(gelu="tanh", init="official", dtype="bfloat16")
    c.dataset.update(
        dict(
            name=arg,
            image_size=384,
            num_channels=3,
            normalize="inception",
            train_split="train",
            eval_split="validation",
            eval_resize="resize_crop",
            crop_fraction=0.875,
            resize_method="bilinear",
            augment=augment(inception_crop=True, min_area=0.08, flip=True),
        )
    )
    c.train.update(
        dict(
            global_batch_size=512,
            eval_batch_size=512,
            num_train_steps=20_000,
            log_every_steps=100,
            eval_every_steps=2000,
            checkpoint_every_steps=1000,
        )
    )
    c.optimizer.update(
        dict(
            name="sgd",
            lr=0.03,
            momentum=0.9,
            nesterov=False,
            weight_decay=0.0,
            clip_norm=1.0,
            schedule="cosine",
            warmup_steps=500,
        )
    )
    c.init_from.update(dict(source="vit_npz", resize_method="linear"))  # official: linear (scipy zoom 1)
    return c
