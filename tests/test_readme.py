"""The README's ``Use`` example runs as written, pasted into a script and into a
notebook cell, on the files ``zarrdask demo`` writes (a zarr slide and an
OME-TIFF slide in one table)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import zarrdask as zd
from zarrdask.datasets import write_synthetic_ome_tiff, write_synthetic_slide

README = Path(__file__).parents[1] / "README.md"


def _use_example() -> str:
    text = README.read_text()
    section = text[text.index("## Use"):]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "the README's Use section has no python block"
    return blocks[0]


def _demo_files(root: Path) -> None:
    # the demo's writers and file names, on small slides
    demo = root / "zarrdask-demo"
    demo.mkdir()
    write_synthetic_slide(demo / "synthetic_slide.zarr", size=1024, chunk=256, seed=0)
    write_synthetic_ome_tiff(demo / "synthetic_slide.ome.tif", size=1024, tile=256, seed=1)


def _check_table(root: Path) -> None:
    table = zd.read_table(root / "zarrdask-demo" / "patches-mixed.parquet")
    assert sorted(set(table.frame["image_id"])) == [0, 1]  # both formats in one table


def test_the_example_uses_the_demo_files_and_guards_main():
    code = _use_example()
    assert 'if __name__ == "__main__":' in code
    assert "synthetic_slide.zarr" in code and "synthetic_slide.ome.tif" in code


@pytest.mark.timeout(400)
def test_readme_example_runs_as_a_script(tmp_path):
    _demo_files(tmp_path)
    (tmp_path / "use.py").write_text(_use_example())
    out = subprocess.run([sys.executable, "use.py"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=360)
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.search(r"torch\.Size\(\[\d+, 3, 256, 256\]\) torch\.uint8", out.stdout), out.stdout
    _check_table(tmp_path)


@pytest.mark.timeout(400)
def test_readme_example_runs_in_a_notebook_cell(tmp_path):
    _demo_files(tmp_path)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(_use_example())])
    NotebookClient(nb, timeout=360, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for o in nb.cells[0].outputs if o.get("name") == "stdout")
    assert re.search(r"torch\.Size\(\[\d+, 3, 256, 256\]\) torch\.uint8", text), text
    _check_table(tmp_path)
