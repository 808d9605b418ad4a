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
from ..io.recipe import open_facts
from .geometry import GridSpec
from .sources import item_name

__all__ = ["is_physical", "physical_to_pixels", "parse_length", "check_same_pixels",
           "check_mask_mpp", "mask_scale_for", "mask_mpp_of", "jsonable"]

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


def check_mask_mpp(mask_mpp: Any, tissue_options: Mapping[str, Any] | None) -> float:
    if isinstance(mask_mpp, bool) or not isinstance(mask_mpp, int | float) or not (
            np.isfinite(mask_mpp) and mask_mpp > 0):
        raise GridParameterError(f"mask_mpp={mask_mpp!r}: pass a positive number of "
                                 "micrometres per mask pixel, e.g. mask_mpp=8")
    if "mask_scale" in (tissue_options or {}):
        raise GridParameterError(
            "mask_mpp and tissue_options['mask_scale'] both given; pass one (mask_mpp sets "
            "each image's mask_scale from its resolution)")
    return float(mask_mpp)


def mask_scale_for(image: xr.DataArray, mask_mpp: float, index: int, item: Any
                    ) -> dict[str, float]:
    """``mask_scale`` (mask pixels per level-0 pixel) giving ``mask_mpp`` µm per mask pixel."""
    facts = open_facts(image)
    scale0 = (facts.get("level0") or {}).get("scale") or {}
    units = facts.get("units") or {}
    out = {}
    for d in ("y", "x"):
        if d not in scale0:
            continue
        um = micrometers(scale0[d], units.get(d, "pixel"))
        if um is None:
            raise GridParameterError(
                f"mask_mpp={mask_mpp} for image {index} ({item_name(item)}), which states no "
                "physical pixel size; pass tissue_options={'mask_scale': ...} instead")
        if um > mask_mpp:
            raise GridParameterError(
                f"mask_mpp={mask_mpp} is finer than level 0 of image {index} "
                f"({item_name(item)}, {um:.4g} µm/px); pass mask_mpp >= {um:.4g}")
        out[d] = um / mask_mpp
    return out


def mask_mpp_of(mask: xr.DataArray) -> float | None:
    """µm per pixel of a mask along x (from its coordinates), or None."""
    coord = mask.coords.get("x")
    if coord is None:
        return None
    return micrometers(coord.attrs.get("scale", 1.0), coord.attrs.get("units", "pixel"))


def jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    return value


def check_same_pixels(specs: Sequence[GridSpec], opened: Sequence[tuple[int, Any, Any]]
                       ) -> None:
    """Lengths in µm must give every image the same patch in pixels: one
    table has one patch shape (a batch stacks patches)."""
    shapes = {}
    for spec, (index, item, image) in zip(specs, opened, strict=True):
        key = (tuple(sorted(spec.patch.items())), tuple(sorted(spec.stride.items())),
               tuple(sorted(spec.pad.items())))
        mpp = open_facts(image).get("mpp")
        shapes.setdefault(key, []).append(
            f"image {index} ({item_name(item)}): level {image.attrs.get('level', 0)}, "
            f"{mpp if mpp is None else round(mpp, 4)} µm/px, patch {spec.patch}")
    if len(shapes) > 1:
        listing = "; ".join(line for lines in shapes.values() for line in lines[:3])
        raise GridParameterError(
            "the physical patch geometry gives the images different patch sizes in pixels "
            f"({listing}), and one table holds one patch shape; pass mpp= so that every "
            "image is read at the same resolution (a level within 10 % counts as it), or "
            "build one table per resolution"
        )
