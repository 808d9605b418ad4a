"""The command line, run as a user runs it (a subprocess of the console script)."""

from __future__ import annotations

import contextlib
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


def test_inspect_shows_mpp_objective_power_and_associated_images(tmp_path):
    import wsi_files

    path = tmp_path / "slide.svs"
    wsi_files.write_svs(path, wsi_files.rgb_slide((512, 512), seed=21), mpp=0.25, app_mag=40,
                        factors=(4,))
    out = _run("inspect", str(path))
    assert out.returncode == 0, out.stderr
    assert "objective power : 40x" in out.stdout
    assert "associated images : thumbnail, label, macro" in out.stdout
    lines = [line for line in out.stdout.splitlines() if line.strip().startswith("[")]
    assert len(lines) == 2
    assert "0.25 µm/px  40x" in lines[0]
    assert "1 µm/px  10x" in lines[1]


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


@pytest.mark.timeout(300)
def test_grid_patch_size_in_um_and_mpp(tmp_path):
    import numpy as np
    import wsi_files

    base = wsi_files.rgb_slide((512, 512), seed=22)
    fine, coarse = tmp_path / "fine.tif", tmp_path / "coarse.tif"
    wsi_files.write_generic_pyramid(fine, base, mpp=0.25, compression="zlib", tile=128)
    wsi_files.write_generic_pyramid(coarse, np.ascontiguousarray(base[::2, ::2]), mpp=0.5,
                                    factors=(2,), compression="zlib", tile=128)
    out_path = tmp_path / "um.parquet"
    out = _run("grid", str(fine), str(coarse), "--patch-size", "64um", "--mpp", "0.5",
               "--mask", "tissue", "--mask-mpp", "8", "--min-area", "0",
               "--workers", "1", "--out", str(out_path), "--quiet")
    assert out.returncode == 0, out.stderr
    table = zd.read_table(out_path)
    assert table.meta["grid"]["patch"] == {"y": 128, "x": 128}
    assert [e["level"] for e in table.meta["images"]] == [1, 0]
    assert table.meta["mask_mpp"] == {"asked": 8.0, "images": [8.0, 8.0]}
    assert table.equals(zd.build_table([fine, coarse], patch_size="64um", mpp=0.5,
                                       masks="tissue", mask_mpp=8, min_area=0))

    svs = tmp_path / "slide.svs"
    wsi_files.write_svs(svs, base, mpp=0.25, app_mag=40, factors=(2,))
    out_path = tmp_path / "mag.parquet"
    out = _run("grid", str(svs), "--patch-size", "32um,16um", "--level", "20x",
               "--workers", "1", "--out", str(out_path), "--quiet")
    assert out.returncode == 0, out.stderr
    table = zd.read_table(out_path)
    assert table.meta["images"][0]["level"] == 1
    assert table.meta["grid"]["patch"] == {"y": 64, "x": 32}  # at 0.5 µm/px


@pytest.mark.timeout(400)
def test_demo_runs_the_main_job_end_to_end(tmp_path):
    out = _run("demo", "--workdir", str(tmp_path), "--size", "2048", "--workers", "1",
               "--batches", "2")
    assert out.returncode == 0, out.stderr
    assert "[3/3] streaming patches to torch" in out.stdout
    assert "batch 1: images (16, 3, 256, 256)" in out.stdout
    assert os.path.exists(tmp_path / "patches.parquet")
    assert len(zd.read_table(tmp_path / "patches.parquet")) > 0


# -- bad arguments: one line, exit 2, before any cluster (issue 10, item 13) ----

