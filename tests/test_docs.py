"""The documentation runs: every ```python block of each docs/*.md page, in
order, as one script in a fresh folder where ``zarrdask demo`` has written its
files; and the mkdocs site builds with warnings as errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from demo_files import copy_demo, python_blocks, run_demo

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.glob("*.md") if python_blocks(p.read_text()))


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return run_demo(tmp_path_factory.mktemp("docs-demo"))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_python_blocks_run(page, demo, tmp_path):
    copy_demo(demo, tmp_path)
    script = tmp_path / f"{page.stem}.py"
    script.write_text(python_blocks(page.read_text()))
    env = {**os.environ, "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, script.name], cwd=tmp_path, capture_output=True,
                         text=True, timeout=240, env=env)
    assert out.returncode == 0, f"{page.name}:\n{out.stderr[-4000:]}"


def test_every_page_is_in_the_site_and_names_no_file_outside_the_repository():
    import yaml

    config = (ROOT / "mkdocs.yml").read_text()
    nav = yaml.safe_load(config.replace("!ENV", ""))["nav"]

    def pages(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for value in node.values():
                yield from pages(value)
        elif isinstance(node, list):
            for value in node:
                yield from pages(value)

    listed = set(pages(nav))
    for page in DOCS.glob("*.md"):
        assert page.name in listed, f"{page.name} is not in mkdocs.yml's nav"
        text = page.read_text()
        assert "shared/DESIGN" not in text and "shared/seed" not in text, page.name
    for notebook in (ROOT / "notebooks").glob("*.ipynb"):
        assert f"tutorials/{notebook.name}" in listed, f"{notebook.name} is not a tutorial"


@pytest.mark.timeout(120)
def test_site_builds_with_warnings_as_errors(tmp_path):
    pytest.importorskip("mkdocs")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "ZARRDASK_DOCS_EXECUTE": "false",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                          str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True,
                         timeout=110, env=env)
    assert out.returncode == 0, out.stderr[-4000:]
    api = (tmp_path / "site" / "api" / "table" / "index.html").read_text()
    assert "Compute the coordinate table of one or many images" in api  # from the docstring
    for page in (tmp_path / "site" / "api").rglob("*.html"):  # roles shown as code, not raw
        text = page.read_text()
        assert not re.search(r":(func|class|meth|mod|attr|exc):<code>", text), page
    assert (tmp_path / "site" / "tutorials" / "explore" / "index.html").exists()
