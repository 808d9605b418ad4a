"""Chunk reading: direct decoding against zarr-python, fallbacks, the LRU
cache and patch assembly across chunk boundaries."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import zarr

from zarrdask.dataset.chunks import ArraySource, ChunkCache, ChunkFetcher, read_direct_layout
from zarrdask.errors import CorruptChunkError
from zarrdask.io import ArrayRecipe


def _source(path: str, key: str, **kwargs) -> ArraySource:
    arr = zarr.open_array(f"{path}/{key}", mode="r")
    chunks = getattr(arr, "shards", None) or arr.chunks
    return ArraySource(name=f"{path}[{key}]", shape=arr.shape, chunks=chunks, dtype=arr.dtype,
                       recipe=ArrayRecipe("zarr", path, key, {}), **kwargs)


@pytest.mark.parametrize("fixture", ["slide3", "slide2"])
def test_direct_decode_equals_zarr_python_for_every_chunk(request, fixture, pixels):
    path = request.getfixturevalue(fixture)
    src = _source(path, "1")
    full = pixels(path, 1)
    for idx in [(0, 0, 0), (0, 0, 1), (0, 1, 1)]:
        chunk = src.decode_chunk(idx)
        np.testing.assert_array_equal(chunk, full[:, idx[1] * 256:(idx[1] + 1) * 256,
                                                  idx[2] * 256:(idx[2] + 1) * 256])
        assert not chunk.flags.writeable
    assert src.mode == "direct"


def test_edge_chunks_are_trimmed_and_missing_chunks_are_fill_values(tmp_path):
    z = zarr.create_array(tmp_path / "a.zarr", shape=(70, 50), chunks=(32, 32), dtype="<i2",
                          fill_value=-7, compressors=[zarr.codecs.ZstdCodec()])
    data = np.arange(70 * 50, dtype="<i2").reshape(70, 50)
    z[:40, :] = data[:40, :]
    src = ArraySource(name="a", shape=z.shape, chunks=z.chunks, dtype=z.dtype,
                      recipe=ArrayRecipe("zarr", str(tmp_path / "a.zarr"), None, {}))
    expected = data.copy()
    expected[40:] = -7  # never written: chunk (2, *) is missing, chunk (1, *) holds the fill
    np.testing.assert_array_equal(src.decode_chunk((1, 1)), expected[32:64, 32:50])
    assert src.decode_chunk((2, 0)).shape == (6, 32)
    assert np.all(src.decode_chunk((2, 0)) == -7)
    assert src.mode == "direct"


def test_big_endian_v2_with_gzip_decodes_directly(tmp_path):
    from numcodecs import GZip

    z = zarr.create_array(tmp_path / "b.zarr", shape=(40, 40), chunks=(16, 16), dtype=">u2",
                          zarr_format=2, compressors=GZip())
    data = (np.arange(1600, dtype=np.uint16) * 7).reshape(40, 40)
    z[:] = data
    layout = read_direct_layout(str(tmp_path / "b.zarr"), None)
    assert not isinstance(layout, str), layout
    src = ArraySource(name="b", shape=z.shape, chunks=z.chunks, dtype=z.dtype,
                      recipe=ArrayRecipe("zarr", str(tmp_path / "b.zarr"), None, {}))
    np.testing.assert_array_equal(src.decode_chunk((2, 1)), data[32:40, 16:32])


def test_sharded_arrays_fall_back_to_zarr_python(tmp_path):
    z = zarr.create_array(tmp_path / "s.zarr", shape=(64, 64), chunks=(16, 16), shards=(32, 32),
                          dtype="u1")
    data = (np.arange(64 * 64) % 251).astype(np.uint8).reshape(64, 64)
    z[:] = data
    src = ArraySource(name="s", shape=z.shape, chunks=(32, 32), dtype=z.dtype,
                      recipe=ArrayRecipe("zarr", str(tmp_path / "s.zarr"), None, {}))
    np.testing.assert_array_equal(src.decode_chunk((1, 0)), data[32:, :32])
    assert src.mode == "zarr"
    assert "sharding" in src.fallback_reason


def test_sources_pickle_without_handles_and_reopen(slide3):
    src = _source(slide3, "0")
    src.decode_chunk((0, 0, 0))
    clone = pickle.loads(pickle.dumps(src))
    assert clone.mode is None and clone._reader is None
    np.testing.assert_array_equal(clone.decode_chunk((0, 1, 0)), src.decode_chunk((0, 1, 0)))


def test_corrupt_chunk_names_the_chunk_and_the_fix(tmp_path):
    z = zarr.create_array(tmp_path / "c.zarr", shape=(32, 32), chunks=(16, 16), dtype="u1")
    z[:] = 1
    with open(os.path.join(tmp_path, "c.zarr", "c", "0", "1"), "wb") as fh:
        fh.write(b"not a compressed chunk")
    src = ArraySource(name="c.zarr", shape=z.shape, chunks=z.chunks, dtype=z.dtype,
                      recipe=ArrayRecipe("zarr", str(tmp_path / "c.zarr"), None, {}))
    with pytest.raises(CorruptChunkError, match=r"chunk \(0, 1\) of c.zarr.*rewrite"):
        src.decode_chunk((0, 1))


def test_cache_is_bounded_in_bytes_and_least_recently_used_goes_first():
    cache = ChunkCache(300)
    for k in "abc":
        cache.put(k, np.zeros(100, np.uint8))
    assert cache.get("a") is not None  # a becomes most recent
    cache.put("d", np.zeros(100, np.uint8))
    assert "b" not in cache and {"a", "c", "d"} <= set(cache._items)
    assert cache.nbytes == 300
    cache.put("huge", np.zeros(301, np.uint8))
    assert "huge" not in cache and cache.nbytes == 300


@pytest.mark.parametrize("threads", [0, 2])
def test_fetcher_assembles_straddling_boxes_and_decodes_each_chunk_once(slide3, pixels, threads):
    src = _source(slide3, "0")
    src.remote = True  # local files are decoded on demand; exercise the threads
    full = pixels(slide3, 0)
    fetcher = ChunkFetcher(cache_bytes=64 * 2**20, threads=threads)
    box = ([0, 200, 240], [3, 300, 270])  # 4 chunks
    for idx in [(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1)]:
        fetcher.prefetch("s", src, idx)
    out = fetcher.read("s", src, *box, valid_lo=[0, 0, 0], valid_hi=list(src.shape))
    np.testing.assert_array_equal(out, full[:, 200:300, 240:270])
    again = fetcher.read("s", src, *box, valid_lo=[0, 0, 0], valid_hi=list(src.shape))
    assert fetcher.decoded == 4
    out[:] = 0  # fresh copies: the cache is untouched
    np.testing.assert_array_equal(again, full[:, 200:300, 240:270])
    fetcher.close()


def test_fetcher_pads_outside_the_readable_region(slide3, pixels):
    src = _source(slide3, "0")
    full = pixels(slide3, 0)
    fetcher = ChunkFetcher(cache_bytes=2**26, threads=0)
    lo, hi = [0, -10, 1000], [3, 30, 1040]
    zeros = fetcher.read("s", src, lo, hi, valid_lo=[0, 0, 0], valid_hi=list(src.shape))
    expected = np.pad(full, [(0, 0), (10, 0), (0, 16)])[:, 0:40, 1000:1040]
    np.testing.assert_array_equal(zeros, expected)
    refl = fetcher.read("s", src, lo, hi, valid_lo=[0, 0, 0], valid_hi=list(src.shape),
                        padding_mode="reflect")
    expected = np.pad(full, [(0, 0), (10, 0), (0, 16)], mode="reflect")[:, 0:40, 1000:1040]
    np.testing.assert_array_equal(refl, expected)
    outside = fetcher.read("s", src, [0, 2000, 0], [3, 2010, 5], valid_lo=[0, 0, 0],
                           valid_hi=list(src.shape))
    assert outside.shape == (3, 10, 5) and not outside.any()
