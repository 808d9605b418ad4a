"""Bad input fails early with a typed error naming the source, the argument
and the fix; nothing that does not fit is silently accepted."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import zarrdask as zd
from zarrdask.errors import (
    AxesError,
    CorruptChunkError,
    DataGroupError,
    RoiError,
    SourceNotFoundError,
    UnsupportedFormatError,
    ZarrdaskError,
)

RNG = np.random.default_rng(99)


def _zarr_group(path: Path) -> str:
    """A zarr v3 group with two arrays, ``raw`` (2-D) and ``masks/cells``."""
    group = zarr.open_group(path, mode="w", zarr_format=3)
    raw = group.create_array("raw", shape=(20, 30), chunks=(10, 10), dtype="u2")
    raw[:] = np.arange(600, dtype="u2").reshape(20, 30)
    group.create_group("masks").create_array("cells", shape=(20, 30), chunks=(10, 10),
                                             dtype="u1")
    return str(path)


def _ome_zarr(path: Path) -> str:
    from zarrdask.datasets import write_synthetic_slide

    return write_synthetic_slide(path, size=256, chunk=128, levels=2, seed=3, zarr_format=3)


def _tiff_pyramid(path: Path) -> str:
    base = RNG.integers(0, 256, size=(2, 128, 128), dtype=np.uint8)
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        tif.write(base, subifds=1, tile=(64, 64), photometric="minisblack",
                  metadata={"axes": "CYX"})
        tif.write(base[:, ::2, ::2], subfiletype=1, tile=(64, 64), photometric="minisblack")
    return str(path)


def _assert_typed(error: BaseException, builtin: type[BaseException]) -> None:
    assert isinstance(error, ZarrdaskError)
    assert isinstance(error, builtin)


# ------------------------------------------------------------------- the source


def test_missing_path(tmp_path: Path):
    missing = tmp_path / "nowhere" / "slide.zarr"
    with pytest.raises(SourceNotFoundError) as info:
        zd.open_image(missing)
    _assert_typed(info.value, FileNotFoundError)
    message = str(info.value)
    assert str(missing) in message
    assert "does not exist" in message and "check the path" in message


def test_text_file_is_unsupported(tmp_path: Path):
    path = tmp_path / "notes.txt"
    path.write_text("not an image\n")
    with pytest.raises(UnsupportedFormatError) as info:
        zd.open_image(path)
    _assert_typed(info.value, ValueError)
    message = str(info.value)
    assert str(path) in message
    assert "'.txt'" in message
    assert "convert" in message


@pytest.mark.parametrize("name", ["blob.xyz", "blob", "blob.png", "blob.jpg"])
def test_random_bytes_are_unsupported(tmp_path: Path, name: str):
    path = tmp_path / name
    path.write_bytes(RNG.integers(0, 256, size=4096, dtype=np.uint8).tobytes())
    with pytest.raises(UnsupportedFormatError) as info:
        zd.open_image(path)
    message = str(info.value)
    assert str(path) in message
    assert "convert" in message


def test_empty_file_is_unsupported(tmp_path: Path):
    path = tmp_path / "empty.png"
    path.touch()
    with pytest.raises(UnsupportedFormatError, match="empty") as info:
        zd.open_image(path)
    assert str(path) in str(info.value)


def test_tiff_extension_on_a_png(tmp_path: Path):
    path = tmp_path / "really_a_png.tif"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path, format="PNG")
    with pytest.raises(UnsupportedFormatError) as info:
        zd.open_image(path)
    message = str(info.value)
    assert str(path) in message
    assert "TIFF header" in message
    assert "rename it" in message


def test_folder_without_zarr_metadata(tmp_path: Path):
    folder = tmp_path / "images"
    folder.mkdir()
    with pytest.raises(UnsupportedFormatError) as info:
        zd.open_image(folder)
    message = str(info.value)
    assert str(folder) in message
    assert "zarr.json" in message


# ------------------------------------------------------------------------- axes


def test_axes_of_the_wrong_length(tmp_path: Path):
    path = _zarr_group(tmp_path / "group.zarr")
    with pytest.raises(AxesError) as info:
        zd.open_image(path, data_group="raw", axes="CYX")
    _assert_typed(info.value, ValueError)
    message = str(info.value)
    assert "axes='CYX'" in message
    assert path in message
    assert "3 letters" in message and "2 dims" in message
    assert "one letter per dim" in message


def test_axes_of_the_wrong_length_suggest_the_stored_axes(tmp_path: Path):
    path = _ome_zarr(tmp_path / "slide.zarr")
    with pytest.raises(AxesError) as info:
        zd.open_image(path, axes="YX")
    message = str(info.value)
    assert "axes='YX'" in message and path in message
    assert "3 dims" in message
    assert "pass axes='CYX' or leave axes out" in message


def test_axes_with_a_repeated_letter():
    data = np.zeros((4, 5, 6), np.uint8)
    with pytest.raises(AxesError) as info:
        zd.open_image(data, axes="YYX")
    message = str(info.value)
    assert "axes='YYX'" in message
    assert "more than once" in message
    # case does not make two letters different
    with pytest.raises(AxesError, match="more than once"):
        zd.open_image(data, axes="xyX")


def test_axes_with_characters_that_are_not_letters():
    with pytest.raises(AxesError, match="not axis letters"):
        zd.open_image(np.zeros((4, 5), np.uint8), axes="Y1")


def test_3d_numpy_without_axes_asks_for_axes():
    with pytest.raises(AxesError) as info:
        zd.open_image(np.zeros((4, 5, 3), np.uint8))
    message = str(info.value)
    assert "3 dims" in message
    assert "(4, 5, 3)" in message
    assert "pass axes=" in message and "axes='YXC'" in message


def test_axes_that_reorder_the_metadata_axes_are_refused(tmp_path: Path):
    path = _ome_zarr(tmp_path / "slide.zarr")  # c, y, x in its metadata
    with pytest.raises(AxesError) as info:
        zd.open_image(path, axes="YXC")
    message = str(info.value)
    assert "axes='YXC'" in message and path in message
    assert "(CYX)" in message
    assert "axes='CYX'" in message  # the fix
    # the stored order itself, in either case, or tifffile's S, is accepted
    assert zd.open_image(path, axes="cyx").dims == ("c", "y", "x")
    assert zd.open_image(path, axes="SYX").dims == ("c", "y", "x")


def test_tiff_axes_that_reorder_are_refused(tmp_path: Path):
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, np.zeros((6, 8, 3), np.uint8), photometric="rgb")
    with pytest.raises(AxesError, match=r"axes='CYX'.*\(YXC\)"):
        zd.open_image(path, axes="CYX")


_LETTERS = st.sampled_from(list("TCZYXQ"))


@settings(max_examples=60, deadline=None)
@given(ndim=st.integers(1, 5), axes=st.lists(_LETTERS, min_size=0, max_size=6))
def test_axes_that_do_not_fit_are_never_accepted(ndim: int, axes: list[str]):
    data = np.zeros((2,) * ndim, np.uint8)
    text = "".join(axes)
    fits = len(axes) == ndim and len(set(axes)) == len(axes)
    if fits:
        arr = zd.open_image(data, axes=text)
        assert arr.dims == tuple(a.lower() for a in axes)
    else:
        with pytest.raises(AxesError):
            zd.open_image(data, axes=text)


# ------------------------------------------------------------ data_group, level


def test_missing_zarr_data_group_lists_what_exists(tmp_path: Path):
    path = _zarr_group(tmp_path / "group.zarr")
    with pytest.raises(DataGroupError) as info:
        zd.open_image(path, data_group="labels")
    _assert_typed(info.value, KeyError)
    message = str(info.value)
    assert "data_group='labels'" in message
    assert path in message
    for existing in ("'raw'", "'masks'", "'masks/cells'"):
        assert existing in message
    assert "pass one of those" in message


def test_missing_tiff_data_group_lists_what_exists(tmp_path: Path):
    path = _tiff_pyramid(tmp_path / "pyramid.ome.tif")
    for bad in ("2", "1/0", "0/5", "labels", "0/1/2"):
        with pytest.raises(DataGroupError) as info:
            zd.open_image(path, data_group=bad)
        message = str(info.value)
        assert f"data_group={bad!r}" in message
        assert path in message
        assert "'0/0', '0/1'" in message


@pytest.mark.parametrize("kind", ["zarr", "tiff"])
def test_level_out_of_range(tmp_path: Path, kind: str):
    path = (_ome_zarr(tmp_path / "slide.zarr") if kind == "zarr"
            else _tiff_pyramid(tmp_path / "pyramid.ome.tif"))
    with pytest.raises(DataGroupError) as info:
        zd.open_image(path, level=5)
    message = str(info.value)
    assert "level=5" in message
    assert path in message
    assert "2 level(s)" in message and "pass 0..1" in message


# -------------------------------------------------------------------------- ROI


def test_roi_outside_the_image(tmp_path: Path):
    path = _zarr_group(tmp_path / "group.zarr")
    with pytest.raises(RoiError) as info:
        zd.open_image(path, data_group="raw", roi="(10,25):(5,10)")
    _assert_typed(info.value, ValueError)
    message = str(info.value)
    assert path in message
    assert "roi" in message
    assert "[25, 35)" in message and "'x'" in message and "[0, 30)" in message
    assert "length of -1" in message  # the fix


@pytest.mark.parametrize(
    ("roi", "expected"),
    [
        ("(0,0)(10,10)", "no ':'"),
        ("(0,a):(5,5)", "cannot read the start coordinates"),
        ("(0,0):(5)", "2 start values but 1 lengths"),
        ("(0,0,0):(1,1,1)", "3 axes but the image has 2"),
        ({"z": slice(0, 2)}, "dims ['z']"),
        ({"y": (0, 5)}, "give a slice of integers"),
        ({"y": slice(0, 10, 2)}, "drop the step"),
    ],
)
def test_malformed_roi(tmp_path: Path, roi, expected: str):
    data = np.zeros((20, 30), np.uint8)
    with pytest.raises(RoiError) as info:
        zd.open_image(data, roi=roi)
    assert expected in str(info.value)


# ------------------------------------------------------------ damaged storage


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_corrupt_zarr_chunk_names_the_chunk_and_the_store(tmp_path: Path, zarr_format: int):
    path = tmp_path / "damaged.zarr"
    data = np.arange(20 * 30, dtype="u2").reshape(20, 30)
    if zarr_format == 3:
        z = zarr.create_array(path, shape=data.shape, chunks=(10, 10), dtype="u2",
                              compressors=zarr.codecs.ZstdCodec(), zarr_format=3)
        chunk_key, chunk_file = "c/0/1", path / "c" / "0" / "1"
    else:
        from numcodecs import Zlib

        z = zarr.create_array(path, shape=data.shape, chunks=(10, 10), dtype="u2",
                              compressors=Zlib(), zarr_format=2)
        chunk_key, chunk_file = "0.1", path / "0.1"
    z[:] = data
    assert chunk_file.is_file()
    chunk_file.write_bytes(b"these are not compressed bytes" * 4)

    arr = zd.open_image(path)
    # chunks that are intact still read
    np.testing.assert_array_equal(arr[:, :10].values, data[:, :10])
    with pytest.raises(CorruptChunkError) as info:
        arr.compute()
    _assert_typed(info.value, OSError)
    message = str(info.value)
    assert f"chunk {chunk_key} " in message
    assert str(path) in message
    assert "rewrite that chunk" in message


def test_truncated_tiff_fails_at_open(tmp_path: Path):
    path = tmp_path / "cut.tif"
    data = RNG.integers(0, 256, size=(256, 256), dtype=np.uint8)
    tifffile.imwrite(path, data, tile=(64, 64), compression="zlib")
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CorruptChunkError) as info:
        zd.open_image(path)
    message = str(info.value)
    assert str(path) in message
    assert "damaged or truncated" in message
    assert "export the file again" in message


def test_truncated_pyramid_never_opens_with_fewer_levels(tmp_path: Path):
    path = Path(_tiff_pyramid(tmp_path / "pyramid.ome.tif"))
    whole = path.read_bytes()
    # cut the file at several places: tifffile alone would carry on with a
    # shorter pyramid or other axes, zarrdask refuses
    for fraction in (0.2, 0.6, 0.9, 0.99):
        path.write_bytes(whole[: int(len(whole) * fraction)])
        with pytest.raises(CorruptChunkError, match="damaged or truncated"):
            zd.open_pyramid(path)


@pytest.mark.parametrize("fraction", [0.3, 0.95])
def test_truncated_page_stack_never_opens_with_fewer_pages(tmp_path: Path, fraction: float):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, RNG.integers(0, 256, size=(10, 64, 64), dtype=np.uint8),
                     metadata={"axes": "ZYX"})
    whole = path.read_bytes()
    path.write_bytes(whole[: int(len(whole) * fraction)])
    with pytest.raises(CorruptChunkError, match="damaged or truncated"):
        zd.open_image(path)


def test_truncated_tiff_header(tmp_path: Path):
    path = tmp_path / "header_only.tif"
    tifffile.imwrite(path, np.zeros((32, 32), np.uint8))
    path.write_bytes(path.read_bytes()[:12])
    with pytest.raises(CorruptChunkError, match="damaged or truncated") as info:
        zd.open_image(path)
    assert str(path) in str(info.value)


def test_damaged_tiff_tile_names_the_tile(tmp_path: Path):
    path = tmp_path / "damaged_tile.tif"
    data = RNG.integers(0, 256, size=(256, 256), dtype=np.uint8)
    tifffile.imwrite(path, data, tile=(64, 64), compression="zlib")
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[0].dataoffsets[6]  # tile row 1, column 2
    raw = bytearray(path.read_bytes())
    raw[offset:offset + 64] = bytes(64)
    path.write_bytes(bytes(raw))

    arr = zd.open_image(path)
    np.testing.assert_array_equal(arr[:64].values, data[:64])
    with pytest.raises(CorruptChunkError) as info:
        arr[64:128].compute()
    message = str(info.value)
    assert "chunk 1.2 " in message
    assert str(path) in message


def test_errors_are_builtin_types_for_callers_that_catch_those(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        zd.open_image(os.fspath(tmp_path / "missing.tif"))
    with pytest.raises(ValueError):
        zd.open_image(np.zeros((2, 2, 2)))
    with pytest.raises(KeyError):
        zd.open_image(_zarr_group(tmp_path / "g.zarr"), data_group="nope")
