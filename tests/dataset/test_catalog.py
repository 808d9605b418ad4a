"""Per-image entries of a partitioned table are parsed when their rows are
read, not when the dataset is built (issue 13: a PatchDataset over 100,000
slides gives its first batch in well under 2 s); the table-wide checks see
one image per distinct layout."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch.utils.data

import zarrdask.table as table_mod
import zarrdask.table_layout as table_layout
from zarrdask.dataset import PatchDataset, PatchLoader
from zarrdask.dataset.catalog import PerImage
from zarrdask.errors import DatasetError, TableError
from zarrdask.table import PatchTable, read_table
from zarrdask.table_files import CURRENT
from zarrdask.table_layout import IMAGES, FolderTable

N_IMAGES = 1200  # more than a single-file table holds: to_parquet writes a folder


def _cohort(table: PatchTable, n: int, *, odd: dict | None = None) -> PatchTable:
    """``n`` images that are all the first image of ``table`` (4 rows each);
    ``odd``: entry fields changed for image ``odd["index"]``."""
    entry = table.images[0]
    rows = table.frame[table.frame["image_id"] == 0].head(4)
    entries = []
    for i in range(n):
        e = {**entry, "image_id": i, "name": f"{entry['name']}#{i}"}
        if odd is not None and i == odd["index"]:
            e.update(odd["fields"])
        entries.append(e)
    frame = rows.loc[rows.index.repeat(n)].reset_index(drop=True)
    frame["image_id"] = np.repeat(np.arange(n), len(rows))
    meta = {**table.meta, "images": entries,
            "modalities": {"images": entries, "labels": [None] * n, "masks": [None] * n}}
    return PatchTable(frame, meta)


@pytest.fixture
def small_parts(monkeypatch):
    """Parts of 400 rows (100 images), images files of 512 images."""
    monkeypatch.setattr(table_mod, "_PART_ROWS", 400)
    monkeypatch.setattr(table_layout, "IMAGES_PER_FILE", 512)


@pytest.fixture
def cohort_path(tmp_path, slide2, make_table, small_parts):
    path = _cohort(make_table([slide2], patch=64), N_IMAGES).to_parquet(tmp_path / "c.parquet")
    folder = FolderTable(path)
    assert FolderTable.applies(path) and folder.num_images == N_IMAGES
    images = folder.images(["image_id", "dtype", "chunks"])
    assert images["image_id"].tolist() == list(range(N_IMAGES))
    assert set(images["dtype"]) == {"uint8"} and set(images["chunks"]) == {
        '{"c":3,"y":256,"x":256}'}
    return path


def test_construction_parses_one_entry_per_layout_and_reading_only_what_it_reads(cohort_path):
    ds = PatchDataset(cohort_path, shuffle=True, seed=2)
    catalog = ds._catalog
    assert [lay.count for lay in ds._layouts["images"]] == [N_IMAGES]
    assert len(catalog._parsed) == 1  # the representative of the one layout
    assert "masks" not in ds._layouts._found  # not read, not chosen from: not looked at
    loader = torch.utils.data.DataLoader(ds, batch_size=16)
    batch = next(iter(loader))
    assert batch["images"].shape == (16, 3, 64, 64)
    # the first part holds 100 images (400 rows of 4): at most those were parsed
    assert 1 < len(catalog._parsed) <= 101
    assert len(ds._sources["images"].built()) <= 101


def test_lazy_entries_give_the_pixels_of_the_eager_table(cohort_path, pixels, slide2):
    lazy = PatchDataset(cohort_path)
    eager = PatchDataset(read_table(cohort_path))
    for a, b in zip(lazy, eager, strict=True):
        assert int(a["image_id"]) == int(b["image_id"])
        np.testing.assert_array_equal(a["images"], b["images"])
    y0, x0 = (int(v) for v in np.asarray(a["position"])[:, 0])
    np.testing.assert_array_equal(a["images"], pixels(slide2)[:, y0:y0 + 64, x0:x0 + 64])


def test_workers_and_the_batch_loader_read_every_row_once(cohort_path):
    ds = PatchDataset(cohort_path, shuffle=True, seed=4)
    seen = []
    for batch in torch.utils.data.DataLoader(ds, batch_size=64, num_workers=2):
        seen += batch["image_id"].tolist()
    assert sorted(seen) == sorted(np.repeat(np.arange(N_IMAGES), 4).tolist())
    loader = PatchLoader(cohort_path, batch_size=100, threads=2)
    ids = np.concatenate([b["image_id"].numpy() for b in loader])
    assert np.array_equal(np.sort(ids), np.repeat(np.arange(N_IMAGES), 4))


def _drop_summary_columns(path: str) -> None:
    """Rewrite the images table as a zarrdask without the dtype/chunks
    summary columns wrote it."""
    folder = os.path.join(os.path.realpath(os.path.join(path, CURRENT)), IMAGES)
    for name in os.listdir(folder):
        table = pq.read_table(os.path.join(folder, name))
        pq.write_table(table.drop_columns(["dtype", "chunks"]), os.path.join(folder, name))


@pytest.mark.parametrize("older", [False, True], ids=["summary-columns", "older-table"])
@pytest.mark.parametrize(("index", "fields", "message"), [
    (977, {"dtype": "uint16"}, r"mix dtypes.*uint16 for image 977 \(.*#977\)"),
    (1100, {"shape": {"c": 4, "y": 1024, "x": 1024}}, r"different channel counts.*1100"),
], ids=["dtype", "channels"])
def test_an_odd_image_deep_in_the_table_fails_at_construction(
        tmp_path, slide2, make_table, small_parts, older, index, fields, message):
    odd = {"index": index, "fields": fields}
    path = _cohort(make_table([slide2], patch=64), N_IMAGES, odd=odd).to_parquet(
        tmp_path / "odd.parquet")
    if older:
        _drop_summary_columns(path)
    with pytest.raises(DatasetError, match=message):
        PatchDataset(path)


def test_images_files_with_an_all_null_column_read_together(cohort_path):
    """An images file whose modality column has no value may store it as
    Arrow's null type; the files still read as one table."""
    folder = os.path.join(os.path.realpath(os.path.join(cohort_path, CURRENT)), IMAGES)
    files = [os.path.join(folder, f) for f in sorted(os.listdir(folder))]
    assert len(files) == 3
    for path, kind in zip(files, [pa.null(), pa.string(), pa.null()], strict=True):
        table = pq.read_table(path)
        column = table.column_names.index("modality.labels")
        pq.write_table(table.set_column(column, "modality.labels",
                                        pa.nulls(table.num_rows, type=kind)), path)
        assert pq.read_schema(path).field("modality.labels").type == kind
    images = FolderTable(cohort_path).images(["image_id", "modality.labels"])
    assert len(images) == N_IMAGES and images["modality.labels"].isna().all()
    ds = PatchDataset(cohort_path)
    assert ds.modalities == ["images"] and len(ds) == 4 * N_IMAGES


