"""Analyses of trained models: pure functions of (model, batch), jit-able; plotting lives in nest_jax.viz."""
from nest_jax.analysis.cam import CAMResult, box_from_cam, box_iou, class_activation_map
from nest_jax.analysis.gradcat import GradCATResult, class_gradients, gradcat, node_scores, traverse

__all__ = ["CAMResult", "GradCATResult", "box_from_cam", "box_iou", "class_activation_map",
           "class_gradients", "gradcat", "node_scores", "traverse"]
