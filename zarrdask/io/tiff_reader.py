"""TIFF, BigTIFF and OME-TIFF (with pyramids) through tifffile's zarr store.

``data_group`` picks what to open: a single value ``"b"`` is pyramid level
``b`` of the first series; ``"a/b"`` is series ``a``, level ``b``. Every
level of the chosen series is listed (finest first) so that
:func:`zarrdask.open_pyramid` sees the whole pyramid.

Geometry comes from the file itself: dims from tifffile's axes (``S``, the
samples of an RGB pixel, becomes ``c``), chunks from the zarr view of each
level (one chunk per TIFF tile or strip), and for OME-TIFF the physical pixel
size of level 0 (``PhysicalSizeX/Y/Z``), else the vendor metadata or the
resolution tags (:mod:`zarrdask.io.resolution`: Aperio ``MPP``, ``XResolution``
with ``ResolutionUnit``), multiplied by each level's downsampling factor.
Associated images of a slide (thumbnail, label, macro) are series of their
own, opened with ``data_group="label"`` etc.

A damaged file never reads as a smaller or different image: tifffile is
lenient (it logs a broken IFD chain and carries on with what it could parse),
so the reader watches tifffile's log while it parses the file and checks that
every pixel segment lies inside the file, and raises
:class:`~zarrdask.errors.CorruptChunkError` otherwise.
"""

from __future__ import annotations

import logging
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import tifffile
import zarr

from ..axes import SPATIAL_DIMS, lower_dims
from ..errors import (
    CorruptChunkError,
    DataGroupError,
    SourceNotFoundError,
    UnsupportedFormatError,
    ZarrdaskError,
)
from .levels import Level, SourceLevels
from .location import get_filesystem, protocol_of, remote_error
from .recipe import ArrayRecipe, register_opener
from .resolution import associated_images, tiff_physical

__all__ = [
    "discover_tiff",
    "open_tiff_array",
    "TIFF_EXTENSIONS",
    "is_tiff_magic",
    "TiffLevelArray",
]

TIFF_EXTENSIONS = (".tif", ".tiff", ".btf", ".tf8", ".svs", ".ndpi", ".scn", ".qptiff", ".bif")

#: OME length units (``UnitsLength``) to the UDUNITS names OME-NGFF uses.
_OME_UNITS = {
    "µm": "micrometer", "um": "micrometer", "μm": "micrometer", "nm": "nanometer",
    "mm": "millimeter", "cm": "centimeter", "m": "meter", "pm": "picometer",
    "Å": "angstrom", "in": "inch", "ft": "foot", "km": "kilometer",
}


def is_tiff_magic(head: bytes) -> bool:
    """Whether the first bytes of a file are a (Big)TIFF header.

    Parameters
    ----------
    head : bytes
        At least the first 4 bytes of the file.

    Returns
    -------
    bool
    """
    return head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


# -- opening ---------------------------------------------------------------------------


def _open_tifffile(location: str, storage_options: Mapping[str, Any] | None) -> tifffile.TiffFile:
    if protocol_of(location) == "file":
        try:
            return tifffile.TiffFile(location)
        except FileNotFoundError as exc:
            raise SourceNotFoundError(f"{location} does not exist; check the path") from exc
    try:
        fs, path = get_filesystem(location, storage_options)
        fh = fs.open(path, "rb")
    except Exception as exc:
        raise remote_error(location, storage_options, exc) from exc
    return tifffile.TiffFile(fh)


class _TiffLog(logging.Handler):
    """Collects what tifffile logs, from this thread, about a broken file.

    tifffile logs (instead of raising) when an IFD chain, a tag list or a
    series parser fails, then carries on with what it could parse.
    """

    _MARKERS = ("corrupt", "invalid page offset", "invalid offset to page", "circular",
                "truncat")

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.thread = threading.get_ident()
        self.problems: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:
            return
        message = record.getMessage()
        lower = message.lower()
        if any(m in lower for m in self._MARKERS) or (
            record.levelno >= logging.ERROR and " raised " in lower
        ):
            self.problems.append(message)

    def summary(self, limit: int = 2) -> str:
        """The first distinct problems, shortened for an error message."""
        unique = list(dict.fromkeys(self.problems))
        text = "; ".join(p if len(p) <= 160 else p[:157] + "..." for p in unique[:limit])
        return text + (f" (and {len(unique) - limit} more)" if len(unique) > limit else "")


