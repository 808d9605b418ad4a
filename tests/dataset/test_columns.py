"""Extra table columns in the samples (issue 12): per-patch columns and
slide-level labels joined with join_image_labels, through DataLoader worker
processes, PatchLoader batches, shuffling and resume."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

import zarrdask as zd
from zarrdask.dataset import PatchDataset, PatchLoader
from zarrdask.errors import DatasetError, TableError

SPLITS = {0: "train", 1: "val"}
DIAGNOSIS = {0: 3, 1: 7}


def _cls(image_id, y, x):
    return (y // 128 + 2 * (x // 128) + image_id) % 5


@pytest.fixture(scope="module")
def labelled(slide3, slide2, make_table):
    """Two slides; per-patch ``cls`` (int) and ``weight`` (float) columns and
    slide-level ``diagnosis``/``split`` joined by file stem."""
    table = make_table([slide3, slide2], patch=128, stride=96)
    frame = table.frame.copy()
    frame["cls"] = _cls(frame["image_id"], frame["y"], frame["x"]).astype(np.int64)
    frame["weight"] = (frame["y"] / 1000.0).astype(np.float32)
    table = zd.PatchTable(frame, table.meta, sources=table.sources)
    slides = pd.DataFrame({"stem": ["slide3", "slide2", "not_in_table"],
                           "diagnosis": [3, 7, 9], "split": ["train", "val", "test"]})
    return zd.join_image_labels(table, slides, on="stem")


def _check_batch(batch) -> int:
    ids = batch["image_id"].numpy()
    pos = batch["position"].numpy()
    assert batch["cls"].dtype == torch.int64 and batch["cls"].shape == ids.shape
    assert batch["weight"].dtype == torch.float32
    assert batch["diagnosis"].dtype == torch.int64
    assert isinstance(batch["split"], list) and all(isinstance(s, str) for s in batch["split"])
    for k, (i, p) in enumerate(zip(ids, pos, strict=True)):
        y, x = int(p[0, 0]), int(p[1, 0])
        assert int(batch["cls"][k]) == _cls(int(i), y, x)
        assert float(batch["weight"][k]) == pytest.approx(y / 1000.0)
        assert int(batch["diagnosis"][k]) == DIAGNOSIS[int(i)]
        assert batch["split"][k] == SPLITS[int(i)]
    return len(ids)


COLUMNS = ["cls", "weight", "diagnosis", "split"]


def test_a_sample_holds_tensors_for_numbers_and_str_for_text(labelled):
    ds = PatchDataset(labelled, columns=COLUMNS)
    assert ds.columns == COLUMNS
    sample = next(iter(ds))
    for name in ("cls", "weight", "diagnosis"):
        assert isinstance(sample[name], torch.Tensor) and sample[name].shape == ()
    assert sample["split"] == "train"
    assert sample["cls"].item() == _cls(sample["image_id"], *sample["position"][:, 0].tolist())
    # without columns= the samples are as before
    assert "cls" not in next(iter(PatchDataset(labelled)))


@pytest.mark.timeout(120)
def test_columns_reach_the_batches_of_dataloader_worker_processes_with_shuffle(labelled):
    ds = PatchDataset(labelled, columns=COLUMNS, shuffle=True, seed=4, chunk_buffer=2)
    loader = DataLoader(ds, batch_size=8, num_workers=2)
    seen = sum(_check_batch(b) for b in loader)
    assert seen == len(labelled)


def test_columns_in_patch_loader_batches_with_shuffle_and_return_tuple(labelled):
    loader = PatchLoader(labelled, batch_size=7, threads=2, columns=COLUMNS, shuffle=True, seed=1)
    assert sum(_check_batch(b) for b in loader) == len(labelled)
    tuples = PatchLoader(labelled, batch_size=7, threads=2, columns=["split", "cls"],
                         return_tuple=True, shuffle=True, seed=1)
    loader.set_epoch(0)  # the epoch the tuple loader reads first
    first_tuple, first_dict = next(iter(tuples)), next(iter(loader))
    assert len(first_tuple) == 2 + 1  # images, split, cls
    images, split, cls = first_tuple
    assert torch.equal(images, first_dict["images"]) and split == first_dict["split"]
    assert torch.equal(cls, first_dict["cls"])


@pytest.mark.timeout(120)
def test_patch_loader_in_worker_processes_yields_the_columns(labelled):
    loader = PatchLoader(labelled, batch_size=6, columns=COLUMNS, shuffle=True, seed=2)
    workers = DataLoader(loader, batch_size=None, num_workers=2)
    assert sum(_check_batch(b) for b in workers) == len(labelled)


def test_resumed_loader_yields_the_columns_of_the_remaining_batches(labelled):
    opts = dict(batch_size=5, threads=2, columns=COLUMNS, shuffle=True, seed=9)
    full = list(PatchLoader(labelled, **opts))
    first = PatchLoader(labelled, **opts)
    it = iter(first)
    for _ in range(3):
        next(it)
    state = first.state_dict()
    resumed = PatchLoader(labelled, **opts)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == len(full) - 3
    for a, b in zip(rest, full[3:], strict=True):
        assert torch.equal(a["cls"], b["cls"]) and a["split"] == b["split"]
        _check_batch(a)


def test_resumed_dataset_yields_the_columns_of_the_remaining_samples(labelled):
    opts = dict(columns=COLUMNS, shuffle=True, seed=5)
    full = list(PatchDataset(labelled, **opts))
    first = PatchDataset(labelled, **opts)
    it = iter(first)
    for _ in range(17):
        next(it)
    resumed = PatchDataset(labelled, **opts)
    resumed.load_state_dict(first.state_dict())
    rest = list(resumed)
    assert [(s["image_id"], s["split"], s["cls"].item()) for s in rest] == \
        [(s["image_id"], s["split"], s["cls"].item()) for s in full[17:]]


def test_a_parquet_table_keeps_the_columns(labelled, tmp_path):
    path = labelled.to_parquet(tmp_path / "t.parquet")
    ds = PatchDataset(path, columns=COLUMNS)
    assert sum(_check_batch(b) for b in DataLoader(ds, batch_size=16)) == len(labelled)


def test_unknown_reserved_repeated_and_missing_columns_are_typed_errors(labelled):
    with pytest.raises(DatasetError, match=r"'tumour'.*columns are \[.*'cls'.*'split'"):
        PatchDataset(labelled, columns=["cls", "tumour"])
    with pytest.raises(DatasetError, match="already holds"):
        PatchDataset(labelled, columns=["image_id"])
    with pytest.raises(DatasetError, match="twice"):
        PatchDataset(labelled, columns=["cls", "cls"])
    with pytest.raises(DatasetError, match="sequence of column names"):
        PatchDataset(labelled, columns=[1])
    frame = labelled.frame.copy()
    frame["grade"] = pd.array([1, None] * (len(frame) // 2) + [1] * (len(frame) % 2), dtype="Int64")
    holes = zd.PatchTable(frame, labelled.meta, sources=labelled.sources)
    with pytest.raises(DatasetError, match=r"'grade'.*missing value"):
        PatchDataset(holes, columns=["grade"])
    with pytest.raises(DatasetError, match="'nope'"):
        PatchLoader(labelled, batch_size=4, columns=["nope"])


# -- join_image_labels ------------------------------------------------------------------

def test_join_by_source_mapping_parquet_and_image_id(labelled, slide3, slide2, tmp_path):
    base = zd.PatchTable(labelled.frame[["image_id", "y", "x", "chunk_id", "coverage"]],
                         labelled.meta, sources=labelled.sources)
    by_source = zd.join_image_labels(base, {slide3: 1, os.path.relpath(slide2): 0})
    assert by_source.frame.groupby("image_id")["label"].first().to_dict() == {0: 1, 1: 0}
    assert by_source.hash != base.hash and "label" not in base.frame
    nested = zd.join_image_labels(base, {0: {"grade": 2, "site": "lung"},
                                         1: {"grade": 1, "site": "skin"}}, on="image_id")
    assert nested.frame.groupby("image_id")["site"].first().to_dict() == {0: "lung", 1: "skin"}
    pq = tmp_path / "slides.parquet"
    pd.DataFrame({"source": [slide2, slide3], "y_true": [0.5, 1.5]}).to_parquet(pq)
    joined = zd.join_image_labels(base, pq)
    assert joined.frame.groupby("image_id")["y_true"].first().to_dict() == {0: 1.5, 1: 0.5}
    csv = tmp_path / "slides.csv"
    pd.DataFrame({"stem": ["slide2", "slide3"], "y_true": [0, 1]}).to_csv(csv, index=False)
    assert zd.join_image_labels(base, csv, on="stem").frame["y_true"].tolist() == \
        (base.frame["image_id"] == 0).astype(int).tolist()


def test_join_errors_and_dropping_images_without_a_label(labelled, slide3):
    base = zd.PatchTable(labelled.frame[["image_id", "y", "x", "chunk_id", "coverage"]],
                         labelled.meta, sources=labelled.sources)
    with pytest.raises(TableError, match=r"1 image\(s\).*slide2.*missing='drop'"):
        zd.join_image_labels(base, {slide3: 1})
    dropped = zd.join_image_labels(base, {slide3: 1}, missing="drop")
    assert set(dropped.frame["image_id"]) == {0}
    assert len(dropped) == int((base.frame["image_id"] == 0).sum())
    with pytest.raises(TableError, match="no key column 'source'"):
        zd.join_image_labels(base, pd.DataFrame({"slide": [slide3], "label": [1]}))
    with pytest.raises(TableError, match="more than once"):
        zd.join_image_labels(base, pd.DataFrame({"stem": ["slide3", "slide3"], "label": [1, 2]}),
                             on="stem")
    with pytest.raises(TableError, match=r"already has the columns \['coverage'\]"):
        zd.join_image_labels(base, {0: 1, 1: 2}, on="image_id", name="coverage")
    with pytest.raises(TableError, match="on='path' is unknown"):
        zd.join_image_labels(base, {0: 1}, on="path")
    with pytest.raises(TableError, match="cannot read the images table"):
        zd.join_image_labels(base, "/nonexistent/slides.parquet")
