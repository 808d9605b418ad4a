"""Every array zarrdask writes carries chunk checksums, and a damaged chunk is
a typed error on every read path, never silently wrong pixels."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import zarr

import zarrdask as zd
from zarrdask.dataset.chunks import ArraySource
from zarrdask.datasets import write_synthetic_slide
from zarrdask.errors import CorruptChunkError
from zarrdask.io.recipe import ArrayRecipe, clear_open_cache

#: (zarr_format, file of chunk (0, 1, 1) of level 0, key shown in messages)
CHUNK_FILES = {3: (os.path.join("0", "c", "0", "1", "1"), "c/0/1/1"),
               2: (os.path.join("0", "0.1.1"), "0.1.1")}


def _slide(tmp_path: Path, zarr_format: int) -> str:
    return write_synthetic_slide(tmp_path / f"slide_v{zarr_format}.zarr", size=256, chunk=128,
                                 levels=2, seed=21, zarr_format=zarr_format)


def _flip_bytes(path: str, count: int = 8) -> None:
    """Invert ``count`` bytes in the middle of a stored chunk (what a bad disk
    or a bad copy does), keeping its length."""
    with open(path, "r+b") as fh:
        raw = bytearray(fh.read())
        middle = len(raw) // 2
        for i in range(middle, middle + count):
            raw[i] ^= 0xFF
        fh.seek(0)
        fh.write(raw)


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_every_written_level_has_a_checksummed_codec_chain(tmp_path: Path, zarr_format: int):
    path = _slide(tmp_path, zarr_format)
    group = zarr.open_group(path, mode="r")
    for name in ("0", "1"):
        arr = group[name]
        if zarr_format == 3:
            names = [type(c).__name__ for c in arr.metadata.codecs]
            assert names[-1] == "Crc32cCodec", names  # after the compressor
            assert "BloscCodec" in names
        else:
            config = arr.metadata.compressor.get_config()
            assert config["id"] == "zstd" and config["checksum"] is True


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_flipped_bytes_in_a_chunk_are_a_corrupt_chunk_error(tmp_path: Path, zarr_format: int):
    path = _slide(tmp_path, zarr_format)
    intact = zd.open_image(path).values
    relative, key = CHUNK_FILES[zarr_format]
    _flip_bytes(os.path.join(path, relative))
    clear_open_cache()
    image = zd.open_image(path)
    # the chunks that were not touched still read as written
    np.testing.assert_array_equal(image[:, :128, :].values, intact[:, :128, :])
    with pytest.raises(CorruptChunkError) as info:
        image.compute()
    message = str(info.value)
    assert key in message and path in message
    assert isinstance(info.value, OSError)


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_direct_decode_verifies_the_checksum(tmp_path: Path, zarr_format: int):
    path = _slide(tmp_path, zarr_format)
    intact = zd.open_image(path).values
    relative, _key = CHUNK_FILES[zarr_format]
    _flip_bytes(os.path.join(path, relative))

    def source() -> ArraySource:
        return ArraySource(name=f"{path}[0]", shape=(3, 256, 256), chunks=(3, 128, 128),
                           dtype="uint8", recipe=ArrayRecipe("zarr", path, "0", {}))

    good = source()
    np.testing.assert_array_equal(good.decode_chunk((0, 0, 1)), intact[:, :128, 128:])
    assert good.mode == "direct"  # checksums keep the fast path
    damaged = source()
    with pytest.raises(CorruptChunkError, match=r"\(0, 1, 1\)"):
        damaged.decode_chunk((0, 1, 1))
    assert damaged.mode == "direct"


def test_v2_slide_with_a_compressor_that_cannot_carry_a_checksum_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="compressor='zstd'"):
        write_synthetic_slide(tmp_path / "s.zarr", size=128, chunk=64, zarr_format=2,
                              compressor="lz4")
