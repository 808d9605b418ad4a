"""PatchLoader: batches built by real pool threads on PatchDataset's read
engine. The same batches as DataLoader(PatchDataset), whatever the thread
count; resume, epochs, errors, early exits and bounded read-ahead."""

from __future__ import annotations

import gc
import shutil
import threading
import time
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import zarrdask
from zarrdask.dataset import PatchDataset, PatchLoader
from zarrdask.dataset.loader import loader_threads
from zarrdask.errors import DatasetError, SourceNotFoundError


@pytest.fixture(scope="module")
def two_slides(slide3, slide2, make_table):
    return make_table([slide3, slide2], patch=128, stride=96)


def _sample_keys(batches) -> list[tuple[int, int, int]]:
    out = []
    for b in batches:
        pos, ids = b["position"].numpy(), b["image_id"].numpy()
        out.extend((int(i), int(p[0, 0]), int(p[1, 0])) for i, p in zip(ids, pos, strict=True))
    return out


def _samples(batches) -> dict[tuple[int, int, int], bytes]:
    """Key -> image bytes of every sample (the multiset, checked unique)."""
    out = {}
    for b in batches:
        for img, pos, i in zip(b["images"], b["position"], b["image_id"], strict=True):
            key = (int(i), int(pos[0, 0]), int(pos[1, 0]))
            assert key not in out
            out[key] = img.numpy().tobytes()
    return out


