"""PatchDataset in one process: values, modalities, padding, transforms,
shuffling, decode counts, sampling and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zarrdask.dataset import PatchDataset
from zarrdask.errors import DatasetError


def _check_values(ds, full, patch):
    n = 0
    for s in ds:
        (y0, y1), (x0, x1) = s["position"]
        assert (y1 - y0, x1 - x0) == (patch, patch)
        np.testing.assert_array_equal(s["images"], full[:, y0:y1, x0:x1])
        n += 1
    return n


@pytest.mark.parametrize("fixture", ["slide3", "slide2"])
def test_patches_equal_numpy_slices_of_the_source(request, fixture, make_table, pixels):
    path = request.getfixturevalue(fixture)
    table = make_table([path], patch=64)
    ds = PatchDataset(table)
    assert ds.modalities == ["images"] and len(ds) == 256
    assert _check_values(ds, pixels(path, 0), 64) == 256
    assert set(ds.read_stats()["modes"].values()) == {"direct"}


def test_straddling_patches_are_assembled_from_their_chunks(slide3, make_table, pixels):
    table = make_table([slide3], patch=96, stride=80, offset=200)
    ds = PatchDataset(table, read_threads=2)
    assert _check_values(ds, pixels(slide3, 0), 96) == len(table)


def test_sequential_reading_decodes_each_chunk_once(slide3, make_table):
    table = make_table([slide3], patch=96, stride=80, offset=8)
    ds = PatchDataset(table, read_threads=0, cache_bytes=8 * 2**20)  # 40 decoded chunks
    list(ds)
    # 1024 px in chunks of 256: the patches touch all 16 chunks; straddled
    # chunks stay cached for the neighbours that need them
    assert ds.read_stats()["decoded"] == 16
    ds2 = PatchDataset(make_table([slide3], patch=64), read_threads=3)
    list(ds2)
    assert ds2.read_stats()["decoded"] == 16


def test_level1_images_and_half_resolution_labels_cover_the_same_region(slide3, make_table, pixels):
    table = make_table([slide3], patch=64, labels=[(slide3, 1)])
    ds = PatchDataset(table)
    assert ds.modalities == ["images", "labels"]
    full0, full1 = pixels(slide3, 0), pixels(slide3, 1)
    for s in ds:
        (y0, y1), (x0, x1) = s["position"]
        assert s["labels"].shape == (3, 32, 32)
        np.testing.assert_array_equal(s["labels"], full1[:, y0 // 2:y1 // 2, x0 // 2:x1 // 2])
        np.testing.assert_array_equal(s["images"], full0[:, y0:y1, x0:x1])
    # reading level 1 of the image: positions are level-1 pixels
    t1 = make_table([slide3], patch=32, level=1)
    s = next(iter(PatchDataset(t1, shuffle=True)))
    (y0, y1), (x0, x1) = s["position"]
    np.testing.assert_array_equal(s["images"], full1[:, y0:y1, x0:x1])


def test_weak_labels_come_with_every_patch_and_collate(slide3, slide2, make_table):
    table = make_table([slide3, slide2], patch=128, labels=[{"weak": 1}, {"weak": 4}])
    ds = PatchDataset(table)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=len(ds))))
    assert batch["images"].shape == (len(ds), 3, 128, 128)
    assert batch["images"].dtype == torch.uint8
    assert batch["position"].shape == (len(ds), 2, 2)
    expected = torch.where(batch["image_id"] == 0, 1, 4)
    assert torch.equal(batch["labels"], expected)


def test_pad_and_incomplete_patches_are_zeros_or_reflected(slide3, make_table, pixels):
    full = pixels(slide3, 0)
    table = make_table([slide3], patch=300, stride=300, pad=20, allow_incomplete=True)
    for mode in ("constant", "reflect"):
        padded = np.pad(full, [(0, 0), (20, 320), (20, 320)], mode=mode)
        ds = PatchDataset(table, padding_mode=mode)
        n = 0
        for s in ds:
            (y0, y1), (x0, x1) = s["position"]
            assert s["images"].shape == (3, 340, 340)
            np.testing.assert_array_equal(s["images"], padded[:, y0:y1 + 40, x0:x1 + 40])
            n += 1
        assert n == 16  # starts 0, 300, 600, 900 per dim
    edge = [s for s in PatchDataset(table) if s["position"][0, 0] == 900][0]
    assert not edge["images"][:, 20 + 124:, :].any(), "rows past the image must be zeros"


def test_in_memory_sources_and_output_dims(make_table):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (200, 160, 3), dtype=np.uint8)
    table = make_table([image], patch=40, axes="yxc")
    ds = PatchDataset(table, output_dims={"images": "cyx"})
    for s in ds:
        (y0, y1), (x0, x1) = s["position"]
        np.testing.assert_array_equal(s["images"], image[y0:y1, x0:x1].transpose(2, 0, 1))
    ds = PatchDataset(table, output_dims={"images": "zyxc"})
    assert next(iter(ds))["images"].shape == (1, 40, 40, 3)


def test_parquet_table_of_in_memory_images_needs_sources(make_table, tmp_path):
    image = np.zeros((100, 100), dtype=np.uint8)
    path = make_table([image], patch=50, axes="yx").to_parquet(tmp_path / "t.parquet")
    with pytest.raises(DatasetError, match=r"in-memory.*t\.parquet.*sources="):
        PatchDataset(path)
    image[:50, :50] = 9
    ds = PatchDataset(path, sources=[image])
    assert sorted(int(s["images"].max()) for s in ds) == [0, 0, 0, 9]


def test_transforms_run_in_order_on_modalities_and_tuples_with_copies(slide3, make_table):
    table = make_table([slide3], patch=64, labels=[(slide3, 1)])
    calls = []

    def first(img):
        calls.append("first")
        img[...] = 1  # in place: must not reach the cache or other samples
        return img

    def both(img, lab):
        calls.append("both")
        return img.astype(np.int16) + 1, lab[:, :4, :4]

    ds = PatchDataset(table, transforms={"images": first})
    ds.add_transform(("images", "labels"), both)
    ds.add_transform("labels", lambda lab: (calls.append("last"), lab * 0)[1])
    samples = [s for _, s in zip(range(3), ds, strict=False)]
    assert calls[:3] == ["first", "both", "last"]
    for s in samples:
        assert s["images"].dtype == np.int16 and np.all(s["images"] == 2)
        assert s["labels"].shape == (3, 4, 4) and not s["labels"].any()
    plain = next(iter(PatchDataset(table)))
    assert plain["images"].std() > 0, "the in-place transform leaked into the cache"
    with pytest.raises(DatasetError, match="masks"):
        ds.add_transform(("images", "masks"), both)


def test_return_tuple_follows_modality_order(slide3, make_table):
    table = make_table([slide3], patch=64, labels=[(slide3, 1)])
    item = next(iter(PatchDataset(table, modalities=["labels", "images"], return_tuple=True)))
    assert isinstance(item, tuple) and [a.shape for a in item] == [(3, 32, 32), (3, 64, 64)]


def test_shuffle_is_seeded_per_epoch_and_chunk_aware(slide3, make_table, key_of):
    table = make_table([slide3], patch=32)
    ds = PatchDataset(table, shuffle=True, seed=11, chunk_buffer=1)
    first = [key_of(s) for s in ds]
    # each chunk decoded once, and released once its patches are read
    assert ds.read_stats()["decoded"] == 16 and ds.read_stats()["cached_chunks"] == 0
    ds.set_epoch(0)
    assert [key_of(s) for s in ds] == first
    ds.set_epoch(1)
    second = [key_of(s) for s in ds]
    assert second != first and sorted(second) == sorted(first)
    assert [key_of(s) for s in PatchDataset(table, shuffle=True, seed=11, chunk_buffer=1)] == first
    # chunk_buffer=1: all 64 patches of a chunk before the next chunk
    chunks = [(y // 256, x // 256) for _, y, x in first]
    runs = [c for i, c in enumerate(chunks) if i == 0 or c != chunks[i - 1]]
    assert len(runs) == 16
    assert first != sorted(first)


def test_weighted_sampling_with_replacement(slide3, make_table, key_of):
    table = make_table([slide3], patch=128)
    weights = np.zeros(len(table))
    weights[[5, 40]] = [1, 1]
    ds = PatchDataset(table, replacement=True, weights=weights, num_samples=50, seed=3)
    keys = [key_of(s) for s in ds]
    assert len(keys) == len(ds) == 50 and len(set(keys)) == 2
    ds.set_epoch(0)
    assert [key_of(s) for s in ds] == keys
    by_column = PatchDataset(table, replacement=True, weights="coverage", num_samples=200)
    rows = [key_of(s) for s in by_column]
    assert (0, 0, 0) not in rows, "the first row has coverage 0 in the test table"
    with pytest.raises(DatasetError, match="column"):
        PatchDataset(table, weights="nope", replacement=True)


def test_resume_in_one_process_yields_exactly_the_rest(slide3, make_table, key_of):
    table = make_table([slide3], patch=64)
    ds = PatchDataset(table, shuffle=True, seed=2)
    ds.set_epoch(3)
    it = iter(ds)
    head = [key_of(next(it)) for _ in range(37)]
    state = ds.state_dict()
    assert state["yielded"] == 37 and state["epoch"] == 3
    fresh = PatchDataset(table, shuffle=True, seed=2)
    fresh.load_state_dict(state)
    rest = [key_of(s) for s in fresh]
    assert len(rest) == 256 - 37 and not set(rest) & set(head)
    ds.set_epoch(3)
    assert head + rest == [key_of(s) for s in ds]
    with pytest.raises(DatasetError, match="seed"):
        PatchDataset(table, shuffle=True, seed=5).load_state_dict(state)


def test_modalities_that_cannot_be_read_fail_early_with_the_fix(slide3, make_table):
    table = make_table([slide3], patch=64)
    with pytest.raises(DatasetError, match=r"labels.*of image 0.*none"):
        PatchDataset(table, modalities=["images", "labels"])
    with pytest.raises(DatasetError, match="only"):
        PatchDataset(table, modalities=["images", "depth"])
    with pytest.raises(DatasetError, match="padding_mode"):
        PatchDataset(table, padding_mode="mirror")


def test_tiled_tiff_sources_decode_their_tiles_directly(tmp_path, make_table):
    import tifffile

    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (300, 260, 3), dtype=np.uint8)
    path = str(tmp_path / "tiled.tif")
    tifffile.imwrite(path, image, tile=(64, 64), photometric="rgb")
    table = make_table([path], patch=50, stride=45)
    ds = PatchDataset(table)
    n = 0
    for s in ds:  # channel-first by default, like zarr images
        (y0, y1), (x0, x1) = s["position"]
        np.testing.assert_array_equal(s["images"], image[y0:y1, x0:x1].transpose(2, 0, 1))
        assert s["images"].flags.c_contiguous
        n += 1
    assert n == len(ds) > 0
    assert set(ds.read_stats()["modes"].values()) == {"tiff-direct"}  # tiles are the chunks
    stored = next(iter(PatchDataset(table, output_dims="stored")))
    (y0, y1), (x0, x1) = stored["position"]
    np.testing.assert_array_equal(stored["images"], image[y0:y1, x0:x1])


def test_fsspec_stores_are_decoded_directly(slide3, make_table, pixels):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.put(slide3, "/bench/slide.zarr", recursive=True)
    try:
        table = make_table(["memory://bench/slide.zarr"], patch=128)
        ds = PatchDataset(table, read_threads=2)
        assert _check_values(ds, pixels(slide3, 0), 128) == 64
        assert set(ds.read_stats()["modes"].values()) == {"direct"}
        assert ds.read_stats()["decoded"] == 16  # prefetched on threads, each chunk once
        assert ds._sources["images"][0].remote
    finally:
        fs.rm("/bench", recursive=True)
