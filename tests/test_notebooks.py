"""The notebooks run top to bottom and draw their pictures inline."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
#: figures (inline image/png outputs) each notebook must show, at least
MIN_FIGURES = {"explore.ipynb": 5, "predict.ipynb": 2, "annotations.ipynb": 5}


def _pngs(cell) -> list[str]:
    return [out["data"]["image/png"] for out in cell.get("outputs", [])
            if "image/png" in out.get("data", {})]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes_and_shows_its_figures(path, tmp_path, monkeypatch):
    monkeypatch.setenv("ZARRDASK_NOTEBOOK_OUT", str(tmp_path))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=240, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    figures = [png for cell in nb.cells if cell.cell_type == "code" for png in _pngs(cell)]
    assert len(figures) >= MIN_FIGURES.get(path.name, 1), f"{path.name} showed {len(figures)} figures"
    for png in figures:
        assert len(png) > 5_000, "an (almost) empty figure"  # base64 of the PNG
    for cell in nb.cells:
        if "prediction-overlay" in cell.metadata.get("tags", []):
            assert _pngs(cell), "the prediction overlay cell drew nothing"
    if path.name == "predict.ipynb":
        assert any("prediction-overlay" in c.metadata.get("tags", []) for c in nb.cells)
