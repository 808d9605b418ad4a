"""Flat formats read through Pillow: PNG (8/16-bit, grey, RGB, RGBA, palette,
1-bit), JPEG and 16-bit PGM, written by the tests."""

from __future__ import annotations

import pickle
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from PIL import Image

import zarrdask as zd
from zarrdask.errors import CorruptChunkError, DataGroupError, UnsupportedFormatError

RNG = np.random.default_rng(7)


def test_png_rgb_uint8(tmp_path: Path):
    data = RNG.integers(0, 256, size=(40, 56, 3), dtype=np.uint8)
    path = tmp_path / "rgb.png"
    Image.fromarray(data).save(path)

    arr = zd.open_image(path)
    assert arr.attrs["reader"] == "pil"
    assert arr.dims == ("y", "x", "c")
    assert arr.dtype == np.uint8
    np.testing.assert_array_equal(arr.values, data)
    np.testing.assert_array_equal(arr[5:20, 7:9].values, data[5:20, 7:9])


def test_png_rgba_keeps_alpha(tmp_path: Path):
    data = RNG.integers(0, 256, size=(17, 23, 4), dtype=np.uint8)
    path = tmp_path / "rgba.png"
    Image.fromarray(data, mode="RGBA").save(path)
    arr = zd.open_image(path)
    assert arr.dims == ("y", "x", "c")
    assert arr.shape == (17, 23, 4)
    np.testing.assert_array_equal(arr.values, data)


def test_png_grey_8bit_stays_uint8(tmp_path: Path):
    data = RNG.integers(0, 256, size=(31, 29), dtype=np.uint8)
    path = tmp_path / "grey8.png"
    Image.fromarray(data).save(path)
    with Image.open(path) as im:
        assert im.mode == "L"
    arr = zd.open_image(path)
    assert arr.dims == ("y", "x")
    assert arr.dtype == np.uint8
    np.testing.assert_array_equal(arr.values, data)


@pytest.mark.parametrize("writer", ["pillow", "skimage"])
def test_png_grey_16bit_stays_uint16_with_exact_values(tmp_path: Path, writer: str):
    # the full range, including values above 32767 and above 255
    data = RNG.integers(0, 2**16, size=(33, 47), dtype=np.uint16)
    data[0, :4] = [0, 255, 256, 65535]
    path = tmp_path / f"grey16_{writer}.png"
    if writer == "pillow":
        Image.fromarray(data).save(path)
    else:
        import skimage.io

        skimage.io.imsave(path, data, check_contrast=False)
    with Image.open(path) as im:
        # Pillow opens 16-bit greyscale PNG as "I;16" (older versions as "I")
        assert im.mode in ("I;16", "I")

    arr = zd.open_image(path)
    assert arr.dims == ("y", "x")
    assert arr.dtype == np.uint16
    values = arr.values
    assert values.dtype == np.uint16
    np.testing.assert_array_equal(values, data)


def test_png_rgb_16bit_is_not_reduced_to_8bit(tmp_path: Path):
    data = RNG.integers(0, 2**16, size=(20, 24, 3), dtype=np.uint16)
    path = tmp_path / "rgb16.png"
    path.write_bytes(imagecodecs.png_encode(data))
    with Image.open(path) as im:
        assert im.mode == "RGB"  # what Pillow alone would give: 8 bits

    arr = zd.open_image(path)
    assert arr.dims == ("y", "x", "c")
    assert arr.dtype == np.uint16
    np.testing.assert_array_equal(arr.values, data)


def test_jpeg_shape_dtype_and_approximate_values(tmp_path: Path):
    yy, xx = np.mgrid[0:64, 0:96]
    data = np.stack([yy * 3, xx * 2, (yy + xx)], axis=-1).astype(np.uint8)  # smooth
    path = tmp_path / "photo.jpg"
    Image.fromarray(data).save(path, quality=95)

    arr = zd.open_image(path)
    assert arr.dims == ("y", "x", "c")
    assert arr.shape == (64, 96, 3)
    assert arr.dtype == np.uint8
    error = np.abs(arr.values.astype(int) - data.astype(int))
    assert error.mean() < 2.0
    assert error.max() < 20


