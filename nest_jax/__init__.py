"""nest_jax: ViT, DeiT and NesT in JAX/Flax NNX."""
