"""build_cohort: the grid of many images built in batched tasks, written as
a partitioned table, incrementally (issue 13, items 3-5)."""

from __future__ import annotations

import os

import numpy as np
import pytest

import zarrdask as zd
import zarrdask.grid.cohort_task as cohort_task
from zarrdask.datasets import write_synthetic_slide
from zarrdask.errors import GridParameterError
from zarrdask.grid.inputs import expand_sources
from zarrdask.table_layout import FolderTable


@pytest.fixture
def slides(tmp_path):
    folder = tmp_path / "slides"
    for i in range(5):
        write_synthetic_slide(folder / f"s{i}.zarr", size=256, chunk=64, levels=1, seed=i)
    return folder


def _paths(folder):
    return sorted(str(folder / n) for n in os.listdir(folder))


def _build(source, out, **kwargs):
    kwargs.setdefault("images_per_task", 2)
    return zd.build_cohort(source, out=out, patch_size=64, masks="tissue", **kwargs)


@pytest.fixture
def opens(monkeypatch):
    """Counts image opens in the cohort tasks (local threads: in this process)."""
    calls = []
    original = cohort_task.open_item

    def counting(item, **kwargs):
        calls.append(str(item))
        return original(item, **kwargs)

    monkeypatch.setattr(cohort_task, "open_item", counting)
    return calls


def test_a_cohort_table_has_the_rows_of_build_table(tmp_path, slides, opens):
    out = tmp_path / "cohort.parquet"
    table = _build(slides, out)
    assert isinstance(table, FolderTable) and len(table.partitions) == 3
    assert len(opens) == 5  # each image opened once, in its task
    expected = zd.build_table(_paths(slides), patch_size=64, masks="tissue")
    back = zd.read_table(out)
    assert back.frame.equals(expected.frame) and len(back) == len(table) > 0
    assert back.hash == table.hash  # the manifest's hash is the rows' hash
    for got, want in zip(back.images, expected.images, strict=True):
        assert {k: got[k] for k in want} == want
    assert back.meta["modalities"]["masks"] == ["tissue"] * 5
    ds = zd.PatchDataset(str(out))
    assert ds._folder is not None and len(ds) == len(expected)
    # the images table has the summary columns the dataset groups layouts by:
    # constructing it parsed one entry (the one layout's representative)
    assert set(table.images(["dtype"])["dtype"]) == {"uint8"}
    assert len(ds._catalog._parsed) == 1 and [lay.count for lay in ds._layouts["images"]] == [5]


def test_a_rebuild_opens_only_new_and_changed_images(tmp_path, slides, opens):
    out = tmp_path / "cohort.parquet"
    _build(slides, out).close()
    write_synthetic_slide(slides / "s5.zarr", size=256, chunk=64, levels=1, seed=5)
    write_synthetic_slide(slides / "s2.zarr", size=192, chunk=64, levels=1, seed=9)  # changed
    opens.clear()
    table = _build(slides, out)
    assert sorted(os.path.basename(p) for p in opens) == ["s2.zarr", "s5.zarr"]
    assert table.manifest["meta"]["build"] == {"images_opened": 2, "images_reused": 4,
                                               "skipped": 0, "images_per_task": 2}
    expected = zd.build_table(_paths(slides), patch_size=64, masks="tissue")
    assert zd.read_table(out).frame.equals(expected.frame)
    # other options: every image again
    opens.clear()
    _build(slides, out, min_area=0.5).close()
    assert len(opens) == 6


def test_an_interrupted_build_leaves_the_previous_table(tmp_path, slides, monkeypatch):
    out = tmp_path / "cohort.parquet"
    _build(slides, out).close()
    before = zd.read_table(out)
    write_synthetic_slide(slides / "s1.zarr", size=192, chunk=64, levels=1, seed=7)

    def boom(item, **kwargs):
        raise KeyboardInterrupt  # the build stopped mid-way

    monkeypatch.setattr(cohort_task, "open_item", boom)
    with pytest.raises(KeyboardInterrupt):
        _build(slides, out)
    assert zd.read_table(out).equals(before)
    assert not [n for n in os.listdir(out) if not n.startswith((".v-", "current"))]


def test_unreadable_images_are_skipped_and_ids_stay_dense(tmp_path, slides):
    (slides / "a-broken.zarr").mkdir()  # first in order: shifts every later batch
    out = tmp_path / "cohort.parquet"
    with pytest.raises(zd.ZarrdaskError, match="a-broken.zarr"):
        _build(slides, out)
    assert not os.path.exists(out)
    table = _build(slides, out, on_error="skip")
    back = zd.read_table(out)
    assert [s["source"] for s in back.meta["skipped"]] == [str(slides / "a-broken.zarr")]
    assert len(back.images) == 5 and [e["image_id"] for e in back.images] == list(range(5))
    good = [p for p in _paths(slides) if "broken" not in p]
    assert back.frame.equals(zd.build_table(good, patch_size=64, masks="tissue").frame)
    assert back.hash == table.hash
    parts = table.partitions
    assert parts["image_min"].tolist() == [0, 1, 3]


