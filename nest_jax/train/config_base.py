"""The full config schema with neutral defaults; every file in configs/ starts from `base_config()`.

Placeholders (`placeholder(int)`) keep optional fields overridable from the command line
(`--config.train.num_train_steps=100`) while their value is None.
"""

from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder

MODES = ("train", "eval")  # config.mode, `nest_jax.main --mode`


def augment(**kw) -> dict:
    return (
        dict(
            inception_crop=False,
            # Smallest crop area: 0.05 as in the official NesT recipe (imagenet_nest.py,
            # image_folder_example.py); Inception's 0.08 (DeiT, ViT fine-tuning) is set by those configs.
            min_area=0.05,
            flip=False,
            cifar_crop=False,
            crop_padding=2,
            affine=dict(degrees=0.0, translate=0.0, scale=1.0),  # random rotation / shift / zoom (off)
            randaugment=dict(layers=0, magnitude=9.0, magnitude_std=0.5, prob=0.5),
            color_jitter=0.0,
            random_erasing=0.0,
        )
        | kw
    )


def optimizer(**kw) -> dict:
    """One optimizer section with every field (`config.optimizer`, and each GAN network's)."""
    return (
        dict(
            name="adamw",
            lr=placeholder(float),
            base_lr=placeholder(float),
            base_batch=256,
            weight_decay=0.0,
            wd_mask="nest",
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            momentum=0.9,
            nesterov=False,
            clip_norm=0.0,
            schedule="cosine",
            warmup_steps=placeholder(int),
            warmup_epochs=0.0,
            warmup_init_lr=0.0,
            min_lr=0.0,
            layer_decay=1.0,
            ema_decay=0.0,
            accum_steps=1,
            mu_dtype=placeholder(str),  # "bfloat16": AdamW's first moment stored in bf16
        )
        | kw
    )


def base_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        dict(
            seed=0,
            mode="train",  # one of MODES
            task="classification",  # or "gan" (configs/*_gan.py: section `gan`)
            model=dict(
                name="",
                img_size=placeholder(int),
                # Starting weights by name: "true" (timm's default release), a tag or a path
                # (nest_jax.convert.hub; fitted like init_from, which it excludes).
                pretrained=placeholder(str),
                remat=False,
                remat_policy="nothing_saveable",
                overrides={},
            ),
            dataset=dict(
                name="",
                data_dir=placeholder(str),
                train_split="train",
                eval_split="test",
                image_size=224,
                num_channels=3,
                normalize="imagenet",
                repeated_aug=1,
                augment=augment(),
                eval_resize="resize_crop",
                crop_fraction=0.875,
                resize_method="bilinear",
                num_workers=0,  # grain worker processes for decoding/augmentation; 0 = in the main process
                validate_files=True,  # image_folder: decode every file once, skip (and name) bad ones
                # image_folder: refuse images above this many pixels (PIL's decompression-bomb threshold)
                max_image_pixels=89_478_485,
                # image_folder with augment.inception_crop: decode JPEGs at 1/2, 1/4 or 1/8 scale when the
                # sampled crop still has the output resolution there (PIL draft; same crop boxes)
                jpeg_draft=False,
                # "device": RandAugment, colour jitter, normalization and random erasing run in the jitted
                # train step (nest_jax.data.device_augment) on the host's uint8 crops and random choices
                augment_on="host",
                image_key="image",  # tfds feature names
                label_key="label",
                tfrecord=False,  # tfds: read TFRecord files through TensorFlow (the [tf] extra)
                # name "shapes": nest_jax.data.shapes.ShapesTexturesSource (configs/shapes_tokens.py)
                # clutter: distractor ellipses on a cluttered background (0: plain grey); rotation: rotate
                # each object; min_scale / max_scale: object scale as a fraction of the image side
                shapes=dict(
                    variant="natural",
                    num_classes=8,
                    num_train=4000,
                    num_test=1000,
                    seed=0,
                    clutter=0,
                    rotation=False,
                    min_scale=0.28,
                    max_scale=0.42,
                ),
            ),
            mix=dict(mixup_alpha=0.0, cutmix_alpha=0.0, switch_prob=0.5, label_smoothing=0.0, sampling="nest"),
            train=dict(
                global_batch_size=256,
                eval_batch_size=256,
                num_epochs=1.0,
                num_train_steps=placeholder(int),
                stop_after_steps=placeholder(int),
                log_every_steps=100,
                eval_every_steps=0,
                checkpoint_every_steps=1000,
                max_to_keep=3,
                profile=False,
            ),
            optimizer=optimizer(),
            # Periodic evaluations (nest_jax.train.evaluators): name -> {kind, split, every_steps, prefix, ...};
            # split None = dataset.eval_split, every_steps None = train.eval_every_steps (0: only at the end).
            evals=dict(
                val=dict(kind="classification", split=placeholder(str), every_steps=placeholder(int), prefix="eval_")
            ),
            mesh=dict(axes=dict(data=-1, fsdp=1, tensor=1)),
            logical_axis_rules=placeholder(list),  # None: nest_jax.train.sharding.DEFAULT_LOGICAL_RULES
            sharding_rules=(),
            # strict: a mesh axis that does not divide a parameter dimension is an error, not replication.
            sharding=dict(strict=False),
            distill={},  # token -> teacher(...); empty: no distillation
            distill_kl_reduction="batchmean",
            init_from=dict(checkpoint=placeholder(str), source="nest_jax", resize_method="bicubic", use_ema=False),
            distributed=dict(
                enabled=False,
                coordinator_address=placeholder(str),
                num_processes=placeholder(int),
                process_id=placeholder(int),
                cpu_collectives=placeholder(str),
                local_device_ids=placeholder(tuple),  # this process's devices (several processes per host)
            ),
            gan=gan_section(),  # task "gan" only
        )
    )


