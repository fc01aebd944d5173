"""A small distilled DeiT on digits; the teacher is the NesT trained by configs/digits_nest_tiny.py.

    python -m nest_jax.main --config=configs/digits_nest_tiny.py --workdir=/tmp/nest_digits
    python -m nest_jax.main --config=configs/digits_deit_distilled.py --workdir=/tmp/deit_digits \
        [--config.distill.dist.checkpoint=/tmp/nest_digits]

The `dist` token learns the teacher's hard labels (DeiT hard distillation, α = 0.5); the teacher
sees the student's exact inputs. Inference averages the cls and dist heads' logits.
"""

from nest_jax.train.config_base import digits_vit_config, teacher


def get_config():
    c = digits_vit_config("deit_tiny_distilled_patch16_224")
    # Must match the teacher's training config (configs/digits_nest_tiny.py).
    c.distill.dist = teacher(
        "nest_tiny_cifar",
        "/tmp/nest_digits",
        kind="hard",
        alpha=0.5,
        patch_size=4,
        block_size=4,
        dims=(64, 64),
        depths=(3, 4),
        heads=(2, 2),
    )
    return c
