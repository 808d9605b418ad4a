"""TIFF, BigTIFF and OME-TIFF (with pyramids) through tifffile's zarr store.

``data_group`` picks what to open: a single value ``"b"`` is pyramid level
``b`` of the first series; ``"a/b"`` is series ``a``, level ``b``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import tifffile
import zarr

from ..errors import DataGroupError, UnsupportedFormatError
from .levels import Level, SourceLevels
from .location import get_filesystem, protocol_of, remote_error
from .recipe import ArrayRecipe

__all__ = ["discover_tiff", "open_tiff_array", "TIFF_EXTENSIONS", "is_tiff_magic"]

TIFF_EXTENSIONS = (".tif", ".tiff", ".btf", ".tf8", ".svs", ".ndpi", ".scn", ".qptiff", ".bif")
_SPATIAL = ("z", "y", "x")
_AXIS_RENAME = {"s": "c"}


def is_tiff_magic(head: bytes) -> bool:
    """Whether the first bytes of a file are a (Big)TIFF header."""
    return head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _open_tifffile(location: str, storage_options: Mapping[str, Any] | None) -> tifffile.TiffFile:
    if protocol_of(location) == "file":
        return tifffile.TiffFile(location)
    try:
        fs, path = get_filesystem(location, storage_options)
        fh = fs.open(path, "rb")
    except Exception as exc:
        raise remote_error(location, storage_options, exc) from exc
    return tifffile.TiffFile(fh)


def _parse_group(data_group: str | int | None) -> tuple[int, int | None]:
    if data_group is None or data_group == "":
        return 0, None
    text = str(data_group).strip("/")
    parts = text.split("/")
    try:
        if len(parts) == 1:
            return 0, int(parts[0])
        if len(parts) == 2:
            return int(parts[0]), int(parts[1])
    except ValueError:
        pass
    raise DataGroupError(
        f"data_group={data_group!r} is not a TIFF key; use 'level' (e.g. '1') or "
        "'series/level' (e.g. '0/1')"
    )


def _ome_physical_sizes(tif: tifffile.TiffFile, series: int) -> tuple[dict, dict]:
    xml = tif.ome_metadata
    if not xml:
        return {}, {}
    images = re.findall(r"<(?:\w+:)?Pixels\b([^>]*)>", xml)
    if series >= len(images):
        return {}, {}
    attrs = dict(re.findall(r'(\w+)="([^"]*)"', images[series]))
    scale, units = {}, {}
    for dim in ("x", "y", "z"):
        value = attrs.get(f"PhysicalSize{dim.upper()}")
        if value:
            scale[dim] = float(value)
            units[dim] = attrs.get(f"PhysicalSize{dim.upper()}Unit", "µm")
    return scale, units


def _dims(axes: str) -> tuple[str, ...]:
    return tuple(_AXIS_RENAME.get(a.lower(), a.lower()) for a in axes)


def discover_tiff(location: str, *, data_group: str | int | None = None,
                  storage_options: Mapping[str, Any] | None = None) -> SourceLevels:
    """Find the pyramid levels of one TIFF series.

    Parameters
    ----------
    location : str
        Path or URL of the TIFF file.
    data_group : str or int, optional
        ``"level"`` or ``"series/level"``.
    storage_options : mapping, optional
        fsspec options for URLs.

    Returns
    -------
    SourceLevels
    """
    opts = dict(storage_options or {})
    try:
        tif = _open_tifffile(location, opts)
    except tifffile.TiffFileError as exc:
        raise UnsupportedFormatError(
            f"{location} is not a readable TIFF ({exc}); check the file is complete, or pass "
            "an image in a supported format"
        ) from exc
    with tif:
        series_idx, level_idx = _parse_group(data_group)
        if series_idx >= len(tif.series):
            raise DataGroupError(
                f"data_group={data_group!r}: {location} has {len(tif.series)} series "
                f"(0..{len(tif.series) - 1}); pass 'series/level' with one of those"
            )
        series = tif.series[series_idx]
        n_levels = len(series.levels)
        if level_idx is not None and level_idx >= n_levels:
            raise DataGroupError(
                f"data_group={data_group!r}: series {series_idx} of {location} has {n_levels} "
                f"pyramid level(s) (0..{n_levels - 1}); pass one of those"
            )
        phys, units = _ome_physical_sizes(tif, series_idx)
        base_shape = dict(zip(_dims(series.levels[0].axes), series.levels[0].shape, strict=True))
        levels = []
        for i, lvl in enumerate(series.levels):
            dims = _dims(lvl.axes)
            shape = tuple(int(s) for s in lvl.shape)
            key = f"{series_idx}/{i}"
            chunks = _level_chunks(lvl, dims, shape)
            scale = {}
            for d, n in zip(dims, shape, strict=True):
                if d in _SPATIAL:
                    factor = base_shape[d] / n
                    scale[d] = phys.get(d, 1.0) * factor
            levels.append(
                Level(
                    name=key,
                    recipe=ArrayRecipe("tiff", location, key, opts),
                    shape=shape,
                    dtype=np.dtype(lvl.dtype),
                    chunks=chunks,
                    dims=dims,
                    scale=scale,
                    translation={d: 0.0 for d in scale},
                    units={d: units.get(d, "pixel") for d in scale},
                )
            )
    return SourceLevels("tiff", location, levels, level_idx or 0)


def _level_chunks(series: Any, dims: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    page = series.keyframe
    chunks = list(shape)
    if page.is_tiled:
        tile = {"y": page.tilelength, "x": page.tilewidth}
    else:
        tile = {"y": page.rowsperstrip or shape[dims.index("y")] if "y" in dims else 1}
    # One page per index of the non-spatial dims that are not samples.
    for i, d in enumerate(dims):
        if d in tile:
            chunks[i] = min(int(tile[d]), shape[i])
        elif d not in ("c",) and i < len(dims) - (3 if "c" in dims[-1:] else 2):
            chunks[i] = 1
    return tuple(chunks)


class TiffLevelArray:
    """A TIFF level as a zarr array that keeps its file open while it lives."""

    def __init__(self, tif: tifffile.TiffFile, array: zarr.Array) -> None:
        self._tif = tif
        self._array = array
        self.shape = array.shape
        self.dtype = array.dtype
        self.ndim = array.ndim
        self.chunks = array.chunks
        self.metadata = array.metadata

    def __getitem__(self, key: Any) -> np.ndarray:
        return self._array[key]

    def __del__(self) -> None:
        try:
            self._tif.close()
        except Exception:
            pass


def open_tiff_array(recipe: ArrayRecipe) -> TiffLevelArray:
    """Open one TIFF level (``recipe.key`` = ``"series/level"``) as a
    read-only zarr array."""
    series_idx, level_idx = _parse_group(recipe.key)
    tif = _open_tifffile(recipe.location, recipe.storage_options)
    store = tif.aszarr(series=series_idx, level=level_idx or 0)
    return TiffLevelArray(tif, zarr.open_array(store=store, mode="r"))
