"""How the zarrdataset-compatible layer hands sources and ``data_group`` to the readers.

zarrdataset takes a ``data_group`` that is a string (a zarr path, a TIFF
``"level"`` or ``"series/level"``), an int (a TIFF level) or None, and ignores
it when the source is already one array (an in-memory ``zarr.Array`` or
numpy array, which its dataset specs often carry along with
``data_group="0"``). These helpers apply those two rules before
:mod:`zarrdask.io` opens anything.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import zarr

from ..errors import DataGroupTypeError
from ..io.image2array import image2array as _io_image2array

__all__ = ["check_data_group", "single_array", "effective_data_group", "image2array"]


def _describe(source: Any) -> str:
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    return f"<in-memory {type(source).__name__}>"


def check_data_group(data_group: Any, source: Any) -> None:
    """Raise :class:`~zarrdask.errors.DataGroupTypeError` unless ``data_group``
    is a str, an int or None (zarrdataset's accepted types)."""
    if data_group is None or isinstance(data_group, str):
        return
    if isinstance(data_group, int | np.integer) and not isinstance(data_group, bool):
        return
    raise DataGroupTypeError(
        f"data_group={data_group!r} for {_describe(source)} is a {type(data_group).__name__}; "
        "pass a string (a zarr path such as '0' or 'labels/0', a TIFF 'level' or "
        "'series/level'), an int (a TIFF level) or None"
    )


def single_array(source: Any) -> bool:
    """Whether ``source`` is already one in-memory array (no groups inside)."""
    import dask.array as dsa
    import xarray as xr

    return isinstance(source, zarr.Array | np.ndarray | dsa.Array | xr.DataArray)


def effective_data_group(source: Any, data_group: Any, *, what: str) -> Any:
    """The ``data_group`` to open ``source`` with.

    A ``data_group`` given for a source that is already one array is ignored
    with a :class:`UserWarning`, as zarrdataset ignores it; an empty string
    means None.

    Parameters
    ----------
    source : object
        Path, URL or in-memory object.
    data_group : str, int or None
        As given by the user.
    what : str
        Who passes it (e.g. ``"modality 'images'"``), for messages.

    Raises
    ------
    zarrdask.errors.DataGroupTypeError
        For a ``data_group`` that is not a str, an int or None.
    """
    check_data_group(data_group, source)
    if isinstance(data_group, str) and not data_group:
        return None
    if data_group is not None and single_array(source):
        warnings.warn(
            f"{what}: data_group={data_group!r} is ignored because the source "
            f"({_describe(source)}) is already one array; drop data_group to silence this",
            UserWarning, stacklevel=3)
        return None
    return data_group


def image2array(arr_src: str | os.PathLike | zarr.Group | zarr.Array | np.ndarray,
                data_group: str | int | None = None,
                zarr_store: Any = None) -> tuple[Any, Any]:
    """Open an image as an array (zarrdataset's ``image2array``).

    :func:`zarrdask.io.image2array.image2array` (see there for the
    parameters) after checking that ``data_group`` is a str, an int or None;
    as in zarrdataset, a numpy array (given, or a decoded Pillow image) comes
    back as an in-memory ``zarr.Array`` of one chunk, so every result has
    ``.chunks``.

    Returns
    -------
    arr : zarr.Array
        The image.
    store : tifffile.ZarrTiffStore or None
        The connection to keep while ``arr`` is in use (TIFF), else None.

    Raises
    ------
    zarrdask.errors.DataGroupTypeError
        For a ``data_group`` of another type (e.g. a dict).
    zarrdask.errors.SourceNotFoundError, UnsupportedFormatError, DataGroupError
        As :func:`zarrdask.open_image` for the same source.
    """
    check_data_group(data_group, arr_src)
    arr, store = _io_image2array(arr_src, data_group=data_group, zarr_store=zarr_store)
    if isinstance(arr, np.ndarray):
        arr = zarr.array(arr, chunks=arr.shape or None)
    return arr, store