@contextmanager
def _watch_tifffile_log() -> Iterator[_TiffLog]:
    logger = logging.getLogger("tifffile")
    handler = _TiffLog()
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _damaged(location: str, detail: str) -> CorruptChunkError:
    return CorruptChunkError(
        f"{location} has a TIFF header but is damaged or truncated ({detail}); tifffile cannot "
        "read its structure, so its pyramid and pixels would be wrong; copy or export the file "
        "again"
    )


def _file_size(owner: Any, default: int) -> int:
    """Size of the file a page or series lives in (multi-file OME-TIFF
    series hold pages of other files)."""
    try:
        return int(owner.parent.filehandle.size)
    except AttributeError:
        return default


def _check_segments(location: str, series: Any, file_size: int) -> None:
    """Raise when a level refers to pixel data or IFDs past the end of its file."""
    for index, level in enumerate(series.levels):
        offset = getattr(level, "dataoffset", None)
        size = _file_size(level, file_size)
        if offset is not None and offset + level.nbytes > size:
            raise _damaged(location, f"level {index} needs {offset + level.nbytes} bytes, the "
                                     f"file has {size}")
        if offset is not None:
            continue  # contiguous data: checked whole, spare a walk over every page
        for page in level.pages:
            if page is None:
                raise _damaged(location, f"a page of level {index} is missing")
            size = _file_size(page, file_size)
            if any(int(o) >= size for o in getattr(page, "subifds", None) or ()):
                raise _damaged(location, f"a sub-resolution IFD of level {index} lies past "
                                         f"the end of the file ({size} bytes)")
            offsets = np.asarray(page.dataoffsets, dtype=np.uint64)
            counts = np.asarray(page.databytecounts, dtype=np.uint64)
            if offsets.size and int((offsets + counts).max()) > size:
                raise _damaged(location, f"pixel data of level {index} ends past the end of "
                                         f"the file ({size} bytes)")


# -- data_group ------------------------------------------------------------------------


def _parse_group(data_group: str | int | None) -> tuple[int, int | None] | None:
    """``(series, level)`` of a data_group; level None means "not given".

    Returns None when the text is not a TIFF key.
    """
    if data_group is None or data_group == "":
        return 0, None
    text = str(data_group).strip().strip("/")
    parts = text.split("/")
    if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
        return None
    if len(parts) == 1:
        return 0, int(parts[0])
    return int(parts[0]), int(parts[1])


def _available(tif: tifffile.TiffFile) -> str:
    keys = [f"{s}/{lv}" for s, series in enumerate(tif.series) for lv in range(len(series.levels))]
    shown = ", ".join(repr(k) for k in keys[:40])
    return shown + (f" ... ({len(keys)} in all)" if len(keys) > 40 else "")


def _check_group(location: str, tif: tifffile.TiffFile, data_group: str | int | None
                 ) -> tuple[int, int | None]:
    parsed = _parse_group(data_group)
    named = associated_images(tif)
    if parsed is None and str(data_group).strip().lower() in named:
        return named[str(data_group).strip().lower()], None
    if parsed is None:
        extra = (f", or an associated image: {', '.join(map(repr, named))}" if named else "")
        raise DataGroupError(
            f"data_group={data_group!r} is not a key of the TIFF {location}; a TIFF key is "
            "'level' (e.g. '1') or 'series/level' (e.g. '0/1'); this file holds "
            f"{_available(tif)}{extra}"
        )
    series_idx, level_idx = parsed
    if series_idx >= len(tif.series):
        raise DataGroupError(
            f"data_group={data_group!r} asks for series {series_idx}, but {location} has "
            f"{len(tif.series)} series; it holds {_available(tif)}; pass one of those"
        )
    n_levels = len(tif.series[series_idx].levels)
    if level_idx is not None and level_idx >= n_levels:
        raise DataGroupError(
            f"data_group={data_group!r} asks for pyramid level {level_idx} of series "
            f"{series_idx}, but it has {n_levels} level(s); {location} holds "
            f"{_available(tif)}; pass one of those"
        )
    return series_idx, level_idx


