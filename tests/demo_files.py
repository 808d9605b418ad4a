"""The files `zarrdask demo` writes, made by the command itself (small slides),
and copies of them for tests that run documentation in fresh folders."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

EXE = str(Path(sys.executable).with_name("zarrdask"))


def python_blocks(text: str) -> str:
    """The ```python blocks of a Markdown text, in order, as one script."""
    return "\n\n".join(re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M))


def run_demo(root: Path) -> Path:
    """``zarrdask demo`` on 1024² slides in ``root``: ``root/zarrdask-demo``."""
    out = subprocess.run([EXE, "demo", "--size", "1024", "--chunk", "256", "--workers", "1",
                          "--batches", "1"], capture_output=True, text=True, timeout=300,
                         cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    return root / "zarrdask-demo"


def copy_demo(demo: Path, root: Path) -> None:
    """``demo`` copied to ``root/zarrdask-demo``, its table pointing at the copies
    (tables store absolute paths)."""
    import zarrdask as zd

    target = root / "zarrdask-demo"
    shutil.copytree(demo, target)
    table = zd.read_table(target / "patches.parquet", path_map={str(demo): str(target)})
    table.to_parquet(target / "patches.parquet")
