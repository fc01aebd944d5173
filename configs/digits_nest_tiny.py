"""THE DEFAULT job: a ~0.37M-parameter NesT on scikit-learn digits resized to 32 px, plain AdamW.

    python -m nest_jax.main --config=configs/digits_nest_tiny.py --workdir=/tmp/nest_digits

Target: ≥ 99% test accuracy (450 test digits) in under 5 minutes on a 2-core CPU, compile included.
The model is `nest_tiny_cifar`'s hierarchy made small: patch 2 (16×16 tokens), blocks of 4×4
tokens, 3 levels (16 → 4 → 1 blocks), width 64, 2 heads, multi-query attention.
"""
import ml_collections
from ml_collections.config_dict import placeholder


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.mode = "train"

    c.model = ml_collections.ConfigDict()
    c.model.name = "nest_tiny_cifar"
    c.model.img_size = placeholder(int)  # = dataset.image_size
    c.model.remat = False
    c.model.overrides = ml_collections.ConfigDict(dict(
        patch_size=2, block_size=4, dims=(64, 64, 64), depths=(2, 2, 2), heads=(2, 2, 2),
        drop_path_rate=0.0))

    c.dataset = ml_collections.ConfigDict(dict(
        name="digits", data_dir=None, train_split="train", eval_split="test", image_size=32,
        num_channels=1, normalize="digits", shuffle_buffer=2048, repeated_aug=1, cache=True,
        augment=dict(inception_crop=False, min_area=0.05, flip=False, cifar_crop=False,
                     crop_padding=2, randaugment=dict(layers=0, magnitude=9.0, magnitude_std=0.5, prob=0.5),
                     color_jitter=0.0, random_erasing=0.0),
        eval_resize="resize", crop_fraction=0.875, resize_method="bilinear"))
    c.mix = ml_collections.ConfigDict(dict(mixup_alpha=0.0, cutmix_alpha=0.0, switch_prob=0.5,
                                           label_smoothing=0.0, sampling="nest"))

    c.train = ml_collections.ConfigDict(dict(
        global_batch_size=64, eval_batch_size=128, num_epochs=20, num_train_steps=placeholder(int),
        log_every_steps=50, eval_every_steps=0, checkpoint_every_steps=200, max_to_keep=2,
        profile=False))
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adamw", lr=2e-3, base_lr=placeholder(float), weight_decay=0.05, wd_mask="nest", b1=0.9, b2=0.999,
        eps=1e-8, clip_norm=0.0, schedule="cosine", warmup_steps=placeholder(int), warmup_epochs=1.0,
        warmup_init_lr=0.0, min_lr=0.0, layer_decay=1.0, ema_decay=0.0, accum_steps=1))

    c.mesh = ml_collections.ConfigDict(dict(axes=dict(data=-1, fsdp=1, tensor=1)))
    c.logical_axis_rules = None  # None = nest_jax.train.sharding.DEFAULT_LOGICAL_RULES
    c.sharding_rules = ()
    c.distill = None
    c.init_from = None
    c.distributed = ml_collections.ConfigDict(dict(
        enabled=False, coordinator_address=None, num_processes=None, process_id=None,
        cpu_collectives=None))
    return c
