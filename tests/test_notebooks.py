"""The notebooks run top to bottom and draw their pictures."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, monkeypatch):
    monkeypatch.setenv("ZARRDASK_NOTEBOOK_OUT", str(tmp_path))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=240, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    pictures = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pictures, "the notebook drew nothing"
    for name in pictures:
        assert os.path.getsize(tmp_path / name) > 5_000, f"{name} is (nearly) empty"
