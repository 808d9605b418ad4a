"""The README runs as written: every ```python block, in order, as one script
(and as one notebook cell) in a fresh folder where the README's own
``zarrdask demo`` command has written the files they use."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from demo_files import copy_demo, python_blocks, run_demo
from nbclient import NotebookClient

import zarrdask as zd

README = Path(__file__).parents[1] / "README.md"
BATCH = r"torch\.Size\(\[\d+, 3, 256, 256\]\) torch\.uint8 \d+ batches per epoch"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return run_demo(tmp_path_factory.mktemp("readme-demo"))


def _check_table(root: Path) -> None:
    table = zd.read_table(root / "zarrdask-demo" / "patches-mixed.parquet")
    assert sorted(set(table.frame["image_id"])) == [0, 1]  # both formats in one table


def test_readme_has_the_install_demo_and_setup_commands():
    text = README.read_text()
    for line in ("pip install zarrdask", "pip install .", "zarrdask[interactive]",
                 "zarrdask[openslide]", "--index-url https://download.pytorch.org/whl/",
                 "./dev demo", "./dev test", "\nzarrdask demo\n", "--scheduler tcp://"):
        assert line in text, line
    assert text.index("\nzarrdask demo\n") < text.index("```python")  # files first, then code


@pytest.mark.timeout(400)
def test_readme_python_blocks_run_as_one_script(demo, tmp_path):
    copy_demo(demo, tmp_path)
    (tmp_path / "readme.py").write_text(python_blocks(README.read_text()))
    out = subprocess.run([sys.executable, "readme.py"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=360)
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.search(BATCH, out.stdout), out.stdout
    assert "{'y': 128, 'x': 128} {'Tumor': 1}" in out.stdout
    assert "torch.Size([8, 128, 128])" in out.stdout
    _check_table(tmp_path)


@pytest.mark.slow  # the script test above runs the same code in the default suite
@pytest.mark.timeout(400)
def test_readme_python_blocks_run_in_a_notebook_cell(demo, tmp_path):
    copy_demo(demo, tmp_path)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        python_blocks(README.read_text()))])
    NotebookClient(nb, timeout=360, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for o in nb.cells[0].outputs if o.get("name") == "stdout")
    assert re.search(BATCH, text), text
    _check_table(tmp_path)
