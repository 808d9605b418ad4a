"""Folder tables (over ``_DATASET_ROWS`` rows): atomic replacement for readers,
safe concurrent writers, old versions removed (issue 10, item 12)."""

from __future__ import annotations

import os
import threading

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import zarrdask.table as table_mod
from zarrdask.errors import TableError
from zarrdask.table import PatchTable, read_table


def _table(n: int, tag: str) -> PatchTable:
    frame = pd.DataFrame({
        "image_id": np.zeros(n, dtype=np.int32), "y": np.arange(n) * 8, "x": np.arange(n) * 4,
        "chunk_id": np.arange(n) // 4, "coverage": np.ones(n, dtype=np.float32),
    })
    meta = {"grid": {"dims": ["y", "x"], "patch": {"y": 8, "x": 8}},
            "images": [{"image_id": 0, "name": tag}], "inputs_hash": tag}
    return PatchTable(frame, meta)


@pytest.fixture
def small_parts(monkeypatch):
    monkeypatch.setattr(table_mod, "_DATASET_ROWS", 4)


def _leftovers(folder, parent):
    """Names that are neither the live version nor the link."""
    live = os.readlink(os.path.join(folder, "current"))
    inside = sorted(n for n in os.listdir(folder) if n not in ("current", live))
    beside = sorted(n for n in os.listdir(parent) if n != os.path.basename(folder))
    return inside, beside


@pytest.mark.timeout(120)
def test_concurrent_replacements_never_show_a_missing_or_partial_table(tmp_path, small_parts):
    path = str(tmp_path / "big.parquet")
    tables = {"a": _table(22, "a"), "b": _table(13, "b")}  # 6 and 4 part files
    tables["a"].to_parquet(path)
    replaces = 60
    failures: list[BaseException] = []
    done = threading.Event()
    reads = []

    def writer(tag):
        try:
            for _ in range(replaces):
                tables[tag].to_parquet(path)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failures.append(exc)

    def reader():
        while not done.is_set() or not reads:
            try:
                back = read_table(path)
                tag = back.images[0]["name"]
                assert back.frame.equals(tables[tag].frame), f"partial or mixed table {tag}"
                reads.append(tag)
            except BaseException as exc:  # noqa: BLE001
                failures.append(exc)
                return

    threads = [threading.Thread(target=writer, args=(t,)) for t in "ab"]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    assert not failures, failures[:3]
    assert len(reads) > 0
    # no temporary or aside names beside the table, and no half-written version inside
    inside, beside = _leftovers(path, str(tmp_path))
    assert beside == []
    assert all(n.startswith(".v-") for n in inside), inside
    # versions still held by the reader during the last clean-up go at the next write
    tables["b"].to_parquet(path)
    assert _leftovers(path, str(tmp_path)) == ([], [])
    assert read_table(path).frame.equals(tables["b"].frame)


def test_a_folder_table_stays_a_folder_and_keeps_one_version(tmp_path, small_parts):
    path = str(tmp_path / "t.parquet")
    _table(10, "a").to_parquet(path)
    _table(3, "b").to_parquet(path)  # small now, but the folder keeps its layout: atomic
    assert os.path.isdir(path) and len(read_table(path)) == 3
    assert _leftovers(path, str(tmp_path)) == ([], [])
    assert len(pd.read_parquet(path)) == 3


def test_a_single_file_table_can_grow_into_a_folder(tmp_path, small_parts):
    path = str(tmp_path / "t.parquet")
    _table(3, "a").to_parquet(path)
    assert os.path.isfile(path)
    _table(10, "b").to_parquet(path)
    assert os.path.isdir(path) and len(read_table(path)) == 10
    assert _leftovers(path, str(tmp_path)) == ([], [])


def test_a_folder_of_the_layout_before_versions_is_read_and_converted(tmp_path, small_parts):
    path = tmp_path / "old.parquet"
    path.mkdir()
    old = _table(10, "old")
    arrow = old._arrow()
    for i, start in enumerate(range(0, 10, 4)):
        pq.write_table(arrow.slice(start, 4), path / f"part-{i:05d}.parquet")
    assert read_table(path).frame.equals(old.frame)
    _table(9, "new").to_parquet(path)
    assert len(read_table(path)) == 9
    assert _leftovers(str(path), str(tmp_path)) == ([], [])
    assert len(pd.read_parquet(path)) == 9


def test_a_folder_that_is_no_table_is_never_replaced(tmp_path, small_parts):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(TableError, match="not a coordinate table"):
        _table(10, "a").to_parquet(folder)
    with pytest.raises(TableError, match="not a coordinate table"):
        read_table(folder)
    assert os.listdir(folder) == ["notes.txt"]


def _write_many(path: str, tag: str, n: int, replaces: int) -> None:
    """A writer process: replace the folder table ``replaces`` times."""
    table_mod._DATASET_ROWS = 4
    table = _table(n, tag)
    for _ in range(replaces):
        table.to_parquet(path)


def _read_until(path: str, stop_file: str, out: str) -> None:
    """A reader process: read until ``stop_file`` exists; report what it saw."""
    seen, problems = 0, []
    expected = {"a": _table(22, "a").frame, "b": _table(13, "b").frame}
    while not os.path.exists(stop_file) or seen == 0:
        try:
            back = read_table(path)
            if not back.frame.equals(expected[back.images[0]["name"]]):
                problems.append("partial or mixed table")
            seen += 1
        except Exception as exc:  # noqa: BLE001 - reported to the test
            problems.append(repr(exc))
            break
    with open(out, "w") as f:
        f.write(f"{seen}\n" + "\n".join(problems))


@pytest.mark.slow  # spawning three interpreters takes ~15 s on a loaded machine
@pytest.mark.timeout(180)
def test_writer_and_reader_processes_never_see_a_missing_or_partial_table(tmp_path, small_parts):
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    path = str(tmp_path / "big.parquet")
    _table(22, "a").to_parquet(path)
    stop, report = str(tmp_path / "stop"), str(tmp_path / "report")
    reader = ctx.Process(target=_read_until, args=(path, stop, report))
    writers = [ctx.Process(target=_write_many, args=(path, tag, n, 40))
               for tag, n in (("a", 22), ("b", 13))]
    reader.start()
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
    open(stop, "w").close()
    reader.join(60)
    assert [w.exitcode for w in writers] == [0, 0] and reader.exitcode == 0
    seen, *problems = open(report).read().split("\n")
    assert int(seen) > 0 and not [p for p in problems if p], problems[:3]
    _table(13, "b").to_parquet(path)
    assert _leftovers(path, str(tmp_path)) == ([], ["report", "stop"])
