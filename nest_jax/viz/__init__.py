"""Plotting (matplotlib, Agg-safe): figures of analyses computed in nest_jax.analysis."""
from nest_jax.viz.nest_maps import plot_cam, plot_gradcat, plot_level_scores

__all__ = ["plot_cam", "plot_gradcat", "plot_level_scores"]
