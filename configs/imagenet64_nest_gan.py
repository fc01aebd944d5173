"""NesT GAN on ImageNet 64×64, the paper's generative setting: `nest_gan_64` against a 64 px
SAGAN/BigGAN-style ResNet discriminator with spectral normalization, hinge loss, TTUR Adam.

    python -m nest_jax.main --config=configs/imagenet64_nest_gan.py --workdir=gs://BUCKET/run \
        --config.dataset.data_dir=TFDS_DIR --config.gan.fid.every_steps=10000 \
        --config.gan.fid.weights=pt_inception-2015-12-05-6726825d.pth

Data: the prepared tfds `downsampled_imagenet/64x64` (build it with `tfds build` on a machine with
network; nothing downloads here), or a folder of class sub-folders with
`--config.dataset.name=image_folder --config.dataset.data_dir=DIR`. `:nest` (default) or `:conv`
(the SAGAN-style conv generator the paper compares against).
`downsampled_imagenet` has no class labels: the tfds source reads it as one class (label 0), which the
GAN does not use.
"""

from nest_jax.train.config_base import augment, base_config, gan_section


def get_config(arg: str = "nest"):
    c = base_config()
    c.task = "gan"
    c.model.name = "nest_gan_64"
    c.dataset.update(
        dict(
            name="downsampled_imagenet/64x64",
            train_split="train",
            eval_split="validation",
            image_size=64,
            num_channels=3,
            normalize="inception",
            augment=augment(flip=True),
            eval_resize="resize",
        )
    )
    c.train.update(
        dict(
            global_batch_size=256,
            num_epochs=0,
            num_train_steps=500_000,
            log_every_steps=200,
            checkpoint_every_steps=5000,
            max_to_keep=3,
        )
    )
    generator = (
        dict(name="nest_gan_64", overrides={}) if arg == "nest" else dict(name="sagan_generator_64", overrides={})
    )
    c.gan = gan_section(
        generator=generator,
        discriminator=dict(name="sagan_discriminator_64", overrides={}),
        latent_dim=128,
        loss="hinge",
        ema_decay=0.9999,
        ema_start_step=2000,
        sample_every_steps=5000,
        num_sample_images=64,
    )
    c.gan.fid.update(
        dict(
            every_steps=0,
            num_samples=50_000,
            batch_size=500,
            split="train",
            extractor="inception",
            kid_subsets=100,
            kid_subset_size=1000,
        )
    )
    return c
