"""Direct tile decoding of local tiled TIFF levels for the patch readers.

Reading a TIFF level through tifffile's zarr store costs zarr-python's
machinery on every chunk (about 2.7x the JPEG decode of a 256² tile). When
the level is one tiled page of a local file and the table's storage chunks
are its tiles, a chunk is instead one ``os.pread`` of the tile's bytes and
tifffile's own :attr:`tifffile.TiffPage.decode` (which applies the JPEG
tables, predictors and colour spaces exactly as tifffile does when it reads
the level). Anything else keeps the zarr path
(:mod:`zarrdask.dataset.chunks`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..io.location import protocol_of

__all__ = ["tiff_tile_reader"]


class _TileReader:
    """Decode tile ``(ty, tx[, 0])`` of one TIFF page (keeps the file open)."""

    def __init__(self, tif: Any, page: Any, shape: tuple[int, ...]) -> None:
        self._tif = tif  # the page's decode needs its keyframe alive
        self._page = page
        self._decode = page.decode
        self._fd = os.open(tif.filehandle.path, os.O_RDONLY)
        self._across = math.ceil(page.imagewidth / page.tilewidth)
        self._tile = (page.tilelength, page.tilewidth) + (
            (page.samplesperpixel,) if len(shape) == 3 else ())
        self._shape = shape
        self._fill = np.zeros((), dtype=page.dtype)

    def __call__(self, idx: tuple[int, ...]) -> np.ndarray:
        index = idx[0] * self._across + idx[1]
        offset, count = self._page.dataoffsets[index], self._page.databytecounts[index]
        extent = tuple(min(t, s - i * t) for i, t, s in zip(idx, self._tile, self._shape,
                                                            strict=True))
        if not count:  # a tile never written: tifffile reads it as zeros
            return np.broadcast_to(self._fill, extent)
        data = os.pread(self._fd, count, offset)
        if len(data) != count:
            raise OSError(f"tile {index} is truncated ({len(data)} of {count} bytes)")
        segment, _, _ = self._decode(data, index, jpegtables=self._page.jpegtables)
        tile = segment.reshape(self._tile)
        return tile[tuple(slice(0, n) for n in extent)]

    def __del__(self) -> None:
        try:
            os.close(self._fd)
            self._tif.close()
        except Exception:
            pass


def tiff_tile_reader(recipe: Any, shape: Sequence[int], chunks: Sequence[int]
                     ) -> Callable[[tuple[int, ...]], np.ndarray] | str:
    """A direct tile decoder for a TIFF recipe, or why there is none.

    Parameters
    ----------
    recipe : ArrayRecipe
        A ``"tiff"`` recipe (``key`` ``"series/level"``).
    shape, chunks : sequence of int
        The stored array's shape and storage chunks (from the table).

    Returns
    -------
    callable or str
        ``reader(chunk index) -> ndarray`` (read-only tiles, trimmed at the
        edges), or the reason the zarr path is kept (remote file, several
        pages per level, strips, planar samples, chunks that are not tiles).
    """
    import tifffile

    location = recipe.location
    if not isinstance(location, str) or protocol_of(location) != "file":
        return "not a local file"
    if not os.path.isfile(location):
        return "file not found"
    try:
        series_idx, level_idx = (int(p) for p in str(recipe.key).split("/"))
    except ValueError:
        return f"key {recipe.key!r}"
    tif = tifffile.TiffFile(location)
    try:
        level = tif.series[series_idx].levels[level_idx]
        page = level.pages[0] if len(level.pages) == 1 else None
        why = _unsupported(page, level, tuple(shape), tuple(chunks))
        if why is None:
            return _TileReader(tif, page, tuple(int(s) for s in shape))
    except Exception as exc:  # anything unusual: the zarr path reports it
        why = f"{type(exc).__name__}: {exc}"
    tif.close()
    return why


def _unsupported(page: Any, level: Any, shape: tuple[int, ...], chunks: tuple[int, ...]
                 ) -> str | None:
    if page is None or not hasattr(page, "decode"):
        return "several pages per level"
    if not page.is_tiled or page.imagedepth != 1:
        return "not a 2-D tiled page"
    if page.samplesperpixel > 1 and page.planarconfig != 1:
        return "planar samples"
    if tuple(level.shape) != shape:
        return f"level shape {level.shape} is not the stored {shape}"
    tile = (page.tilelength, page.tilewidth) + ((page.samplesperpixel,) if len(shape) == 3 else ())
    if len(shape) == 3 and shape[2] != page.samplesperpixel or len(shape) not in (2, 3):
        return f"dims {shape} are not (y, x[, samples])"
    if chunks != tile:
        return f"chunks {chunks} are not the tiles {tile}"
    return None
