"""notebooks/01_models.ipynb runs top to bottom (nbclient), and its timm import matches timm."""

import pytest

from tests._notebooks import run_notebook


@pytest.mark.slow
def test_notebook_01_models_runs():
    text = run_notebook("01_models.ipynb", timeout=300)
    line = next(l for l in text.splitlines() if l.startswith("max |nest_jax - timm|"))
    assert float(line.split("=")[1]) < 1e-4
