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
    # options of the CLI package (issue 15)
    (["--spatial-axes", "YX", "--patch-size", "64,64,64"],
     "argument --patch-size: 3 values for --spatial-axes YX"),
    (["--spatial-axes", "YX", "--stride", "64,64,64"],
     "argument --stride: 3 values for --spatial-axes YX"),
    (["--patch-size", "8,64,64,64"], "argument --patch-size: 4 values, more than z, y, x"),
    (["--spatial-axes", "TZYX", "--patch-size", "1,8,64,64", "--pad", "1,2"],
     "argument --pad: 2 values for --spatial-axes TZYX"),
    (["--spatial-axes", "Y1"], "argument --spatial-axes: 'Y1' is not a string of distinct"),
    (["--spatial-axes", "YY"], "argument --spatial-axes: 'YY' is not a string of distinct"),
    (["--sampler", "random"], "argument --sampler: invalid choice: 'random'"),
    (["--on-error", "ignore"], "argument --on-error: invalid choice: 'ignore'"),
    (["--threads", "0"], "argument --threads: '0' is not an integer >= 1"),
    (["--wait-workers", "soon"], "argument --wait-workers: 'soon' is not a positive number"),
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


def _unused_address() -> str:
    import socket

    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"


def test_grid_unreachable_scheduler_is_one_line(tmp_path, slide_v2):
    address = _unused_address()
    out = subprocess.run([EXE, "grid", slide_v2, "--patch-size", "64",
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
def test_grid_on_a_scheduler_without_workers_is_one_line_not_a_hang(tmp_path, slide_v2):
    with _dask_processes(tmp_path, workers=0) as address:
        out = subprocess.run([EXE, "grid", slide_v2, "--patch-size", "64",
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


# -- a CLI that helps (issue 15) -------------------------------------------------

def test_version_names_zarrdask_and_its_main_dependencies():
    out = _run("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"zarrdask {zd.__version__} (Python ")
    assert "dask " in out.stdout and "torch " in out.stdout


def test_every_option_has_help_and_help_shows_defaults_and_examples():
    import argparse

    from zarrdask.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            assert action.help, f"zarrdask {name} {action.option_strings or action.dest}: no help"
        text = sub.format_help()
        assert "examples:" in text and f"zarrdask {name} " in text.split("examples:")[1], name
        assert "``" not in text and ":func:" not in text, name
    top = parser.format_help()
    assert "``" not in top and "examples:" in top
    grid_help = _run("grid", "--help").stdout
    for shown in ("LocalCluster worker processes (default: 2)", "(default: raise)",
                  "(default: grid)", "seed of random samplers (default: 0)"):
        assert shown in " ".join(grid_help.split()), shown


def test_inspect_json(slide_v2):
    import json

    out = _run("inspect", slide_v2, "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["dims"] == ["c", "y", "x"] and info["dtype"] == "uint8"
    assert [lv["shape"]["y"] for lv in info["levels"]] == [1024, 512, 256]
    assert info["levels"][0]["chunks"] == {"c": 3, "y": 256, "x": 256}
    assert info["levels"][0]["mpp"] == 0.5 and info["levels"][1]["mpp"] == 1.0


@pytest.mark.timeout(300)
def test_grid_json_summary_and_progress_over_masks_and_grid(tmp_path, slide_v2):
    import json

    out_path = tmp_path / "t.parquet"
    out = _run("grid", slide_v2, slide_v2, "--patch-size", "128", "--mask", "tissue",
               "--min-area", "0.5", "--level", "1", "--workers", "1", "--json",
               "--out", str(out_path))
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)  # stdout is only the JSON; the bar is on stderr
    table = zd.read_table(out_path)
    counts = table.frame.groupby("image_id").size()
    assert summary["patches"] == len(table) > 0
    assert [im["patches"] for im in summary["images"]] == [counts[0], counts[1]]
    assert summary["images"][0]["level"] == 1 and summary["images"][0]["mpp"] == 1.0
    assert summary["images"][0]["shape"] == {"c": 3, "y": 512, "x": 512}
    cov = table.frame.groupby("image_id")["coverage"].mean()
    assert summary["images"][1]["mean_coverage"] == pytest.approx(cov[1], abs=1e-4)
    assert 0.5 <= summary["mean_coverage"] <= 1
    assert summary["patch_size"] == {"y": 128, "x": 128} and summary["hash"] == table.hash
    assert set(summary["timings_s"]) == {"cluster", "build", "write", "total"}
    assert summary["out"] == str(out_path) and summary["skipped"] == []
    spec = {"source": slide_v2, "level": 1}  # the progress path builds the same table
    assert table.equals(zd.build_table([spec, spec], patch_size=128, masks="tissue",
                                       min_area=0.5))
    bar = out.stderr.replace("\r", "\n")
    assert "masks:" in bar and "grid: 100%" in bar, bar  # one bar over both stages
    assert "/4 " in bar  # 2 masks + 2 grid tasks


@pytest.mark.timeout(300)
def test_grid_text_summary_lists_images_totals_skips_and_time(tmp_path, slide_v2):
    missing = str(tmp_path / "missing.zarr")
    out_path = tmp_path / "t.parquet"
    out = _run("grid", slide_v2, missing, "--patch-size", "256", "--on-error", "skip",
               "--workers", "1", "--quiet", "--out", str(out_path))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["image", "source", "level", "µm/px", "patches", "mean",
                                "coverage"]
    assert lines[1].split()[:5] == ["0", slide_v2, "0", "0.5", "16"]
    assert lines[2].split() == ["total", "16", "1.000"]
    assert lines[3].startswith(f"skipped image 1 ({missing}):")
    assert lines[4].startswith("time ") and "cluster" in lines[4] and "build" in lines[4]
    assert lines[5] == f"written to {out_path}"


@pytest.mark.timeout(300)
def test_grid_spatial_axes_names_the_list_values(tmp_path, slide_v2):
    out_path = tmp_path / "t.parquet"
    out = _run("grid", slide_v2, "--spatial-axes", "YX", "--patch-size", "256,128",
               "--workers", "1", "--quiet", "--out", str(out_path))
    assert out.returncode == 0, out.stderr
    table = zd.read_table(out_path)
    assert table.patch_size == {"y": 256, "x": 128}
    assert len(table) == 4 * 8


def test_grid_missing_source_is_reported_before_any_cluster(tmp_path):
    # an unreachable --scheduler would be reported if the cluster came first
    missing = str(tmp_path / "missing.zarr")
    out = subprocess.run([EXE, "grid", missing, "--patch-size", "64", "--scheduler",
                          _unused_address(), "--out", str(tmp_path / "t.parquet")],
                         capture_output=True, text=True, timeout=90)
    line = _one_error_line(out)
    assert f"argument sources: {missing} does not exist" in line
    assert "--on-error skip" in line


def test_other_commands_bad_arguments_exit_2_with_one_line(tmp_path):
    for argv, prog, expected in [
        (["inspect", "x", "--storage-options", "[1]"], "zarrdask inspect",
         "argument --storage-options: '[1]' is a JSON list"),
        (["demo", "--size", "10"], "zarrdask demo", "argument --size: '10' is not an integer >= 256"),
        (["show", "x", "--max-side", "0"], "zarrdask show", "argument --max-side"),
        (["frobnicate"], "zarrdask", "argument COMMAND: invalid choice: 'frobnicate'"),
        ([], "zarrdask", "the following arguments are required: COMMAND"),
    ]:
        out = subprocess.run([EXE, *argv], capture_output=True, text=True, timeout=90,
                             cwd=tmp_path)
        assert out.returncode == 2, (argv, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), out.stderr
        assert expected in lines[0], (argv, lines[0])


@contextlib.contextmanager
def _port_8787_taken():
    """Hold 127.0.0.1:8787 (when something else holds it, the condition holds too)."""
    import socket

    with socket.socket() as s:
        with contextlib.suppress(OSError):
            s.bind(("127.0.0.1", 8787))
            s.listen()
        yield


@pytest.mark.timeout(300)
def test_grid_dashboard_link_only_when_asked_and_no_port_noise(tmp_path, slide_v2):
    pytest.importorskip("bokeh")
    argv = ["grid", slide_v2, "--patch-size", "256", "--workers", "1", "--quiet",
            "--out", str(tmp_path / "t.parquet")]
    with _port_8787_taken():
        quiet = _run(*argv)
        asked = _run(*argv, "--dashboard")
    assert quiet.returncode == 0 and asked.returncode == 0, quiet.stderr + asked.stderr
    assert "8787" not in quiet.stderr and "dask dashboard" not in quiet.stdout + quiet.stderr
    link = asked.stdout.splitlines()[0]
    assert link.startswith("dask dashboard: http://127.0.0.1:") and link.endswith("/status")
    assert ":8787/" not in link  # taken: a free port instead, without distributed's warning
    assert "already in use" not in asked.stderr


def test_grid_dashboard_without_bokeh_is_one_line(tmp_path, slide_v2):
    # a `bokeh` that fails to import, first on the path: what a missing bokeh looks like
    fake = tmp_path / "no-bokeh" / "bokeh"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named bokeh')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(fake.parent), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([EXE, "grid", slide_v2, "--patch-size", "64", "--dashboard",
                          "--out", str(tmp_path / "t.parquet")],
                         capture_output=True, text=True, timeout=90, env=env)
    line = _one_error_line(out)
    assert "argument --dashboard: the dask dashboard needs bokeh" in line
    assert "zarrdask[interactive]" in line


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
