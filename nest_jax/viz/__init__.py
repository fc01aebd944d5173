"""Plotting (matplotlib, Agg-safe): figures of analyses computed in nest_jax.analysis."""

from nest_jax.viz.nest_maps import plot_cam, plot_gradcat, plot_level_scores
from nest_jax.viz.representations import (
    plot_attention_distance,
    plot_cka,
    plot_norm_ratios,
    plot_position_maps,
    plot_probe_accuracy,
    plot_token_probe,
)
from nest_jax.viz.segmentation import plot_segmentation

__all__ = [
    "plot_attention_distance",
    "plot_cam",
    "plot_cka",
    "plot_gradcat",
    "plot_level_scores",
    "plot_norm_ratios",
    "plot_position_maps",
    "plot_probe_accuracy",
    "plot_segmentation",
    "plot_token_probe",
]