def _one_error_line(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zarrdask grid: error: "), out.stderr
    return lines[0]


@pytest.mark.parametrize(("args", "expected"), [
    (["--workers", "0"], "argument --workers: '0' is not an integer >= 1"),
    (["--patch-size", "abc"], "argument --patch-size: 'abc' is not a positive integer"),
    (["--pad", "-1"], "argument --pad"),
    (["--patch-size", "64qm"], "argument --patch-size: '64qm' is not a positive integer"),
    (["--patch-size", "64um,0"], "is not a length such as 128um or an integer >= 1"),
    (["--level", "-1"], "argument --level: '-1' is not a level index"),
    (["--mpp", "0"], "argument --mpp: '0' is not a positive number"),
    (["--mask-mpp", "-2"], "argument --mask-mpp: '-2' is not a positive number"),
    (["--mpp", "0.5", "--level", "1"], "--level 1 and --mpp 0.5 both given"),
    (["--storage-options", "{anon: true"], "argument --storage-options: '{anon: true' is not valid JSON"),
    (["--storage-options", "\"anon\""], "argument --storage-options: '\"anon\"' is a JSON str"),
])
def test_grid_bad_arguments_exit_2_with_one_line(tmp_path, args, expected):
    out_path = tmp_path / "t.parquet"
    base = {"--patch-size": "64", "--out": str(out_path)}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    argv = ["grid", str(tmp_path / "missing.zarr"), "--quiet"]
    for flag, value in base.items():
        argv += [flag, value]
    out = subprocess.run([EXE, *argv], capture_output=True, text=True, timeout=90)
    assert expected in _one_error_line(out)
    assert not out_path.exists()


def test_grid_unwritable_out_is_reported_before_any_work(tmp_path):
    # the missing source would be reported first if the output were checked late
    target = "/proc/zarrdask-grid.parquet"  # /proc takes no new files, also for root
    out = subprocess.run([EXE, "grid", str(tmp_path / "missing.zarr"), "--patch-size", "64",
                          "--out", target, "--quiet"], capture_output=True, text=True, timeout=90)
    line = _one_error_line(out)
    assert f"cannot write the coordinate table to {target}" in line and ".tmp-" not in line
    assert "missing.zarr" not in line


def test_grid_unreachable_scheduler_is_one_line(tmp_path):
    import socket

    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    out = subprocess.run([EXE, "grid", str(tmp_path / "missing.zarr"), "--patch-size", "64",
                          "--scheduler", address, "--out", str(tmp_path / "t.parquet"), "--quiet"],
                         capture_output=True, text=True, timeout=90)
    line = _one_error_line(out)
    assert f"argument --scheduler: cannot reach a dask scheduler at {address}" in line


# -- a real scheduler and worker in another directory (issue 10, item 8) -------

@contextlib.contextmanager
def _dask_processes(tmp_path, *, workers: int):
    """`dask scheduler` and ``workers`` `dask worker` processes (own cwd)."""
    import json
    import time

    dask_exe = str(Path(sys.executable).with_name("dask"))
    worker_cwd = tmp_path / "worker-home"
    worker_cwd.mkdir()
    info = tmp_path / "scheduler.json"
    procs = [subprocess.Popen([dask_exe, "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", str(info)],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert info.exists(), "dask scheduler did not start"
        address = json.loads(info.read_text())["address"]
        if workers:
            procs.append(subprocess.Popen(
                [dask_exe, "worker", address, "--nworkers", str(workers), "--nthreads", "1",
                 "--no-dashboard", "--local-directory", str(worker_cwd)],
                cwd=worker_cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield address
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def scheduler_and_worker(tmp_path):
    with _dask_processes(tmp_path, workers=1) as address:
        yield address


@pytest.mark.timeout(120)
def test_grid_on_a_scheduler_without_workers_is_one_line_not_a_hang(tmp_path):
    with _dask_processes(tmp_path, workers=0) as address:
        out = subprocess.run([EXE, "grid", str(tmp_path / "missing.zarr"), "--patch-size", "64",
                              "--scheduler", address, "--wait-workers", "2",
                              "--out", str(tmp_path / "t.parquet"), "--quiet"],
                             capture_output=True, text=True, timeout=90)
    line = _one_error_line(out)
    assert f"the scheduler at {address} has no worker after 2 s" in line


@pytest.mark.timeout(300)
def test_grid_on_a_scheduler_whose_workers_run_elsewhere(tmp_path, scheduler_and_worker):
    from zarrdask.datasets import write_synthetic_slide

    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    write_synthetic_slide(project / "data" / "slide.zarr", size=1024, chunk=256, levels=3, seed=7)
    out = _run("grid", "data/slide.zarr", "--patch-size", "128", "--mask", "tissue",
               "--scheduler", scheduler_and_worker, "--out", "table.parquet", "--quiet",
               cwd=str(project))
    assert out.returncode == 0, out.stderr
    table = zd.read_table(project / "table.parquet")
    expected = zd.build_table(str(project / "data" / "slide.zarr"), patch_size=128, masks="tissue")
    assert table.equals(expected) and len(table) > 0
    assert table.images[0]["open"]["source"] == str(project / "data" / "slide.zarr")


# -- cohorts: file lists, globs, --cohort through separate processes (issue 13) ------

@pytest.mark.slow
@pytest.mark.timeout(300)
def test_grid_cohort_from_a_file_list_and_a_glob_on_separate_processes(tmp_path,
                                                                       scheduler_and_worker):
    from zarrdask.datasets import write_synthetic_slide

    project = tmp_path / "project"
    for i in range(4):
        write_synthetic_slide(project / "data" / f"s{i}.zarr", size=256, chunk=64, levels=1,
                              seed=i)
    (project / "list.txt").write_text("# the first two\ndata/s0.zarr\n\ndata/s1.zarr\n")
    out = subprocess.run([EXE, "grid", "data/s[23].zarr", "--files-from", "-", "--cohort",
                          "--images-per-task", "3", "--patch-size", "64", "--mask", "tissue",
                          "--scheduler", scheduler_and_worker, "--out", "cohort.parquet",
                          "--quiet"], input=(project / "list.txt").read_text(),
                         capture_output=True, text=True, cwd=project, timeout=240)
    assert out.returncode == 0, out.stderr
    assert "'images_opened': 4" in out.stdout
    table = zd.read_table(project / "cohort.parquet")
    names = [os.path.basename(e["name"]) for e in table.images]
    assert names == ["s2.zarr", "s3.zarr", "s0.zarr", "s1.zarr"]
    expected = zd.build_table([str(project / "data" / n) for n in names], patch_size=64,
                              masks="tissue")
    assert table.frame.equals(expected.frame) and len(table) > 0
    # the same list from a file, built again: every image reused
    again = _run("grid", "--files-from", "list.txt", "data/s[23].zarr", "--cohort",
                 "--patch-size", "64", "--mask", "tissue", "--scheduler",
                 scheduler_and_worker, "--out", "cohort.parquet", "--quiet", cwd=str(project))
    assert again.returncode == 0, again.stderr
    assert "'images_opened': 0, 'images_reused': 4" in again.stdout


def test_grid_without_any_source_or_with_an_unreadable_list_is_one_line(tmp_path):
    out = _run("grid", "--patch-size", "64", "--out", str(tmp_path / "t.parquet"), "--quiet")
    assert "no image given" in _one_error_line(out)
    out = _run("grid", "--files-from", str(tmp_path / "nope.txt"), "--patch-size", "64",
               "--out", str(tmp_path / "t.parquet"), "--quiet")
    assert "cannot read the file list" in _one_error_line(out)
