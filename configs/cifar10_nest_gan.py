"""NesT GAN on CIFAR-10 (32 px): `nest_gan_32` against the SAGAN/BigGAN-style ResNet discriminator
with spectral normalization, hinge loss, TTUR learning rates (G 1e-4, D 4e-4, Adam β = (0, 0.99)).

    python -m nest_jax.main --config=configs/cifar10_nest_gan.py --workdir=DIR \
        --config.dataset.data_dir=TFDS_DIR --config.gan.fid.every_steps=5000 \
        --config.gan.fid.extractor=inception --config.gan.fid.weights=pt_inception-2015-12-05-6726825d.pth

Reads the prepared tfds `cifar10` (nothing downloads). FID with the Inception weights is the
published-comparable figure (50k samples against the train split); with `extractor="classifier"`
and `fid.checkpoint` = a CIFAR-10 run of configs/cifar10_nest.py it is a cheaper proxy.
`:nest` (default) or `:conv` (the SAGAN-style conv generator baseline) picks the generator.
"""

from nest_jax.train.config_base import augment, base_config, gan_section


def get_config(arg: str = "nest"):
    c = base_config()
    c.task = "gan"
    c.model.name = "nest_gan_32"
    c.dataset.update(
        dict(
            name="cifar10",
            train_split="train",
            eval_split="test",
            image_size=32,
            num_channels=3,
            normalize="inception",
            augment=augment(flip=True),
            eval_resize="none",
        )
    )
    c.train.update(
        dict(
            global_batch_size=64,
            num_epochs=0,
            num_train_steps=100_000,
            log_every_steps=100,
            checkpoint_every_steps=5000,
            max_to_keep=3,
        )
    )
    generator = (
        dict(name="nest_gan_32", overrides={}) if arg == "nest" else dict(name="sagan_generator_32", overrides={})
    )
    c.gan = gan_section(
        generator=generator,
        discriminator=dict(name="sagan_discriminator_32", overrides={}),
        latent_dim=128,
        loss="hinge",
        ema_decay=0.9999,
        ema_start_step=1000,
        sample_every_steps=2000,
        num_sample_images=64,
    )
    c.gan.fid.update(
        dict(
            every_steps=0,
            num_samples=10_000,
            batch_size=250,
            split="train",
            extractor="inception",
            kid_subsets=100,
            kid_subset_size=1000,
        )
    )
    return c