# -- geometry --------------------------------------------------------------------------


def _ome_physical_sizes(tif: tifffile.TiffFile, series: int, base_shape: Mapping[str, int]
                        ) -> tuple[dict[str, float], dict[str, str]]:
    """Physical pixel size and unit per spatial dim of an OME-TIFF series.

    Only trusted when the OME ``Pixels`` element describes an image of the
    size tifffile found for that series.
    """
    xml = tif.ome_metadata if tif.is_ome else None
    if not xml:
        return {}, {}
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return {}, {}
    images = [el for el in root if el.tag.rpartition("}")[2] == "Image"]
    if series >= len(images):
        return {}, {}
    pixels = next((el for el in images[series] if el.tag.rpartition("}")[2] == "Pixels"), None)
    if pixels is None:
        return {}, {}
    for dim in ("x", "y"):
        size = pixels.get(f"Size{dim.upper()}")
        if dim in base_shape and size is not None and int(size) != base_shape[dim]:
            return {}, {}
    scale, units = {}, {}
    for dim in SPATIAL_DIMS:
        value = pixels.get(f"PhysicalSize{dim.upper()}")
        if value and dim in base_shape:
            scale[dim] = float(value)
            unit = pixels.get(f"PhysicalSize{dim.upper()}Unit", "µm")
            units[dim] = _OME_UNITS.get(unit, unit)
    return scale, units


