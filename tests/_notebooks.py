"""Runs a notebook of notebooks/ top to bottom with nbclient (kernel python3, cwd notebooks/)."""
import os
import pathlib

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "notebooks"


def run_notebook(name: str, timeout: int = 300) -> str:
    """Executes notebooks/<name>; returns the text of every code cell's outputs, in order."""
    path = NOTEBOOKS / name
    nb = nbformat.read(path, as_version=4)
    # The kernel inherits this environment; the notebooks train models (execution-bound), so they
    # run without the suite's compile-time shortcut (XLA backend optimization level 0, conftest.py).
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = flags.replace("--xla_backend_optimization_level=0", "").strip()
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    finally:
        os.environ["XLA_FLAGS"] = flags
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
