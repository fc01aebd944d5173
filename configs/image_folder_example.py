"""Any dataset laid out as folders of images: <data_dir>/train/<class>/*.jpg, <data_dir>/val/<class>/*.

    python -m nest_jax.main --config=configs/image_folder_example.py --workdir=/tmp/folder \
        --config.dataset.data_dir=/path/to/images

NesT-T (ImageNet hierarchy) at 224 px from scratch with the NesT recipe at a small batch; to
fine-tune instead, set --config.init_from.checkpoint=... (and .source).
"""

from nest_jax.train.config_base import augment, base_config


def get_config():
    c = base_config()
    c.model.name = "nest_tiny"
    c.dataset.update(
        dict(
            name="image_folder",
            image_size=224,
            num_channels=3,
            normalize="imagenet",
            train_split="train",
            eval_split="val",
            eval_resize="resize_crop",
            crop_fraction=0.875,
            augment=augment(
                inception_crop=True,
                min_area=0.05,
                flip=True,
                random_erasing=0.25,
                randaugment=dict(layers=2, magnitude=9.0, magnitude_std=0.5, prob=0.5),
            ),
        )
    )
    c.mix.update(dict(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, sampling="nest"))
    c.train.update(
        dict(
            global_batch_size=128,
            eval_batch_size=128,
            num_epochs=100,
            log_every_steps=50,
            eval_every_steps=1000,
            checkpoint_every_steps=1000,
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
        )
    )
    return c
