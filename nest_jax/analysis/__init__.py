"""Analyses of trained models: pure functions of (model, batch), jit-able; plotting lives in nest_jax.viz.

Modules are reached by attribute (`nest_jax.analysis.cka.MinibatchCKA`); the evaluators that run
them in training and in `python -m nest_jax.analyze` are in `evaluators` and `robustness_evaluators`.
"""

from nest_jax.analysis import cka
from nest_jax.analysis.attention_distance import (
    attention_distance_per_image,
    layer_geometry,
    mean_attention_distance,
    model_attention_distances,
    patch_distances,
)
from nest_jax.analysis.cam import CAMResult, box_from_cam, box_iou, class_activation_map
from nest_jax.analysis.cka import MinibatchCKA, batch_hsic_terms, gram_linear, gram_rbf, hsic
from nest_jax.analysis.gradcat import GradCATResult, class_gradients, gradcat, node_scores, traverse
from nest_jax.analysis.localization import LocalizationCKA, localization_score
from nest_jax.analysis.norm_ratio import NormSums, norm_ratios, norm_sums
from nest_jax.analysis.pos_embed_similarity import cosine_similarity_grid, pos_embed_similarity
from nest_jax.analysis.probes import layer_probes, logistic_probe, ridge_probe, token_probe
from nest_jax.analysis.representations import (
    forward_fn,
    layer_representations,
    model_family,
    num_prefix,
)

__all__ = [
    "CAMResult",
    "GradCATResult",
    "LocalizationCKA",
    "MinibatchCKA",
    "NormSums",
    "attention_distance_per_image",
    "batch_hsic_terms",
    "box_from_cam",
    "box_iou",
    "cka",
    "class_activation_map",
    "class_gradients",
    "cosine_similarity_grid",
    "forward_fn",
    "gradcat",
    "gram_linear",
    "gram_rbf",
    "hsic",
    "layer_geometry",
    "layer_probes",
    "layer_representations",
    "localization_score",
    "logistic_probe",
    "mean_attention_distance",
    "model_attention_distances",
    "model_family",
    "node_scores",
    "norm_ratios",
    "norm_sums",
    "num_prefix",
    "patch_distances",
    "pos_embed_similarity",
    "ridge_probe",
    "token_probe",
    "traverse",
]