def _assert_same_batches(left, right) -> None:
    left, right = list(left), list(right)
    assert len(left) == len(right)
    for a, b in zip(left, right, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype, key
            assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("shuffle", [False, True])
def test_same_batches_as_dataloader_over_patch_dataset(two_slides, shuffle):
    opts = dict(shuffle=shuffle, seed=3, chunk_buffer=3)
    loader = PatchLoader(two_slides, batch_size=7, threads=2, **opts)
    expected = DataLoader(PatchDataset(two_slides, **opts), batch_size=7)
    batches = list(loader)
    _assert_same_batches(batches, expected)
    assert len(batches) == len(loader) == -(-len(two_slides) // 7)
    assert batches[0]["images"].shape == (7, 3, 128, 128)
    assert batches[0]["position"].dtype == torch.int64


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
def test_same_multiset_of_patches_as_dataset_in_two_workers(two_slides):
    loader = PatchLoader(two_slides, batch_size=8, shuffle=True, seed=9)
    workers = DataLoader(PatchDataset(two_slides, shuffle=True, seed=9), batch_size=8,
                         num_workers=2)
    got, expected = _samples(loader), _samples(workers)
    assert got == expected and len(got) == len(two_slides)


def _flip_by_position(image: np.ndarray) -> np.ndarray:
    return image[..., ::-1].copy() if int(image[0, 0, 0]) % 2 else image


@pytest.mark.parametrize("shuffle", [False, True])
def test_identical_output_for_one_two_and_four_threads(two_slides, shuffle):
    runs = []
    for threads in (1, 2, 4):
        loader = PatchLoader(two_slides, batch_size=5, threads=threads, prefetch=3,
                             shuffle=shuffle, seed=11, chunk_buffer=4,
                             transforms=_flip_by_position)
        runs.append([list(loader), list(loader)])  # two epochs each
    for other in runs[1:]:
        for epoch in range(2):
            _assert_same_batches(runs[0][epoch], other[epoch])
    assert _sample_keys(runs[0][0]) != _sample_keys(runs[0][1]) if shuffle else True


@pytest.mark.parametrize("shuffle", [False, True])
def test_mid_epoch_resume_yields_exactly_the_remaining_batches(two_slides, shuffle):
    opts = dict(batch_size=6, threads=2, shuffle=shuffle, seed=2, chunk_buffer=2)
    full = list(PatchLoader(two_slides, **opts))
    first = PatchLoader(two_slides, **opts)
    it = iter(first)
    head = [next(it) for _ in range(4)]
    state = first.state_dict()
    del it
    assert state["yielded"] == 24 and state["epoch"] == 0
    resumed = PatchLoader(two_slides, **{**opts, "threads": 3})
    resumed.load_state_dict(state)
    tail = list(resumed)
    _assert_same_batches(head + tail, full)
    assert resumed.state_dict()["epoch"] == 1 and resumed.state_dict()["yielded"] == 0


def test_epochs_advance_and_set_epoch_selects_one(two_slides):
    loader = PatchLoader(two_slides, batch_size=16, shuffle=True, seed=4)
    e0, e1 = _sample_keys(loader), _sample_keys(loader)
    assert e0 != e1 and sorted(e0) == sorted(e1)
    loader.set_epoch(0)
    assert _sample_keys(loader) == e0
    assert loader.epoch == 1


def test_drop_last_drops_the_short_batch_and_closes_the_epoch(two_slides):
    n = len(two_slides)
    assert n % 16, "the table must leave a short batch"
    loader = PatchLoader(two_slides, batch_size=16, drop_last=True)
    batches = list(loader)
    assert len(batches) == len(loader) == n // 16
    assert all(b["images"].shape[0] == 16 for b in batches)
    assert loader.state_dict()["epoch"] == 1 and loader.state_dict()["yielded"] == 0


def test_return_tuple_gives_lists_like_default_collate(two_slides):
    loader = PatchLoader(two_slides, batch_size=4, return_tuple=True, modalities=["images"])
    expected = DataLoader(PatchDataset(two_slides, return_tuple=True, modalities=["images"]),
                          batch_size=4)
    for got, want in zip(loader, expected, strict=True):
        assert type(got) is type(want) and len(got) == len(want) == 1
        assert torch.equal(got[0], want[0])


def test_read_error_in_a_pool_thread_surfaces_typed_and_joins_the_threads(slide3, tmp_path,
                                                                          make_table):
    copy = shutil.copytree(slide3, tmp_path / "gone.zarr")
    table = make_table([str(copy)], patch=128)
    loader = PatchLoader(table, batch_size=4, threads=2, prefetch=2)
    it = iter(loader)
    assert next(it)["images"].shape == (4, 3, 128, 128)
    shutil.rmtree(copy)
    with pytest.raises(SourceNotFoundError, match=r"gone\.zarr"):
        for _ in it:
            pass
    assert loader_threads() == []


def test_transform_error_reaches_the_consumer(two_slides):
    def broken(image):
        raise ValueError("augmentation bug")

    loader = PatchLoader(two_slides, batch_size=4, threads=2, transforms=broken)
    with pytest.raises(ValueError, match="augmentation bug"):
        next(iter(loader))
    gc.collect()
    assert loader_threads() == []


def test_early_break_and_garbage_collection_leak_no_threads(two_slides):
    before = set(threading.enumerate())
    loader = PatchLoader(two_slides, batch_size=4, threads=3, prefetch=4)
    for i, _ in enumerate(loader):
        if i == 2:
            break
    assert loader_threads() == []
    it = iter(loader)
    next(it)
    assert len(loader_threads()) > 0
    del it
    gc.collect()
    # no thread started here survives (threads of earlier tests may end meanwhile)
    assert loader_threads() == [] and set(threading.enumerate()) <= before


def test_read_ahead_is_bounded_over_a_long_run(two_slides):
    built = Counter()
    lock = threading.Lock()

    def count(image):
        with lock:
            built["samples"] += 1
        return image

    batch, prefetch, threads = 4, 2, 2
    loader = PatchLoader(two_slides, batch_size=batch, threads=threads, prefetch=prefetch,
                         transforms=count, cache_bytes=2 * 2**20)
    consumed, worst, cached = 0, 0, 0
    for _epoch in range(3):
        for b in loader:
            consumed += b["images"].shape[0]
            with lock:
                worst = max(worst, built["samples"] - consumed)
            cached = max(cached, loader.read_stats()["cached_bytes"])
    assert consumed == 3 * len(two_slides)
    # batches built but not handed out: at most the window (max(prefetch, threads))
    assert 0 < worst <= max(prefetch, threads) * batch
    assert cached <= 2 * 2**20


def test_wrapped_in_a_dataloader_with_batch_size_none_as_lightning_does(two_slides):
    loader = PatchLoader(two_slides, batch_size=8, shuffle=True, seed=1)
    wrapped = DataLoader(loader, batch_size=None, num_workers=0)
    assert len(wrapped) == len(loader)
    first = list(wrapped)
    loader.set_epoch(0)
    _assert_same_batches(first, PatchLoader(two_slides, batch_size=8, shuffle=True, seed=1))


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
def test_worker_processes_yield_whole_batches_of_their_share(two_slides):
    loader = PatchLoader(two_slides, batch_size=8, shuffle=True, seed=6)
    workers = DataLoader(loader, batch_size=None, num_workers=2)
    batches = list(workers)
    assert all(b["images"].shape[0] <= 8 for b in batches)
    got = _samples(batches)
    assert got == _samples(DataLoader(PatchDataset(two_slides, shuffle=True, seed=6),
                                      batch_size=8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pin_memory_returns_pinned_tensors(two_slides):
    batch = next(iter(PatchLoader(two_slides, batch_size=4, pin_memory=True)))
    assert batch["images"].is_pinned() and batch["position"].is_pinned()


def test_pin_memory_without_cuda_warns_and_returns_plain_tensors(two_slides):
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the pinned case is tested above")
    with pytest.warns(UserWarning, match="CUDA is not available"):
        batch = next(iter(PatchLoader(two_slides, batch_size=4, pin_memory=True)))
    assert not batch["images"].is_pinned()


@pytest.mark.parametrize(("option", "value"), [("batch_size", 0), ("batch_size", 2.0),
                                               ("threads", 0), ("prefetch", 0),
                                               ("drop_last", "yes"), ("pin_memory", 1)])
def test_bad_options_are_typed_errors_naming_the_option(two_slides, option, value):
    kwargs = {"batch_size": 4, option: value}
    with pytest.raises(DatasetError, match=option):
        PatchLoader(two_slides, **kwargs)


def test_dataset_options_are_checked_too_and_exported_lazily(two_slides):
    with pytest.raises(DatasetError, match="shuffle"):
        PatchLoader(two_slides, batch_size=4, shuffle="no")
    assert zarrdask.PatchLoader is PatchLoader


def test_mixed_formats_labels_padding_and_weak_values_match_the_dataset(slide3, slide2, tmp_path,
                                                                         make_table):
    import tifffile

    rgb = np.random.default_rng(3).integers(0, 255, (320, 384, 3), dtype=np.uint8)
    tiff = str(tmp_path / "rgb.ome.tif")
    tifffile.imwrite(tiff, rgb, tile=(64, 64), photometric="rgb", ome=True)
    # stored (y, x, c) next to (c, y, x); patches straddling chunks and the border (pad,
    # reflected); a weak per-image value
    mixed = make_table([slide3, tiff], patch=64, stride=80, pad=8, allow_incomplete=True,
                       extra={"score": [{"weak": 1.5}, {"weak": 2.5}]})
    # labels read from a coarser level of another zarr
    labelled = make_table([slide3, slide2], patch=64, stride=80, pad=8,
                          labels=[(slide2, 1), (slide3, 1)])
    for table, modalities in ((mixed, ["images", "score"]), (labelled, ["images", "labels"])):
        opts = dict(shuffle=True, seed=8, modalities=modalities, padding_mode="reflect")
        got = list(PatchLoader(table, batch_size=6, threads=2, **opts))
        want = list(DataLoader(PatchDataset(table, **opts), batch_size=6))
        _assert_same_batches(got, want)
        assert got[0]["images"].shape[1:] == (3, 80, 80)
        assert {0, 1} <= set(torch.cat([b["image_id"] for b in got]).tolist())
    assert got[0]["labels"].shape[1:] == (3, 40, 40)


def test_a_chunk_two_batches_need_at_once_is_decoded_once(slide3, make_table):
    # 4 patches per 256² chunk, batches of 6: consecutive batches share chunks and
    # are read at the same time by different threads
    table = make_table([slide3], patch=128)
    for threads in (2, 4):
        loader = PatchLoader(table, batch_size=6, threads=threads, prefetch=4)
        before = loader.read_stats()["decoded"]
        assert sum(b["images"].shape[0] for b in loader) == len(table) == 64
        assert loader.read_stats()["decoded"] - before == 16


# -- remote: the moto S3 server on loopback, through the fault-injecting proxy -------------

_FAST = {"connect_timeout": 1, "read_timeout": 1, "retries": {"max_attempts": 1}}


@pytest.fixture(scope="module")
def s3_loader_table(s3_server):
    from zarrdask import build_table

    spec = {"source": s3_server.url("slide_v3.zarr"), "storage_options": s3_server.storage_options}
    return build_table([spec], patch_size=128)


def test_s3_batches_match_the_dataset_and_a_fault_surfaces_typed(s3_server, s3_loader_table,
                                                                 fault_proxy):
    from zarrdask.errors import RemoteAccessError

    options = {**s3_server.storage_options, "endpoint_url": fault_proxy.endpoint_url,
               "config_kwargs": _FAST}
    opts = dict(storage_options=options, read_threads=4, shuffle=True, seed=1)
    got = list(PatchLoader(s3_loader_table, batch_size=5, threads=2, **opts))
    _assert_same_batches(got, DataLoader(PatchDataset(s3_loader_table, **opts), batch_size=5))
    it = iter(PatchLoader(s3_loader_table, batch_size=5, threads=2, **opts))
    next(it)
    fault_proxy.mode = "reset"
    with pytest.raises(RemoteAccessError, match=rf"(?s)slide_v3\.zarr.*127\.0\.0\.1:{fault_proxy.port}"):
        for _ in it:
            pass
    assert loader_threads() == []


def test_remote_chunks_are_fetched_ahead_of_the_batches_in_flight(s3_server, s3_loader_table):
    """With one-row batches and one batch in flight, the loader still keeps
    up to ``2 x read_threads`` remote chunks on their way (latency hiding
    does not depend on the batch size)."""
    loader = PatchLoader(s3_loader_table, batch_size=1, threads=1, prefetch=1, read_threads=4,
                         storage_options=s3_server.storage_options)
    chunks = {(int(i), int(c)) for i, c in zip(s3_loader_table.frame["image_id"],
                                               s3_loader_table.frame["chunk_id"], strict=True)}
    assert len(chunks) >= 8, "the table must span more chunks than the lookahead bound"
    it = iter(loader)
    next(it)
    fetcher = loader.dataset._runtime.fetcher
    deadline = time.monotonic() + 30
    while fetcher._inflight and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not fetcher._inflight
    # 1 row consumed, at most 2 rows in batches: without lookahead <= 3 chunks
    assert loader.read_stats()["decoded"] >= 8
    it.close()
    assert loader_threads() == []


@pytest.mark.parametrize("shuffle", [False, True])
def test_plan_blocks_do_not_change_the_batches(two_slides, shuffle, monkeypatch):
    """Rows are planned in small blocks (their objects die young, no full GC
    sweeps); the block size must not show in the output."""
    from zarrdask.dataset import reader

    opts = dict(batch_size=5, threads=2, shuffle=shuffle, seed=4, chunk_buffer=3)
    whole = list(PatchLoader(two_slides, **opts))
    monkeypatch.setattr(reader, "PLAN_BLOCK_ROWS", 3)
    _assert_same_batches(PatchLoader(two_slides, **opts), whole)
    assert len(two_slides) > 3 * 2  # several blocks, split across batches


def test_split_blocks_keeps_rows_and_groups_in_order():
    from zarrdask.dataset.reader import _split_blocks

    rows, groups = np.arange(10), np.arange(10) // 4
    parts = list(_split_blocks(iter([("a", rows[:7], groups[:7]), ("b", rows[7:], groups[7:])]), 3))
    assert [(p, r.tolist(), g.tolist()) for p, r, g in parts] == [
        ("a", [0, 1, 2], [0, 0, 0]), ("a", [3, 4, 5], [0, 1, 1]), ("a", [6], [1]),
        ("b", [7, 8, 9], [1, 2, 2])]
