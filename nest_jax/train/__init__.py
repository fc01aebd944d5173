"""Sharded training and evaluation from ml-collections configs: `train_and_evaluate(config, workdir)`.

mesh/sharding (shape-first shardings) · optim (optax chains) · losses (CE, DeiT distillation) · mixing
(mixup/CutMix on device) · init_from / distill (checkpoint weights placed in their shardings) ·
checkpoint (orbax, async, atomic) · trainer (state, jitted steps) · loop (the training loop).
"""


def train_and_evaluate(config, workdir, **kwargs):
    from nest_jax.train.loop import train_and_evaluate as run

    return run(config, workdir, **kwargs)


__all__ = ["train_and_evaluate"]
