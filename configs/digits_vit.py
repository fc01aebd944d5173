"""A small ViT on scikit-learn digits at 32 px (patch 4: 64 tokens + class token), plain AdamW.

    python -m nest_jax.main --config=configs/digits_vit.py --workdir=/tmp/vit_digits
"""
from nest_jax.train.config_base import augment, base_config


def get_config():
    c = base_config()
    c.model.name = "vit_tiny_patch16_224"
    c.model.overrides = dict(patch_size=4, dim=64, depth=4, num_heads=2, mlp_dim=256, drop_path_rate=0.0)
    c.dataset.update(dict(name="digits", image_size=32, num_channels=1, normalize="digits",
                          shuffle_buffer=2048, cache=True, augment=augment(), eval_resize="resize"))
    c.train.update(dict(global_batch_size=64, eval_batch_size=128, num_epochs=30, log_every_steps=50,
                        checkpoint_every_steps=200, max_to_keep=2))
    c.optimizer.update(dict(name="adamw", lr=1e-3, weight_decay=0.05, wd_mask="timm", schedule="cosine",
                            warmup_epochs=2.0))
    return c
