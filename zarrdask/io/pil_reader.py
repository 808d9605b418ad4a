"""Flat image formats (PNG, JPEG, BMP, ...) through Pillow, keeping the dtype.

The header gives shape and dtype without decoding; pixels are decoded whole
at first read (these formats have no chunks).

Bit depth is kept: 8-bit images read as ``uint8``, 16-bit greyscale as
``uint16`` (whatever mode Pillow opens them with: ``"I;16"`` or ``"I"``).
Pillow reduces 16-bit colour to 8 bits, so 16-bit RGB(A) PNGs are decoded
with imagecodecs instead, and other 16-bit colour files raise rather than
lose precision. Palette images (mode ``"P"``) read as their palette indices,
which is what label images stored as palette PNGs mean. Only the first frame
of a multi-frame file (GIF, APNG) is read.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import CorruptChunkError, DataGroupError, UnsupportedFormatError
from .levels import Level, SourceLevels
from .location import get_filesystem, protocol_of, remote_error
from .recipe import ArrayRecipe, register_opener

__all__ = ["discover_pil", "read_pil_array", "pil_extensions"]

_MODE_DTYPES = {
    "1": np.bool_, "L": np.uint8, "P": np.uint8, "LA": np.uint8, "PA": np.uint8,
    "La": np.uint8, "RGB": np.uint8, "RGBA": np.uint8, "RGBa": np.uint8, "RGBX": np.uint8,
    "CMYK": np.uint8, "YCbCr": np.uint8, "LAB": np.uint8, "HSV": np.uint8,
    "I;16": np.uint16, "I;16L": np.uint16, "I;16B": np.uint16, "I;16N": np.uint16,
    "I": np.int32, "F": np.float32,
}


def pil_extensions() -> set[str]:
    """File extensions Pillow can open.

    Returns
    -------
    set of str
        Lower case, with the leading dot (``".png"``).
    """
    from PIL import Image

    return {ext.lower() for ext in Image.registered_extensions()}


def _read_bytes(location: str, storage_options: Mapping[str, Any] | None) -> bytes:
    if protocol_of(location) == "file":
        with open(location, "rb") as fh:
            return fh.read()
    try:
        fs, path = get_filesystem(location, storage_options)
        return fs.cat_file(path)
    except Exception as exc:
        raise remote_error(location, storage_options, exc) from exc


def _open(location: str, storage_options: Mapping[str, Any] | None) -> Any:
    """The image opened by Pillow (header read, pixels not decoded yet)."""
    from PIL import Image, UnidentifiedImageError

    # a remote file is fetched first, outside the handlers below: a network
    # failure is a RemoteAccessError, not a damaged file
    if protocol_of(location) == "file":
        target: Any = location
    else:
        target = io.BytesIO(_read_bytes(location, storage_options))
    try:
        return Image.open(target)
    except Image.DecompressionBombError as exc:
        raise UnsupportedFormatError(
            f"{location} is larger than Pillow's safety limit ({exc}); Pillow decodes such "
            "files whole, so convert the image to a tiled TIFF or OME-Zarr, or raise "
            "PIL.Image.MAX_IMAGE_PIXELS if you trust the file and have the memory"
        ) from exc
    except UnidentifiedImageError as exc:
        raise UnsupportedFormatError(
            f"{location} is not in a format zarrdask reads (not zarr, TIFF or a Pillow "
            "format); convert it, e.g. to OME-Zarr or TIFF"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        # Pillow raises these when the header itself is cut short or damaged.
        raise CorruptChunkError(
            f"{location}: Pillow cannot read the image header ({type(exc).__name__}: {exc}); "
            "the file is truncated or damaged; copy or export it again"
        ) from exc


def _tile_args(im: Any) -> Any:
    """The decoder arguments of the image's first tile (before loading)."""
    tile = getattr(im, "tile", None) or []
    if not tile:
        return None
    return tile[0].args if hasattr(tile[0], "args") else tile[0][3]


