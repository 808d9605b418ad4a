"""The command line, run as a user runs it (a subprocess of the console script)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import zarrdask as zd

EXE = str(Path(sys.executable).with_name("zarrdask"))


def _run(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_inspect_prints_dims_levels_chunks_and_scale(slide_v2):
    out = _run("inspect", slide_v2)
    assert out.returncode == 0, out.stderr
    assert "dims   : c, y, x" in out.stdout
    assert "levels : 3" in out.stdout
    assert "chunks (c: 3, y: 256, x: 256)" in out.stdout
    assert "scale (y: 0.5 micrometer, x: 0.5 micrometer)" in out.stdout


def test_inspect_bad_source_is_a_clear_error_not_a_traceback(tmp_path):
    out = _run("inspect", str(tmp_path / "missing.zarr"))
    assert out.returncode == 2
    assert "missing.zarr does not exist" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.timeout(300)
def test_grid_builds_a_table_on_a_local_cluster(slide_v3, tmp_path):
    out_path = tmp_path / "grid.parquet"
    out = _run("grid", slide_v3, "--patch-size", "256", "--mask", "tissue", "--min-area", "0.5",
               "--workers", "1", "--out", str(out_path), "--quiet")
    assert out.returncode == 0, out.stderr
    table = zd.read_table(out_path)
    expected = zd.build_table(slide_v3, patch_size=256, masks="tissue", min_area=0.5)
    assert table.equals(expected) and len(table) > 0


@pytest.mark.timeout(400)
def test_demo_runs_the_main_job_end_to_end(tmp_path):
    out = _run("demo", "--workdir", str(tmp_path), "--size", "2048", "--workers", "1",
               "--batches", "2")
    assert out.returncode == 0, out.stderr
    assert "[3/3] streaming patches to torch" in out.stdout
    assert "batch 1: images (16, 3, 256, 256)" in out.stdout
    assert os.path.exists(tmp_path / "patches.parquet")
    assert len(zd.read_table(tmp_path / "patches.parquet")) > 0
