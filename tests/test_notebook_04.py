"""notebooks/04_representations.ipynb runs top to bottom: four small digits models train, and the
representation analyses (CKA, attention distance, norm ratios, probes, localization) produce sane
values and their figures."""

import re

import pytest

from tests._notebooks import run_notebook


@pytest.mark.slow
def test_notebook_04_trains_four_models_and_analyses_them():
    text = run_notebook("04_representations.ipynb", timeout=600)
    accs = {k: float(v) for k, v in re.findall(r"^(\w+) +60 steps in +\d+ s: test top-1 ([\d.]+)", text, re.M)}
    assert set(accs) == {"vit_cls", "vit_gap", "resnet", "nest"}
    assert all(a > 0.2 for a in accs.values()), accs  # chance is 0.1
    # CKA of a layer with itself is 1 (within float32 rounding) for both models.
    for lo, hi in re.findall(r"diagonal ([\d.]+)\.\.([\d.]+)", text):
        assert abs(float(lo) - 1) < 1e-3 and abs(float(hi) - 1) < 1e-3
    assert "vit_cls x resnet shape (4, 3)" in text
    # Mean attention distances lie between 0 and the largest distance on the 32-px image.
    for row in re.findall(r"per-layer mean distance \(px\): \[([^\]]+)\]", text):
        assert all(0 < float(x) < 32 * 2**0.5 for x in row.split(","))
    assert re.search(r"tokens most similar to their own patch [\d.]+", text)
    assert "event files: ['events.out.tfevents" in text
