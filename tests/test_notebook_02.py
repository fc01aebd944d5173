"""notebooks/02_nest_interpretability.ipynb runs top to bottom (nbclient, kernel python3)."""

import pytest

from tests._notebooks import run_notebook


@pytest.mark.slow
def test_notebook_02_runs_and_reports_localization():
    text = run_notebook("02_nest_interpretability.ipynb", timeout=300)
    assert "test accuracy" in text and "CAM box IoU" in text and "GradCAT leaf overlaps" in text
    gap = float(text.split("max |mean(CAM) + b - logit| =")[1].split()[0])
    assert gap < 1e-4  # the CAM identity holds on the trained model too