def test_globs_folders_and_iterables_name_the_same_images(tmp_path, slides):
    by_glob = expand_sources(str(slides / "s*.zarr"))
    assert by_glob == _paths(slides) == expand_sources(str(slides))
    assert expand_sources(iter(by_glob[:2])) == by_glob[:2]
    assert expand_sources(str(slides / "s0.zarr")) == [str(slides / "s0.zarr")]
    with pytest.raises(GridParameterError, match="matches no file"):
        expand_sources(str(slides / "*.svs"))
    assert zd.build_table(str(slides / "s[01].zarr"), patch_size=64).equals(
        zd.build_table(iter(by_glob[:2]), patch_size=64))
    out = tmp_path / "glob.parquet"
    _build(str(slides / "s*.zarr"), out, images_per_task=3).close()
    assert zd.read_table(out).frame.equals(
        zd.build_table(by_glob, patch_size=64, masks="tissue").frame)


def test_a_cohort_on_a_distributed_cluster_is_the_same_table(tmp_path, slides, client):
    local = _build(slides, tmp_path / "local.parquet")
    remote = _build(slides, tmp_path / "remote.parquet", client=client, images_per_task=1)
    assert remote.hash == local.hash
    assert np.array_equal(zd.read_table(remote.path).frame.to_numpy(),
                          zd.read_table(local.path).frame.to_numpy())


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_worker_killed_mid_build_still_gives_the_same_table(tmp_path):
    import glob
    import signal
    import threading
    import time

    from distributed import Client, LocalCluster

    folder = tmp_path / "slides"
    for i in range(12):
        write_synthetic_slide(folder / f"s{i:02d}.zarr", size=1024, chunk=128, levels=1, seed=i)
    expected = _build(folder, tmp_path / "local.parquet", images_per_task=1)
    out = tmp_path / "killed.parquet"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        done: dict = {}
        thread = threading.Thread(target=lambda: done.update(
            table=_build(folder, out, images_per_task=1, client=client)))
        thread.start()
        deadline = time.monotonic() + 120
        while not glob.glob(str(tmp_path / ".killed.parquet.tmp-*" / ".v-*" / "part-*.parquet")):
            assert time.monotonic() < deadline and thread.is_alive(), "no part file appeared"
            time.sleep(0.02)
        pids = client.run(os.getpid)
        assert thread.is_alive()  # the build is under way when a worker dies
        os.kill(next(iter(pids.values())), signal.SIGKILL)
        thread.join(240)
        assert not thread.is_alive()
    assert done["table"].hash == expected.hash
    assert zd.read_table(out).equals(zd.read_table(expected.path))


def test_images_files_merged_on_the_workers_span_batches_and_skips(tmp_path, slides,
                                                                   monkeypatch):
    import zarrdask.grid.cohort_images as cohort_images
    import zarrdask.table_layout as table_layout

    # 3 images per images file, 2 per batch: files straddle batches, and the
    # skipped first image shifts every batch after it
    monkeypatch.setattr(cohort_images, "IMAGES_PER_FILE", 3)
    monkeypatch.setattr(table_layout, "IMAGES_PER_FILE", 3)
    (slides / "a-broken.zarr").mkdir()
    out = tmp_path / "cohort.parquet"
    table = _build(slides, out, on_error="skip")
    version = out / "current"
    files = sorted(os.listdir(version / "_images"))
    assert files == ["images-000000.parquet", "images-000001.parquet"]
    assert not (version / ".batches").exists()  # batch files removed once merged
    back = zd.read_table(out)
    assert [e["image_id"] for e in back.images] == list(range(5))
    assert [os.path.basename(e["name"]) for e in back.images] == [f"s{i}.zarr" for i in range(5)]
    good = [p for p in _paths(slides) if "broken" not in p]
    assert back.frame.equals(zd.build_table(good, patch_size=64, masks="tissue").frame)
    # a rebuild reads the old rows of these files by image id: all reused
    again = _build(slides, out, on_error="skip")
    assert again.manifest["meta"]["build"]["images_reused"] == 5
    assert again.hash == table.hash


def test_a_rebuild_links_the_part_files_of_unchanged_batches(tmp_path, slides):
    out = tmp_path / "cohort.parquet"
    _build(slides, out).close()
    inode = {n: os.stat(out / "current" / n).st_ino
             for n in ("part-000000.parquet", "part-000001.parquet", "part-000002.parquet")}
    write_synthetic_slide(slides / "s5.zarr", size=256, chunk=64, levels=1, seed=5)
    table = _build(slides, out)
    again = {n: os.stat(out / "current" / n).st_ino for n in inode}
    assert again["part-000000.parquet"] == inode["part-000000.parquet"]
    assert again["part-000001.parquet"] == inode["part-000001.parquet"]
    assert again["part-000002.parquet"] != inode["part-000002.parquet"]  # s4 with the new s5
    assert table.manifest["meta"]["build"]["images_opened"] == 1
    expected = zd.build_table(_paths(slides), patch_size=64, masks="tissue")
    assert zd.read_table(out).frame.equals(expected.frame)


def test_new_images_of_a_rebuild_are_spread_over_tasks():
    from zarrdask.grid.cohort import _cuts

    # a full build: runs of min(256, n / 16)
    assert _cuts([None] * 1000, None, None) == [(a, min(a + 63, 1000)) for a in range(0, 1000, 63)]
    # 10,000 unchanged images then 100 new ones: the old runs of 256, the new
    # ones in tasks of 7
    cuts = _cuts(list(range(10_000)) + [None] * 100, None, None)
    assert cuts[:39] == [(a, a + 256) for a in range(0, 9984, 256)]
    assert cuts[39] == (9984, 10_007) and cuts[-1][1] == 10_100
    assert max(b - a for a, b in cuts[40:]) == 7
    # given explicitly: exactly that
    assert _cuts(list(range(10)) + [None] * 10, 4, None) == [(a, min(a + 4, 20))
                                                             for a in range(0, 20, 4)]