def test_path_map_moves_lazy_entries_and_checks_its_roots(cohort_path, slide2, tmp_path):
    moved = tmp_path / "moved"
    os.symlink(os.path.dirname(slide2), moved)
    ds = PatchDataset(cohort_path, path_map={os.path.dirname(slide2): str(moved)})
    sample = next(iter(ds))
    assert ds._catalog.entry("images", int(sample["image_id"]))["name"].startswith(str(moved))
    with pytest.raises(TableError, match="match no local source"):
        PatchDataset(cohort_path, path_map={"/no/such/root": str(moved)})


def test_per_image_values_are_bounded_and_pickle_without_their_cache():
    built = []

    def square(i: int) -> int:
        built.append(i)
        return i * i

    seq = PerImage(10, square, keep=3)
    assert [seq[i] for i in (1, 2, 3, 1, 4)] == [1, 4, 9, 1, 16]
    assert built == [1, 2, 3, 4]  # 1 was kept, not built again
    assert sorted(seq.built()) == [1, 9, 16]  # image 2 went first (least recently used)
    assert seq[-1] == 81 and len(seq) == 10
    with pytest.raises(IndexError):
        seq[10]
    copy = pickle.loads(pickle.dumps(PerImage(4, abs, keep=2)))
    assert copy.built() == [] and copy[3] == 3