def test_greyscale_jpeg_is_2d(tmp_path: Path):
    data = np.tile(np.arange(0, 250, 5, dtype=np.uint8), (30, 1))
    path = tmp_path / "grey.jpeg"
    Image.fromarray(data).save(path, quality=95)
    arr = zd.open_image(path)
    assert arr.dims == ("y", "x")
    assert arr.shape == (30, 50)
    assert np.abs(arr.values.astype(int) - data).mean() < 2.0


def test_palette_png_reads_its_indices(tmp_path: Path):
    labels = RNG.integers(0, 5, size=(25, 30), dtype=np.uint8)
    im = Image.fromarray(labels, mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 0])
    path = tmp_path / "labels.png"
    im.save(path)
    arr = zd.open_image(path)
    assert arr.dims == ("y", "x")
    np.testing.assert_array_equal(arr.values, labels)


def test_one_bit_png_is_boolean(tmp_path: Path):
    mask = RNG.random((19, 21)) > 0.5
    path = tmp_path / "mask.png"
    Image.fromarray(mask).save(path)
    arr = zd.open_image(path)
    assert arr.dtype == np.bool_
    np.testing.assert_array_equal(arr.values, mask)


def test_pgm_16bit_stays_uint16(tmp_path: Path):
    data = RNG.integers(0, 2**16, size=(5, 6), dtype=np.uint16)
    path = tmp_path / "grey16.pgm"
    path.write_bytes(b"P5 6 5 65535\n" + data.astype(">u2").tobytes())
    arr = zd.open_image(path)
    assert arr.dtype == np.uint16
    np.testing.assert_array_equal(arr.values, data)


def test_ppm_16bit_colour_refuses_to_lose_bits(tmp_path: Path):
    data = RNG.integers(0, 2**16, size=(5, 6, 3), dtype=np.uint16)
    path = tmp_path / "colour16.ppm"
    path.write_bytes(b"P6 6 5 65535\n" + data.astype(">u2").tobytes())
    with pytest.raises(UnsupportedFormatError) as info:
        zd.open_image(path)
    message = str(info.value)
    assert str(path) in message
    assert "16-bit" in message and "8 bits" in message
    assert "convert it" in message


def test_flat_image_has_one_data_group(tmp_path: Path):
    data = RNG.integers(0, 256, size=(8, 9), dtype=np.uint8)
    path = tmp_path / "flat.png"
    Image.fromarray(data).save(path)
    np.testing.assert_array_equal(zd.open_image(path, data_group="0").values, data)
    with pytest.raises(DataGroupError) as info:
        zd.open_image(path, data_group="1")
    message = str(info.value)
    assert "data_group='1'" in message and str(path) in message
    assert "drop data_group" in message
    assert isinstance(info.value, KeyError)


def test_truncated_png_raises_corrupt_chunk_on_read(tmp_path: Path):
    data = RNG.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    path = tmp_path / "cut.png"
    Image.fromarray(data).save(path)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])

    arr = zd.open_image(path)  # the header is intact: opening is lazy
    assert arr.shape == (64, 64, 3)
    with pytest.raises(CorruptChunkError) as info:
        arr.compute()
    message = str(info.value)
    assert str(path) in message
    assert "truncated or damaged" in message
    assert isinstance(info.value, OSError)


def test_png_image_pickles(tmp_path: Path):
    data = RNG.integers(0, 2**16, size=(12, 10), dtype=np.uint16)
    path = tmp_path / "pickled.png"
    Image.fromarray(data).save(path)
    clone = pickle.loads(pickle.dumps(zd.open_image(path)))
    np.testing.assert_array_equal(clone.values, data)


def test_image_over_pillows_pixel_limit_is_a_typed_error(tmp_path: Path, monkeypatch):
    path = tmp_path / "huge.png"
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(path)
    # Pillow refuses images over twice MAX_IMAGE_PIXELS; lower the limit
    # rather than write gigapixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(UnsupportedFormatError) as info:
        zd.open_image(path)
    message = str(info.value)
    assert str(path) in message
    assert "tiled TIFF or OME-Zarr" in message and "MAX_IMAGE_PIXELS" in message