def _downsample_factor(base: int, size: int) -> float:
    """How many level-0 pixels one pixel of a level spans along a dim.

    Pyramids are written with an integer factor ``f`` and sizes rounded
    either way (``floor`` or ``ceil`` of ``base / f``): that ``f`` is
    returned; any other ratio is returned as is.
    """
    ratio = base / size
    f = round(ratio)
    if f >= 1 and size in (base // f, -(-base // f)):
        return float(f)
    return ratio


def _level_geometry(array: Any) -> tuple[tuple[int, ...], np.dtype, tuple[int, ...]]:
    """Shape, dtype and chunks (one per TIFF tile or strip) of a level's zarr view."""
    return (tuple(int(s) for s in array.shape), np.dtype(array.dtype),
            tuple(int(c) for c in array.chunks))


def discover_tiff(location: str, *, data_group: str | int | None = None,
                  storage_options: Mapping[str, Any] | None = None) -> SourceLevels:
    """Find the pyramid levels of one TIFF series.

    Parameters
    ----------
    location : str
        Path or URL of the TIFF file.
    data_group : str or int, optional
        ``"level"`` (of series 0) or ``"series/level"``; the named level is
        the default one, and every level of the series is listed.
    storage_options : mapping, optional
        fsspec options for URLs.

    Returns
    -------
    SourceLevels
        The levels of the series, finest first, with dims, chunks (the TIFF
        tiles or strips) and, for OME-TIFF, the physical pixel size.

    Raises
    ------
    UnsupportedFormatError
        The file is not a TIFF.
    CorruptChunkError
        The file starts as a TIFF but is truncated or damaged.
    DataGroupError
        ``data_group`` does not name a series/level of the file (the
        message lists those that exist).
    """
    opts = dict(storage_options or {})
    with _watch_tifffile_log() as log:
        try:
            tif = _open_tifffile(location, opts)
        except ZarrdaskError:
            raise
        except tifffile.TiffFileError as exc:
            if "not a TIFF" in str(exc):
                raise UnsupportedFormatError(
                    f"{location} is not a TIFF file ({exc}); pass a TIFF, zarr or "
                    "Pillow-readable image, or fix the file's extension"
                ) from exc
            raise _damaged(location, str(exc)) from exc
        except (OSError, ValueError, EOFError) as exc:
            if protocol_of(location) != "file" and not isinstance(exc, EOFError):
                raise remote_error(location, opts, exc) from exc
            raise _damaged(location, f"{type(exc).__name__}: {exc}") from exc
        with tif:
            try:
                all_series = tif.series
            except Exception as exc:
                raise _damaged(location, f"{type(exc).__name__}: {exc}") from exc
            if log.problems:
                raise _damaged(location, log.summary())
            if not all_series:
                raise _damaged(location, "no image series found")
            series_idx, level_idx = _check_group(location, tif, data_group)
            series = all_series[series_idx]
            _check_segments(location, series, int(tif.filehandle.size))
            levels, power = _levels(location, tif, series_idx, series, opts)
            associated = list(associated_images(tif))
            if log.problems:
                raise _damaged(location, log.summary())
    return SourceLevels("tiff", location, levels, level_idx or 0, objective_power=power,
                        associated=associated)


def _levels(location: str, tif: tifffile.TiffFile, series_idx: int, series: Any,
            opts: dict[str, Any]) -> tuple[list[Level], float | None]:
    dims = lower_dims(series.levels[0].axes)  # S (samples) as c unless there is a C
    geometry = []
    for i in range(len(series.levels)):
        try:
            array = zarr.open_array(store=tif.aszarr(series=series_idx, level=i), mode="r")
        except Exception as exc:
            raise _damaged(location, f"level {i}: {type(exc).__name__}: {exc}") from exc
        geometry.append(_level_geometry(array))
    base = dict(zip(dims, geometry[0][0], strict=True))
    phys, units = _ome_physical_sizes(tif, series_idx, base)
    stated = tiff_physical(tif, series)
    if not phys:
        phys = {d: s for d, s in stated.scale.items() if d in base}
        units = {d: stated.units[d] for d in phys}
    levels = []
    for i, (shape, dtype, chunks) in enumerate(geometry):
        if len(shape) != len(dims):
            raise _damaged(location, f"level {i} has {len(shape)} dims, level 0 has {len(dims)}")
        scale = {d: phys.get(d, 1.0) * _downsample_factor(base[d], n)
                 for d, n in zip(dims, shape, strict=True) if d in SPATIAL_DIMS}
        key = f"{series_idx}/{i}"
        levels.append(
            Level(
                name=key,
                recipe=ArrayRecipe("tiff", location, key, opts),
                shape=shape,
                dtype=dtype,
                chunks=chunks,
                dims=dims,
                scale=scale,
                translation={d: 0.0 for d in scale},
                units={d: units.get(d, "pixel") for d in scale},
            )
        )
    return levels, stated.objective_power


# -- reading ---------------------------------------------------------------------------


class TiffLevelArray:
    """A TIFF level as a read-only zarr array that keeps its file open while
    it lives.

    Parameters
    ----------
    tif : tifffile.TiffFile
        The open file (closed when this object is collected).
    array : zarr.Array
        The zarr view of one level (``TiffFile.aszarr``).
    """

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
    """Open one TIFF level as a read-only zarr array.

    Parameters
    ----------
    recipe : ArrayRecipe
        A ``"tiff"`` recipe whose ``key`` is ``"series/level"``.

    Returns
    -------
    TiffLevelArray
    """
    parsed = _parse_group(recipe.key)
    if parsed is None:
        raise DataGroupError(
            f"{recipe!r} has key {recipe.key!r}, not a TIFF 'series/level'; reopen the image "
            "with open_image to get a valid recipe"
        )
    series_idx, level_idx = parsed
    tif = _open_tifffile(recipe.location, recipe.storage_options)
    try:
        store = tif.aszarr(series=series_idx, level=level_idx or 0)
        array = zarr.open_array(store=store, mode="r")
    except Exception:
        tif.close()
        raise
    return TiffLevelArray(tif, array)


register_opener("tiff", open_tiff_array)
