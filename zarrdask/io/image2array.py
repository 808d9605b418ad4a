"""zarrdataset's ``image2array``: any source as a zarr-like array plus the
handle to keep.

It sits on the readers of :mod:`zarrdask.io` (:func:`~zarrdask.io.api.discover`
and :meth:`~zarrdask.io.recipe.ArrayRecipe.open`); it reads nothing itself.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import zarr

__all__ = ["image2array"]


def _zarr_of(opened: Any) -> Any:
    """The zarr array inside what a reader opened.

    The TIFF reader wraps the level's zarr array in an object that keeps the
    file open; the array it wraps reads on its own (tifffile's store reopens
    the file when needed), so the wrapper is not returned.
    """
    if isinstance(opened, zarr.Array):
        return opened
    inner = getattr(opened, "_array", None)
    if isinstance(inner, zarr.Array):
        return inner
    return opened


def image2array(
    arr_src: str | os.PathLike | zarr.Group | zarr.Array | np.ndarray,
    data_group: str | int | None = None,
    zarr_store: Any = None,
) -> tuple[Any, Any]:
    """Open an image as an array (zarrdataset's ``image2array``).

    Parameters
    ----------
    arr_src : str, path, zarr.Group, zarr.Array or numpy.ndarray
        Path or URL of a zarr store (v2 or v3, OME-NGFF or plain), a TIFF or
        a Pillow-readable file; or an open zarr group, zarr array or numpy
        array.
    data_group : str, int or None
        Which array inside the source: a zarr path (``"0"``,
        ``"labels/0"``, or a multiscale group, whose finest level is taken),
        or for a TIFF ``"level"`` / ``"series/level"``. Ignored for zarr and
        numpy arrays, as in zarrdataset.
    zarr_store : object, optional
        Accepted for compatibility with zarrdataset's signature and ignored:
        zarr 3 picks the store from the location itself (a local path opens
        a ``LocalStore``, a URL an ``FsspecStore``; pass credentials through
        :func:`zarrdask.open_image`'s ``storage_options`` for remote data).

    Returns
    -------
    arr : zarr.Array or numpy.ndarray
        The image: a ``zarr.Array`` for zarr sources and for TIFF levels
        (through tifffile's ``aszarr`` store), a ``numpy.ndarray`` for
        Pillow formats (decoded whole, keeping the bit depth) and the input
        itself for a numpy array.
    store : tifffile.ZarrTiffStore or None
        The connection to keep while ``arr`` is in use and to ``close()``
        afterwards: the ``ZarrTiffStore`` of a TIFF, else None (zarr arrays
        hold their own store; decoded images need none).

    Raises
    ------
    zarrdask.errors.SourceNotFoundError, UnsupportedFormatError, DataGroupError
        As :func:`zarrdask.open_image` for the same source.

    Notes
    -----
    Unlike zarrdataset 0.2, a zarr group without ``data_group`` opens the
    finest level of its OME-NGFF multiscales instead of failing, a TIFF
    ``data_group`` means ``"series/level"`` (not ``"page/level"``), and a
    numpy array (also a decoded Pillow image) is returned as numpy rather
    than copied into an in-memory zarr array.

    Examples
    --------
    >>> import numpy as np
    >>> data = np.zeros((4, 5), dtype=np.uint8)
    >>> arr, store = image2array(data)
    >>> arr is data, store
    (True, None)
    """
    del zarr_store  # zarr 3 chooses the store from the location
    if isinstance(arr_src, np.ndarray | zarr.Array):
        return arr_src, None

    from .api import discover

    src = discover(arr_src, data_group=data_group)
    level = src.levels[src.default]
    opened = level.array if level.array is not None else level.recipe.open()
    arr = _zarr_of(opened)
    store = None
    if src.reader == "tiff" and isinstance(arr, zarr.Array):
        store = arr.store
    return arr, store
