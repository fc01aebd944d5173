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
    # The kernel inherits this environment. It runs as a user's would, with the XLA flags the suite
    # was started with, not conftest.py's: not on 8 simulated CPU devices (notebook 03 would shard
    # its training over them, ~2x slower on 2 cores) and not at backend optimization level 0 (the
    # notebooks train models, execution-bound).
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = os.environ.get("NEST_JAX_USER_XLA_FLAGS", "")
    try:
        NotebookClient(
            nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
        ).execute()
    finally:
        os.environ["XLA_FLAGS"] = flags
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
