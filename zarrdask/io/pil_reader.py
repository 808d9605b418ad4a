"""Flat image formats (PNG, JPEG, BMP, ...) through Pillow, keeping the dtype.

The header gives shape and dtype without decoding; pixels are decoded whole
at first read (these formats have no chunks).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import UnsupportedFormatError
from .levels import Level, SourceLevels
from .location import get_filesystem, protocol_of, remote_error
from .recipe import ArrayRecipe

__all__ = ["discover_pil", "read_pil_array", "pil_extensions"]

_MODE_DTYPES = {
    "1": np.bool_, "L": np.uint8, "P": np.uint8, "LA": np.uint8, "PA": np.uint8,
    "RGB": np.uint8, "RGBA": np.uint8, "RGBX": np.uint8, "CMYK": np.uint8, "YCbCr": np.uint8,
    "LAB": np.uint8, "HSV": np.uint8, "I;16": np.uint16, "I;16L": np.uint16,
    "I;16B": np.uint16, "I;16N": np.uint16, "I": np.int32, "F": np.float32,
}


def pil_extensions() -> set[str]:
    """File extensions Pillow can open (lower case, with the dot)."""
    from PIL import Image

    return {ext.lower() for ext in Image.registered_extensions()}


def _open(location: str, storage_options: Mapping[str, Any] | None):
    from PIL import Image, UnidentifiedImageError

    try:
        if protocol_of(location) == "file":
            return Image.open(location)
        try:
            fs, path = get_filesystem(location, storage_options)
            data = fs.cat_file(path)
        except Exception as exc:
            raise remote_error(location, storage_options, exc) from exc
        import io

        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise UnsupportedFormatError(
            f"{location} is not in a format zarrdask reads (not zarr, TIFF or a Pillow "
            "format); convert it, e.g. to OME-Zarr or TIFF"
        ) from exc


def _is_16bit(im) -> bool:
    # Pillow opens some 16-bit greyscale files as 32-bit mode "I".
    return im.mode == "I" and (im.info.get("bits") == 16 or getattr(im, "bits", None) == 16
                               or im.format == "PNG")


def _layout(im) -> tuple[tuple[int, ...], np.dtype, tuple[str, ...]]:
    width, height = im.size
    bands = len(im.getbands())
    dtype = np.dtype(_MODE_DTYPES.get(im.mode, np.uint8))
    if _is_16bit(im):
        dtype = np.dtype(np.uint16)
    if bands == 1:
        return (height, width), dtype, ("y", "x")
    return (height, width, bands), dtype, ("y", "x", "c")


def discover_pil(location: str, *, data_group: str | int | None = None,
                 storage_options: Mapping[str, Any] | None = None) -> SourceLevels:
    """Read the header of a flat image: one level, dims ``y, x[, c]``."""
    opts = dict(storage_options or {})
    with _open(location, opts) as im:
        shape, dtype, dims = _layout(im)
    return SourceLevels(
        "pil", location,
        [Level(name="", recipe=ArrayRecipe("pil", location, None, opts), shape=shape,
               dtype=dtype, chunks=shape, dims=dims)],
    )


def read_pil_array(recipe: ArrayRecipe) -> np.ndarray:
    """Decode the whole image to numpy, keeping its bit depth."""
    with _open(recipe.location, recipe.storage_options) as im:
        shape, dtype, _ = _layout(im)
        arr = np.asarray(im)
        if arr.dtype != dtype:
            arr = arr.astype(dtype)
    return arr.reshape(shape)