def gan_evals(every_steps: int, *, fid: dict | None = None) -> ml_collections.ConfigDict:
    """`config.evals` of a GAN run: a grid of 64 EMA-generator samples every `every_steps` steps and,
    with `fid` (its settings: every_steps, extractor, checkpoint or weights, num_samples, ...), the
    FID/KID evaluator (`nest_jax.analysis.gan_eval`)."""
    evals = dict(samples=dict(kind="samples", every_steps=every_steps, prefix="", num_images=64, seed=1234))
    if fid is not None:
        evals["fid"] = dict(kind="fid", prefix="", **fid)
    return ml_collections.ConfigDict(evals)


def gan_section(**kw) -> ml_collections.ConfigDict:
    """`config.gan`: networks, losses, the two optimizers (Adam β1 0, TTUR-style lrs), EMA. Its
    samples and FID/KID are evaluators (`gan_evals`)."""

    def adam(lr):  # AdamW without decay: plain Adam
        return optimizer(lr=lr, b1=0.0, b2=0.99, wd_mask="none", schedule="constant", warmup_steps=0)

    g = dict(
        generator=dict(name="nest_gan_32", overrides={}),
        discriminator=dict(name="sagan_discriminator_32", overrides={}),
        latent_dim=128,
        loss="hinge",
        r1_gamma=0.0,
        ema_decay=0.999,
        ema_start_step=0,
        g_optimizer=adam(1e-4),
        d_optimizer=adam(4e-4),
    )
    return ml_collections.ConfigDict(g | kw)


def teacher(
    model: str,
    checkpoint: str | None,
    *,
    kind: str = "hard",
    alpha: float = 0.5,
    tau: float = 1.0,
    source: str = "nest_jax",
    **overrides,
) -> dict:
    """One distillation teacher entry for `config.distill[token]`."""
    return dict(
        model=model,
        checkpoint=checkpoint,
        source=source,
        kind=kind,
        alpha=alpha,
        tau=tau,
        overrides=overrides,
        img_size=None,
        use_ema=False,
    )


def digits_nest_overrides() -> dict:
    """The digits NesT of the main job (configs/digits_nest_tiny.py), also the digits DeiT's
    teacher: `nest_tiny_cifar` made small for 32 px digits. Patch 4 gives 8 × 8 tokens (one per
    original digit pixel); blocks of 2 × 2 tokens make 3 levels (16 → 4 → 1 blocks) of 1, 1 and 2
    layers, width 64, 2 heads, multi-query attention."""
    return dict(patch_size=4, block_size=2, dims=(64, 64, 64), depths=(1, 1, 2), heads=(2, 2, 2), drop_path_rate=0.0)


def digits_vit_config(model_name: str) -> ml_collections.ConfigDict:
    """The small digits ViT/DeiT recipe (configs/digits_vit.py, digits_deit_distilled.py): 32 px,
    patch 4 (64 tokens + prefix tokens), width 64, 2 heads, plain AdamW with the timm decay mask."""
    c = base_config()
    c.model.name = model_name
    c.model.overrides = dict(patch_size=4, dim=64, depth=4, num_heads=2, mlp_dim=256, drop_path_rate=0.0)
    c.dataset.update(
        name="digits", image_size=32, num_channels=1, normalize="digits", augment=augment(), eval_resize="resize"
    )
    c.train.update(
        global_batch_size=64,
        eval_batch_size=128,
        num_epochs=30,
        log_every_steps=50,
        checkpoint_every_steps=200,
        max_to_keep=2,
    )
    c.optimizer.update(name="adamw", lr=1e-3, weight_decay=0.05, wd_mask="timm", schedule="cosine", warmup_epochs=2.0)
    return c
