"""notebooks/02_nest_interpretability.ipynb runs top to bottom (nbclient, kernel python3)."""
import pathlib

import nbformat
from nbclient import NotebookClient

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "02_nest_interpretability.ipynb"


def test_notebook_02_runs_and_reports_localization():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "test accuracy" in text and "CAM box IoU" in text and "GradCAT leaf overlaps" in text
    gap = float(text.split("max |mean(CAM) + b - logit| =")[1].split()[0])
    assert gap < 1e-4  # the CAM identity holds on the trained model too
