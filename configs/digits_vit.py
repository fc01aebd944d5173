"""A small ViT on scikit-learn digits at 32 px (patch 4: 64 tokens + class token), plain AdamW.

python -m nest_jax.main --config=configs/digits_vit.py --workdir=/tmp/vit_digits
"""

from nest_jax.train.config_base import digits_vit_config


def get_config():
    return digits_vit_config("vit_tiny_patch16_224")
