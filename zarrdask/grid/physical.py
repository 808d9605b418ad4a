"""Patch sizes in micrometres (``"128um"``) turned into pixels of the level read.

A patch geometry parameter (``patch_size``, ``stride``, ``pad``) may hold
physical lengths: a string ``"128um"`` (also ``"128 µm"``, ``"0.128mm"``,
``"500nm"``) for every spatial axis, or such strings inside a sequence or a
``{axis: value}`` dict, mixed with pixel ints. Each length becomes
``round(length / pixel size)`` pixels of the level that is read, the pixel
size being the image's coordinate ``scale`` in µm — or, when ``mpp=`` chose a
level within :data:`~zarrdask.io.level_select.MPP_TOLERANCE` of the asked
value, the asked ``mpp`` itself (a 0.2527 µm/px scan asked at ``mpp=0.25``
gives the 512-pixel patches of a 0.25 µm/px scan for ``"128um"``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from ..errors import GridParameterError
from ..io.level_select import MPP_TOLERANCE, micrometers

__all__ = ["is_physical", "physical_to_pixels", "parse_length"]

_LENGTH = re.compile(
    r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(um|µm|μm|microns?|micrometers?|micrometres?|mm|nm)\s*$",
    re.IGNORECASE)
_UNIT_TO_UM = {"mm": 1e3, "nm": 1e-3}


def parse_length(value: Any) -> float | None:
    """A physical length string in micrometres (``"128um"`` → 128.0), else None."""
    if not isinstance(value, str):
        return None
    match = _LENGTH.match(value)
    if not match:
        return None
    return float(match.group(1)) * _UNIT_TO_UM.get(match.group(2).lower(), 1.0)


def _entries(value: Any) -> list[Any]:
    if isinstance(value, Mapping):
        return list(value.values())
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence | np.ndarray):
        return list(value)
    return [value]


def is_physical(*values: Any) -> bool:
    """Whether any of the geometry parameters holds a physical length."""
    return any(parse_length(v) is not None for value in values if value is not None
               for v in _entries(value))


def _pixel_size(image: xr.DataArray, dim: str, mpp: float | None, name: str,
                what: str) -> float:
    coord = image.coords.get(dim)
    attrs = coord.attrs if coord is not None else {}
    um = micrometers(attrs.get("scale", 1.0), attrs.get("units", "pixel"))
    if um is None:
        raise GridParameterError(
            f"{name} is given in micrometres, but {what} states no physical pixel size "
            f"along {dim!r} (units {attrs.get('units', 'pixel')!r}); pass {name} in pixels, "
            "or write the pixel size into the file (OME PhysicalSizeX, TIFF resolution tags)"
        )
    if mpp is not None and dim in ("y", "x") and abs(um - mpp) <= mpp * MPP_TOLERANCE:
        return float(mpp)
    return um


def _convert(length_um: float, image: xr.DataArray, dim: str, mpp: float | None, name: str,
             what: str) -> int:
    pixels = int(round(length_um / _pixel_size(image, dim, mpp, name, what)))
    return pixels


def physical_to_pixels(value: Any, name: str, *, image: xr.DataArray, spatial_axes: str,
                       mpp: float | None, what: str) -> Any:
    """``value`` with every physical length replaced by pixels of ``image``.

    Parameters
    ----------
    value : int, str, sequence or mapping
        A ``patch_size``/``stride``/``pad`` as :func:`build_table` takes it.
    name : str
        The parameter's name, for messages.
    image : xarray.DataArray
        The image at the level that is read.
    spatial_axes : str
        Axis letters a sequence is ordered by.
    mpp : float, optional
        The resolution asked with ``mpp=``.
    what : str
        The image's name, for messages.

    Returns
    -------
    Same kind as ``value`` with ints in place of lengths (a lone string
    becomes a dict over the image's spatial axes).

    Raises
    ------
    GridParameterError
        A length on an image without a physical scale.
    """
    if value is None:
        return None
    axes = [a.lower() for a in spatial_axes]
    dims = [str(d) for d in image.dims]

    def one(v: Any, dim: str) -> Any:
        length = parse_length(v)
        if length is None:
            return v
        if dim not in dims:
            return 1  # an axis the image lacks: patch 1 there
        return _convert(length, image, dim, mpp, name, what)

    if isinstance(value, Mapping):
        return {k: one(v, str(k).lower()) for k, v in value.items()}
    if isinstance(value, str):
        if parse_length(value) is None:
            return value  # left to the pixel checks, which name the fix
        return {a: one(value, a) for a in axes if a in dims}
    if isinstance(value, Sequence | np.ndarray):
        items = list(value)
        if len(items) != len(axes):
            return value  # the pixel checks report the length mismatch
        return [one(v, a) for v, a in zip(items, axes, strict=True)]
    return value
