"""PatchDataset/PatchLoader over a partitioned folder table (issue 13, item
2): parts read lazily, only those a reader needs; the same patches as the
table in memory, exactly once over ranks x DataLoader workers."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch.utils.data

import zarrdask.table as table_mod
from zarrdask.dataset import PatchDataset, PatchLoader
from zarrdask.table import read_table
from zarrdask.table_layout import FolderTable


@pytest.fixture
def folder_table(tmp_path, monkeypatch, slide2, slide3, make_table):
    """Two 1024-px slides, 2 x 256 patches of 64 px, in parts of at most 100 rows."""
    monkeypatch.setattr(table_mod, "_DATASET_ROWS", 100)
    monkeypatch.setattr(table_mod, "_PART_ROWS", 100)
    table = make_table([slide2, slide3], patch=64)
    path = table.to_parquet(tmp_path / "cohort.parquet")
    assert FolderTable.applies(path) and len(FolderTable(path).partitions) >= 5
    return path


def _keys(samples) -> list[tuple[int, int, int]]:
    out = []
    for s in samples:
        pos = np.asarray(s["position"])
        out.append((int(s["image_id"]), int(pos[0, 0]), int(pos[1, 0])))
    return out


@pytest.mark.parametrize("shuffle", [False, True])
def test_lazy_reader_gives_the_eager_multiset_of_patches(folder_table, shuffle):
    lazy = PatchDataset(folder_table, shuffle=shuffle, seed=3, chunk_buffer=2)
    eager = PatchDataset(read_table(folder_table), shuffle=shuffle, seed=3, chunk_buffer=2)
    assert lazy._folder is not None and eager._folder is None
    assert len(lazy) == len(eager) == 512 and lazy.state_dict()["table_hash"] == eager._hash
    lazy_samples, eager_samples = list(lazy), list(eager)
    assert Counter(_keys(lazy_samples)) == Counter(_keys(eager_samples))
    assert len(set(_keys(lazy_samples))) == 512
    pixels = {k: np.asarray(s["images"]).tobytes()
              for k, s in zip(_keys(eager_samples), eager_samples, strict=True)}
    for k, s in zip(_keys(lazy_samples), lazy_samples, strict=True):
        assert np.asarray(s["images"]).tobytes() == pixels[k]
    if shuffle:  # seeded: the same order again, another one next epoch
        again = PatchDataset(folder_table, shuffle=True, seed=3, chunk_buffer=2)
        assert _keys(again) == _keys(lazy_samples)
        assert _keys(lazy) != _keys(lazy_samples)


def test_exactly_once_over_two_ranks_by_two_dataloader_workers(folder_table):
    seen = []
    for rank in range(2):
        ds = PatchDataset(folder_table, shuffle=True, seed=1, even_shards=False,
                          _rank=rank, _world_size=2)
        loader = torch.utils.data.DataLoader(ds, batch_size=16, num_workers=2)
        for batch in loader:
            pos = batch["position"].numpy()
            seen += list(zip(batch["image_id"].tolist(), pos[:, 0, 0].tolist(),
                             pos[:, 1, 0].tolist(), strict=True))
    eager = PatchDataset(read_table(folder_table))
    assert len(seen) == len(set(seen)) == 512
    assert set(seen) == set(_keys(eager))


def test_a_reader_loads_only_the_parts_of_its_shard(folder_table, monkeypatch):
    loaded = []
    original = FolderTable.read_partition

    def counting(self, index, columns=None):
        loaded.append(index)
        return original(self, index, columns)

    monkeypatch.setattr(FolderTable, "read_partition", counting)
    ds = PatchDataset(folder_table, shuffle=True, seed=0, _rank=1, _world_size=4)
    assert loaded == []  # construction and len() read no row
    assert len(ds) == 128
    list(ds)
    parts = len(ds._folder.partitions)
    assert 1 <= len(loaded) <= -(-parts // 4) + 1 and len(set(loaded)) == len(loaded)


def test_resume_in_the_middle_of_a_part(folder_table):
    first = PatchDataset(folder_table, shuffle=True, seed=5)
    it = iter(first)
    head = _keys([next(it) for _ in range(150)])
    state = first.state_dict()
    rest_expected = _keys(it)
    resumed = PatchDataset(folder_table, shuffle=True, seed=5)
    resumed.load_state_dict(state)
    assert _keys(resumed) == rest_expected
    assert len(head) + len(rest_expected) == 512


def test_patch_loader_batches_over_a_partitioned_table(folder_table):
    loader = PatchLoader(folder_table, batch_size=32, threads=2, shuffle=True, seed=2)
    assert len(loader) == 16
    keys = []
    for batch in loader:
        pos = batch["position"].numpy()
        keys += list(zip(batch["image_id"].tolist(), pos[:, 0, 0].tolist(),
                         pos[:, 1, 0].tolist(), strict=True))
    assert len(keys) == len(set(keys)) == 512


@pytest.fixture
def labelled_folder_table(tmp_path, monkeypatch, slide2, slide3, make_table):
    """``folder_table`` with a per-patch number and a per-slide text column."""
    monkeypatch.setattr(table_mod, "_DATASET_ROWS", 100)
    monkeypatch.setattr(table_mod, "_PART_ROWS", 100)
    table = make_table([slide2, slide3], patch=64)
    frame = table.frame.copy()
    frame["score"] = (frame["y"] * 7 + frame["x"] * 3 + frame["image_id"]).astype("float32")
    frame["split"] = np.where(frame["image_id"] == 0, "train", "val")
    path = table_mod.PatchTable(frame, table.meta).to_parquet(tmp_path / "labelled.parquet")
    assert len(FolderTable(path).partitions) >= 5
    return path


def _expected_columns(sample) -> tuple[float, str]:
    pos = np.asarray(sample["position"])
    image_id = int(sample["image_id"])
    return (float(pos[0, 0] * 7 + pos[1, 0] * 3 + image_id),
            "train" if image_id == 0 else "val")


def test_columns_of_a_partitioned_table_come_from_each_rows_own_part(labelled_folder_table):
    # the values of a row, read part by part, in 2 DataLoader workers and in
    # PatchLoader batches, are that row's (level-0 and read-level positions
    # coincide here: level 0)
    ds = PatchDataset(labelled_folder_table, shuffle=True, seed=2, columns=["score", "split"])
    assert ds._folder is not None
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    samples = list(loader)
    assert len(samples) == 512 and len(set(_keys(samples))) == 512
    for s in samples:
        assert (float(s["score"]), s["split"]) == _expected_columns(s)
    batches = list(PatchLoader(labelled_folder_table, batch_size=16, shuffle=True, seed=2,
                               columns=["score", "split"]))
    rows = 0
    for b in batches:
        for i in range(len(b["image_id"])):
            one = {"position": b["position"][i], "image_id": b["image_id"][i]}
            assert (float(b["score"][i]), b["split"][i]) == _expected_columns(one)
            rows += 1
    assert rows == 512


def test_unknown_column_of_a_partitioned_table_is_named_at_construction(labelled_folder_table):
    from zarrdask.errors import DatasetError

    with pytest.raises(DatasetError, match="'diagnosis', which is not a column"):
        PatchDataset(labelled_folder_table, columns=["diagnosis"])
