"""notebooks/01_models.ipynb runs top to bottom (nbclient), and its timm import matches timm."""
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NB = Path(__file__).resolve().parents[1] / "notebooks" / "01_models.ipynb"


def test_notebook_01_models_runs():
    nb = nbformat.read(NB, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NB.parent)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    line = next(l for l in text.splitlines() if l.startswith("max |nest_jax - timm|"))
    assert float(line.split("=")[1]) < 1e-4
