"""A small distilled DeiT on digits; the teacher is the NesT trained by configs/digits_nest_tiny.py.

    python -m nest_jax.main --config=configs/digits_nest_tiny.py --workdir=/tmp/nest_digits
    python -m nest_jax.main --config=configs/digits_deit_distilled.py --workdir=/tmp/deit_digits \
        [--config.distill.dist.checkpoint=/tmp/nest_digits]

The `dist` token learns the teacher's hard labels (DeiT hard distillation, α = 0.5); the teacher
sees the student's exact inputs. Inference averages the cls and dist heads' logits.
"""
from nest_jax.train.config_base import augment, base_config, teacher


def get_config():
    c = base_config()
    c.model.name = "deit_tiny_distilled_patch16_224"
    c.model.overrides = dict(patch_size=4, dim=64, depth=4, num_heads=2, mlp_dim=256, drop_path_rate=0.0)
    c.dataset.update(dict(name="digits", image_size=32, num_channels=1, normalize="digits",
                          shuffle_buffer=2048, cache=True, augment=augment(), eval_resize="resize"))
    c.train.update(dict(global_batch_size=64, eval_batch_size=128, num_epochs=30, log_every_steps=50,
                        checkpoint_every_steps=200, max_to_keep=2))
    c.optimizer.update(dict(name="adamw", lr=1e-3, weight_decay=0.05, wd_mask="timm", schedule="cosine",
                            warmup_epochs=2.0))
    # Must match the teacher's training config (configs/digits_nest_tiny.py).
    c.distill.dist = teacher("nest_tiny_cifar", "/tmp/nest_digits", kind="hard", alpha=0.5,
                             patch_size=4, block_size=4, dims=(64, 64), depths=(3, 4), heads=(2, 2))
    return c
