"""A small distilled DeiT on digits; the teacher is the NesT trained by configs/digits_nest_tiny.py.

    python -m nest_jax.main --config=configs/digits_nest_tiny.py --workdir=/tmp/nest_digits
    python -m nest_jax.main --config=configs/digits_deit_distilled.py --workdir=/tmp/deit_digits \
        [--config.distill.dist.checkpoint=/tmp/nest_digits]

The `dist` token learns the teacher's hard labels (DeiT hard distillation, α = 0.5); the teacher
sees the student's exact inputs. Inference averages the cls and dist heads' logits.
"""

from nest_jax.train.config_base import digits_nest_overrides, digits_vit_config, teacher


def get_config():
    c = digits_vit_config("deit_tiny_distilled_patch16_224")
    # The teacher's model is the main job's (configs/digits_nest_tiny.py), at the same 32 px.
    c.distill.dist = teacher("nest_tiny_cifar", "/tmp/nest_digits", kind="hard", alpha=0.5, **digits_nest_overrides())
    return c
