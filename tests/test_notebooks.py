"""The notebooks run top to bottom and draw their pictures inline: every cell
tagged ``figure`` shows an image/png output."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
#: figures (inline image/png outputs) each notebook must show, at least
MIN_FIGURES = {"explore.ipynb": 5, "predict.ipynb": 2, "cluster.ipynb": 1, "train.ipynb": 4,
               "annotations.ipynb": 5}


def _pngs(cell) -> list[str]:
    return [out["data"]["image/png"] for out in cell.get("outputs", [])
            if "image/png" in out.get("data", {})]


def test_notebooks_are_committed_without_outputs():
    # outputs (base64 PNGs) would bloat every diff; the tests and `./dev docs` run them
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name


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
    for number, cell in enumerate(nb.cells):
        tags = cell.metadata.get("tags", [])
        if "figure" in tags or "prediction-overlay" in tags:
            assert _pngs(cell), f"{path.name} cell {number} drew nothing:\n{cell.source}"
    if path.name == "predict.ipynb":
        assert any("prediction-overlay" in c.metadata.get("tags", []) for c in nb.cells)