def _stored_bits(im: Any) -> int:
    """Bits per sample as stored in the file (8 when not known to be more).

    Read from how the decoder will unpack the pixels (``"I;16B"``,
    ``"RGB;16B"``...), or the maximum value of a PPM/PGM.
    """
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return 16
    args = _tile_args(im)
    raw = args[0] if isinstance(args, tuple) and args else args
    if isinstance(raw, str) and ";16" in raw:
        return 16
    if im.format in ("PPM", "PGM") and isinstance(args, tuple) and len(args) > 1 \
            and isinstance(args[1], int):
        return 16 if args[1] > 255 else 8
    return 8


def _layout(im: Any, location: str) -> tuple[tuple[int, ...], np.dtype, tuple[str, ...], str]:
    """Shape, dtype, dims and decoder (``"pil"`` or ``"png16"``) of an opened image."""
    width, height = im.size
    bands = len(im.getbands())
    bits = _stored_bits(im)
    dtype = np.dtype(_MODE_DTYPES.get(im.mode, np.uint8))
    decoder = "pil"
    if bits == 16:
        if bands == 1:
            dtype = np.dtype(np.uint16)
        elif im.format == "PNG":
            dtype, decoder = np.dtype(np.uint16), "png16"
        else:
            raise UnsupportedFormatError(
                f"{location} is a 16-bit {im.format} colour image ({im.mode}), which Pillow "
                "reduces to 8 bits; convert it to a 16-bit TIFF or PNG to keep its values"
            )
    if bands == 1:
        return (height, width), dtype, ("y", "x"), decoder
    return (height, width, bands), dtype, ("y", "x", "c"), decoder


def _check_group(location: str, data_group: str | int | None) -> None:
    if data_group not in (None, "", 0, "0", "/"):
        raise DataGroupError(
            f"data_group={data_group!r} asked for, but {location} is a flat image holding "
            "one array (data_group '0'); drop data_group"
        )


def discover_pil(location: str, *, data_group: str | int | None = None,
                 storage_options: Mapping[str, Any] | None = None) -> SourceLevels:
    """Read the header of a flat image: one level, dims ``y, x[, c]``.

    Parameters
    ----------
    location : str
        Path or URL of the image.
    data_group : str or int, optional
        Must be None (or ``"0"``): these files hold a single image.
    storage_options : mapping, optional
        fsspec options for URLs.

    Returns
    -------
    SourceLevels

    Raises
    ------
    UnsupportedFormatError
        Pillow does not recognise the file, or it is 16-bit colour that
        Pillow would reduce to 8 bits.
    DataGroupError
        A ``data_group`` other than ``"0"``.
    """
    _check_group(location, data_group)
    opts = dict(storage_options or {})
    with _open(location, opts) as im:
        shape, dtype, dims, _ = _layout(im, location)
    return SourceLevels(
        "pil", location,
        [Level(name="", recipe=ArrayRecipe("pil", location, None, opts), shape=shape,
               dtype=dtype, chunks=shape, dims=dims)],
    )


def read_pil_array(recipe: ArrayRecipe) -> np.ndarray:
    """Decode the whole image to numpy, keeping its bit depth.

    Parameters
    ----------
    recipe : ArrayRecipe
        A ``"pil"`` recipe.

    Returns
    -------
    numpy.ndarray
        ``(height, width)`` or ``(height, width, bands)``.

    Raises
    ------
    CorruptChunkError
        When the pixel data is truncated or cannot be decoded.
    """
    location = recipe.location
    with _open(location, recipe.storage_options) as im:
        shape, dtype, _, decoder = _layout(im, location)
        try:
            if decoder == "png16":
                import imagecodecs

                arr = imagecodecs.png_decode(_read_bytes(location, recipe.storage_options))
            else:
                arr = np.asarray(im)
        except Exception as exc:
            raise CorruptChunkError(
                f"cannot decode the pixels of {location} ({type(exc).__name__}: {exc}); the "
                "file is truncated or damaged; copy or export it again"
            ) from exc
    if arr.shape != shape:
        raise CorruptChunkError(
            f"{location} decoded to shape {arr.shape} but its header says {shape}; the file "
            "is damaged; copy or export it again"
        )
    return arr.astype(dtype, copy=False)


register_opener("pil", read_pil_array)
