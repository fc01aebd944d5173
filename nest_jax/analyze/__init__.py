"""The analysis command line (`python -m nest_jax.analyze`) and its registry of analyses.

Each analysis (`nest_jax.analyze.runners`) accumulates over one pass of evaluation batches and
returns numbers and figures; `nest_jax.analyze.loop.analyse` drives them and writes JSON, PNG and
TensorBoard output. The analyses themselves are pure functions in `nest_jax.analysis`.
"""

from nest_jax.analyze import robustness_runners  # noqa: F401  (registers the robustness analyses)
from nest_jax.analyze.runners import ANALYSES, Subject, register_analysis

__all__ = ["ANALYSES", "Subject", "register_analysis"]
