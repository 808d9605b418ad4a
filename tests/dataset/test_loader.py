"""PatchDataset through real DataLoaders: sharding across workers and ranks,
start methods, resume through StatefulDataLoader, DDP with gloo."""

from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from zarrdask.dataset import PatchDataset


def _keys(batches) -> list[tuple[int, int, int]]:
    out = []
    for b in batches:
        pos = b["position"].numpy()
        ids = b["image_id"].numpy()
        out.extend((int(i), int(p[0, 0]), int(p[1, 0])) for i, p in zip(ids, pos, strict=True))
    return out


@pytest.fixture(scope="module")
def two_slides(slide3, slide2, make_table):
    return make_table([slide3, slide2], patch=128, stride=96)


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("workers", [0, 1, 2, 3])
def test_each_patch_once_per_epoch_for_any_number_of_workers(two_slides, workers, shuffle):
    ds = PatchDataset(two_slides, shuffle=shuffle, seed=4, chunk_buffer=3)
    keys = _keys(DataLoader(ds, batch_size=7, num_workers=workers))
    assert len(keys) == len(two_slides) == len(ds)
    assert len(set(keys)) == len(keys)
    assert ds.read_stats()["decoded"] == (0 if workers else ds.read_stats()["decoded"])
    if workers:
        assert ds.read_stats()["modes"] == {}, "stores must open in the workers, not the parent"


@pytest.mark.parametrize("world", [2, 3])
def test_simulated_ranks_share_the_epoch_exactly_once(two_slides, world):
    seen = []
    for rank in range(world):
        ds = PatchDataset(two_slides, shuffle=True, seed=1, even_shards=False, _rank=rank,
                          _world_size=world)
        keys = _keys(DataLoader(ds, batch_size=5, num_workers=2))
        assert len(keys) == len(ds)
        seen.append(keys)
    flat = [k for keys in seen for k in keys]
    assert len(flat) == len(set(flat)) == len(two_slides)
    assert max(map(len, seen)) - min(map(len, seen)) <= 1


