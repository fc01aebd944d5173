"""Models: shared layers, one file per family (vit, deit, nest, resnet), a registry."""

from nest_jax.models.intermediates import KINDS as CAPTURE_KINDS
from nest_jax.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model", "CAPTURE_KINDS"]
