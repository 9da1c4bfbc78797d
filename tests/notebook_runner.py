"""Execute a committed notebook against a study folder, as a reader would, and check what it shows."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def run_notebook(name: str, study: Path) -> nbformat.NotebookNode:
    """Run every cell with SCALER_STUDY_DIR=study; no cell errors, and every cell that shows a figure leaves a
    PNG (not a Figure repr)."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    os.environ["SCALER_STUDY_DIR"] = str(study)
    try:
        NotebookClient(
            nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
        ).execute()
    finally:
        del os.environ["SCALER_STUDY_DIR"]
    assert not any(output.get("output_type") == "error" for cell in nb.cells for output in cell.get("outputs", []))
    plotting = [
        cell for cell in nb.cells if cell.cell_type == "code" and "figure" in cell.source.strip().splitlines()[-1]
    ]
    assert plotting, f"{name} shows no figure"
    for cell in plotting:
        assert any("image/png" in output.get("data", {}) for output in cell.outputs), cell.source
    return nb