def test_even_shards_equal_counts_and_cover_every_patch(two_slides):
    world = 4
    counts, union = [], set()
    for rank in range(world):
        ds = PatchDataset(two_slides, even_shards=True, _rank=rank, _world_size=world)
        keys = _keys(DataLoader(ds, batch_size=4, num_workers=2))
        counts.append(len(keys))
        union.update(keys)
        assert len(keys) == len(ds)
    assert len(set(counts)) == 1 and counts[0] == -(-len(two_slides) // world)
    assert len(union) == len(two_slides)


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_start_methods(slide3, make_table, pixels, method):
    table = make_table([slide3], patch=128, labels=[(slide3, 1)])
    ds = PatchDataset(table, shuffle=True, read_threads=1)
    loader = DataLoader(ds, batch_size=8, num_workers=2, multiprocessing_context=method)
    full0, full1 = pixels(slide3, 0), pixels(slide3, 1)
    keys = []
    for batch in loader:
        for img, lab, pos in zip(batch["images"], batch["labels"], batch["position"], strict=True):
            (y0, y1), (x0, x1) = pos.tolist()
            np.testing.assert_array_equal(img.numpy(), full0[:, y0:y1, x0:x1])
            np.testing.assert_array_equal(lab.numpy(), full1[:, y0 // 2:y1 // 2, x0 // 2:x1 // 2])
        keys.extend(_keys([batch]))
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 64


def test_shuffled_loader_order_is_seeded_and_changes_with_epoch(two_slides):
    ds = PatchDataset(two_slides, shuffle=True, seed=9)
    first = _keys(DataLoader(ds, batch_size=4, num_workers=2))
    ds.set_epoch(0)
    assert _keys(DataLoader(ds, batch_size=4, num_workers=2)) == first
    ds.set_epoch(1)
    second = _keys(DataLoader(ds, batch_size=4, num_workers=2))
    assert second != first and sorted(second) == sorted(first)


@pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")
def test_resume_through_stateful_dataloader_with_two_workers(two_slides):
    from torchdata.stateful_dataloader import StatefulDataLoader

    def loader():
        ds = PatchDataset(two_slides, shuffle=True, seed=3)
        ds.set_epoch(2)
        return StatefulDataLoader(ds, batch_size=4, num_workers=2)

    reference = _keys(loader())
    first = loader()
    it = iter(first)
    head = _keys(next(it) for _ in range(5))
    state = first.state_dict()
    del it, first
    resumed = loader()
    resumed.load_state_dict(state)
    rest = _keys(resumed)
    assert len(head) + len(rest) == len(reference) == len(two_slides)
    assert Counter(head + rest) == Counter(reference)
    assert not set(head) & set(rest)


def _ddp_rank(rank: int, world: int, port: int, table_path: str, out: str, sources: list) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        ds = PatchDataset(table_path, even_shards=True, shuffle=True, seed=5)
        # ranks started by spawn would spawn their workers too; fork keeps the test fast
        keys = _keys(DataLoader(ds, batch_size=3, num_workers=2, multiprocessing_context="fork"))
        steps = torch.tensor([len(keys)])
        dist.all_reduce(steps, op=dist.ReduceOp.MAX)  # would hang/fail on uneven shards
        with open(os.path.join(out, f"rank{rank}.json"), "w") as fh:
            json.dump({"keys": keys, "len": len(ds), "max": int(steps)}, fh)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_read_disjoint_equal_shards(slide3, make_table, tmp_path):
    import socket

    import torch.multiprocessing as tmp

    table = make_table([slide3], patch=96, stride=100)  # 100 patches: 50 per rank
    path = table.to_parquet(tmp_path / "t.parquet")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tmp.spawn(_ddp_rank, args=(2, port, path, str(tmp_path), []), nprocs=2, join=True)
    results = [json.load(open(tmp_path / f"rank{r}.json")) for r in range(2)]
    keys = [tuple(k) for r in results for k in r["keys"]]
    assert [len(r["keys"]) for r in results] == [r["len"] for r in results] == [50, 50]
    assert len(set(keys)) == len(keys) == len(table)


def _three_epochs(ds, *, explicit: bool, **loader_kwargs) -> list[list[tuple[int, int, int]]]:
    loader = DataLoader(ds, batch_size=6, **loader_kwargs)
    epochs = []
    for epoch in range(3):
        if explicit:
            ds.set_epoch(epoch)
        epochs.append(_keys(loader))
    return epochs


def test_set_epoch_reaches_persistent_workers_and_epochs_advance_by_themselves(two_slides):
    def dataset():
        return PatchDataset(two_slides, shuffle=True, seed=21, chunk_buffer=4)

    explicit = _three_epochs(dataset(), explicit=True, num_workers=2, persistent_workers=True)
    for keys in explicit:  # every epoch exactly once
        assert len(keys) == len(set(keys)) == len(two_slides)
    assert explicit[0] != explicit[1] != explicit[2] != explicit[0]
    # the same seed reproduces the epochs, in a new dataset and a new worker pool
    assert _three_epochs(dataset(), explicit=True, num_workers=2, persistent_workers=True) == explicit
    # without set_epoch, iteration k reads epoch k: persistent, fresh or no workers alike
    assert _three_epochs(dataset(), explicit=False, num_workers=2, persistent_workers=True) == explicit
    assert _three_epochs(dataset(), explicit=False, num_workers=2) == explicit
    single = _three_epochs(dataset(), explicit=False, num_workers=0)
    assert [sorted(k) for k in single] == [sorted(k) for k in explicit]
    assert single[0] != single[1]


@pytest.mark.parametrize("method", ["spawn"])
def test_set_epoch_reaches_persistent_spawned_workers(two_slides, method):
    ds = PatchDataset(two_slides, shuffle=True, seed=21, chunk_buffer=4)
    reference = _three_epochs(PatchDataset(two_slides, shuffle=True, seed=21, chunk_buffer=4),
                              explicit=True, num_workers=2, persistent_workers=True)
    ds.set_epoch(1)
    loader = DataLoader(ds, batch_size=6, num_workers=2, persistent_workers=True,
                        multiprocessing_context=method)
    assert _keys(loader) == reference[1]
    ds.set_epoch(0)
    assert _keys(loader) == reference[0]
    assert _keys(loader) == reference[1]  # advanced by itself


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
def test_workers_of_one_iteration_agree_on_the_epoch_whatever_ran_before(two_slides):
    """A peek in the main process, or a change of num_workers between
    iterations, must not leave the workers of an iteration on different
    epochs (which would repeat some patches and drop others)."""
    ds = PatchDataset(two_slides, shuffle=True, seed=8, chunk_buffer=2)
    next(iter(ds))  # epoch 0, read in the main process
    runs = [_keys(DataLoader(ds, batch_size=5, num_workers=w)) for w in (2, 3, 1)]
    for keys in runs:
        assert len(keys) == len(set(keys)) == len(two_slides)
    assert ds.epoch == 4
    for epoch, (workers, keys) in enumerate(zip((2, 3, 1), runs, strict=True), start=1):
        ref = PatchDataset(two_slides, shuffle=True, seed=8, chunk_buffer=2)
        ref.set_epoch(epoch)
        assert keys == _keys(DataLoader(ref, batch_size=5, num_workers=workers))
