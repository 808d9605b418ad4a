"""Where a mask or a label array lies in its image's physical space.

The read side of alignment: pixel sizes, origins and physical extents of a
``DataArray`` (read from its coordinates, as :func:`zarrdask.open_image`
writes them: pixel ``i`` covers ``[coord[i], coord[i] + pixel_size)``), and
the one rule that places masks and labels alike:

* an array with coordinates in the image's units is placed by them, and
  must overlap the image;
* an array without them (numpy, dask and zarr arrays, files without spatial
  metadata, a ``DataArray`` without coordinates or in other units) **spans
  the image's whole stored array**: its pixel size along each dim is the
  image's physical extent divided by the array's length, whatever its
  resolution, provided its ``y``/``x`` aspect ratio is the image's (within
  one array pixel of rounding).

:func:`zarrdask.masks.as_mask` builds mask DataArrays with this rule;
:func:`stored_placement` gives it to arrays read at their own resolution
(labels recorded in a coordinate table by :func:`zarrdask.build_table`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from ..axes import SPATIAL_DIMS
from ..errors import MaskError
from ..io.recipe import open_facts, recipe_of

__all__ = [
    "spatial_dims",
    "describe",
    "pixel_size",
    "physical_box",
    "spans_image",
    "check_span_aspect",
    "stored_placement",
]

#: Relative tolerance on ratios read back from float coordinates.
_RTOL = 1e-6


# -- geometry of a DataArray -------------------------------------------------------

def spatial_dims(arr: xr.DataArray) -> tuple[str, ...]:
    """Spatial dims of ``arr`` (``z``, ``y``, ``x``) in its own order."""
    return tuple(str(d) for d in arr.dims if d in SPATIAL_DIMS)


def describe(arr: Any) -> str:
    """A name for ``arr`` in messages: its source when it has one."""
    if isinstance(arr, xr.DataArray):
        source = arr.attrs.get("source")
        if source:
            return str(source)
        return f"<DataArray {arr.name or ''} dims {tuple(map(str, arr.dims))}>".replace("  ", " ")
    if isinstance(arr, str | os.PathLike):
        return os.fspath(arr)
    return f"<in-memory {type(arr).__name__}>"


def pixel_size(arr: xr.DataArray, dim: str) -> float:
    """Physical size of one pixel of ``arr`` along ``dim``.

    Read from the coordinates when there are two or more (their spacing),
    otherwise from the coordinate's ``scale`` attribute, then from
    ``arr.attrs["scale"]``; 1.0 when the array has no geometry at all.
    """
    if dim in arr.coords:
        coord = arr.coords[dim]
        if coord.size >= 2:
            values = np.asarray(coord.values, dtype=float)
            return float((values[-1] - values[0]) / (values.size - 1))
        if "scale" in coord.attrs:
            return float(coord.attrs["scale"])
    scale = arr.attrs.get("scale")
    if isinstance(scale, Mapping) and dim in scale:
        return float(scale[dim])
    return 1.0


def _first_coord(arr: xr.DataArray, dim: str) -> float:
    if dim in arr.coords and arr.coords[dim].size:
        return float(arr.coords[dim].values[0])
    return 0.0


def _units(arr: xr.DataArray, dim: str) -> str | None:
    if dim in arr.coords and "units" in arr.coords[dim].attrs:
        return str(arr.coords[dim].attrs["units"])
    units = arr.attrs.get("units")
    if isinstance(units, Mapping) and dim in units:
        return str(units[dim])
    return None


def physical_box(arr: xr.DataArray, dim: str, *, whole: bool = False) -> tuple[float, float]:
    """Physical interval ``[start, stop)`` that ``arr`` covers along ``dim``.

    Parameters
    ----------
    arr : xarray.DataArray
        An image or a mask.
    dim : str
        A spatial dim of ``arr``.
    whole : bool
        For an image opened with a ``roi`` (``roi`` and ``full_shape`` of
        :func:`zarrdask.io.open_facts`), the interval of the whole stored
        array instead of the region.

    Returns
    -------
    (float, float)
    """
    size = pixel_size(arr, dim)
    start = _first_coord(arr, dim)
    n = int(arr.sizes[dim])
    if whole:
        facts = open_facts(arr)
        roi = facts.get("roi")
        full = facts.get("full_shape")
        if isinstance(roi, Mapping) and isinstance(full, Mapping) and dim in full:
            lo, hi = roi.get(dim, [0, full[dim]])
            if hi - lo == n:  # the attrs still describe this array
                start = start - lo * size
                n = int(full[dim])
    return start, start + n * size


# -- the placement rule ---------------------------------------------------------


def spans_image(arr: xr.DataArray, like: xr.DataArray) -> bool:
    """Whether ``arr`` (a mask or labels) spans its image instead of being
    placed by its own coordinates.

    Coordinates place an array when every spatial dim has them and their
    units are not pixels of another array. An array without coordinates
    (numpy, dask, zarr, a ``DataArray`` without coords), opened from a file
    without spatial metadata (``units`` ``"pixel"``) or whose units differ
    from the image's spans the whole image instead.

    Parameters
    ----------
    arr : xarray.DataArray
        The mask or labels, with the image's spatial dim names.
    like : xarray.DataArray
        The image.

    Returns
    -------
    bool
    """
    dims = spatial_dims(arr)
    if not all(d in arr.coords for d in dims):
        return True
    for d in dims:
        unit, image_unit = _units(arr, d), _units(like, d)
        if recipe_of(arr, derived=True) is not None and unit in (None, "pixel"):
            return True  # a stored array without spatial metadata: pixel indices
        if unit is not None and image_unit is not None and unit != image_unit:
            return True
    return False


#: Dims whose pixels are expected square: an array that spans its image must
#: keep the image's aspect ratio in this plane (``z`` often has another
#: resolution than ``y``/``x`` and is not checked).
_PLANE = ("y", "x")


def check_span_aspect(lengths: Mapping[str, int], like: xr.DataArray,
                      box: Mapping[str, tuple[float, float]], *, what: str = "mask",
                      source: str = "") -> None:
    """Refuse an array that would span ``box`` with another aspect ratio
    than the image's in the ``y``/``x`` plane.

    An array that spans its image has ``length / image pixels`` array pixels
    per image pixel along each dim. Along ``y`` and ``x`` these must agree up
    to the rounding of the array's lengths (one array pixel): a labels array
    of shape ``(100, 300)`` for a ``1000 x 1000`` image, or a transposed
    array of a non-square image, would otherwise stretch over the image and
    give silently wrong values.

    Parameters
    ----------
    lengths : mapping of str to int
        The array's length along each spatial dim (the whole stored array).
    like : xarray.DataArray
        The image.
    box : mapping of str to (float, float)
        The physical interval the array spans along each dim.
    what, source : str
        ``"mask"`` or ``"labels"``, and the array's name, for the message.

    Raises
    ------
    MaskError
        When no single ratio fits both ``y`` and ``x`` within one array pixel.
    """
    plane = [d for d in _PLANE if d in lengths and d in box]
    if len(plane) < 2:
        return
    covered = {d: (box[d][1] - box[d][0]) / pixel_size(like, d) for d in plane}
    low = max((lengths[d] - 1) / covered[d] for d in plane)
    high = min((lengths[d] + 1) / covered[d] for d in plane)
    if low <= high * (1 + _RTOL):
        return
    ratios = ", ".join(f"{lengths[d] / covered[d]:.4g} along {d}" for d in plane)
    pixel = "label" if what == "labels" else what
    raise MaskError(
        f"the {what} {source} has no physical coordinates, so it must span the image "
        f"{describe(like)}, but its shape { {d: int(lengths[d]) for d in plane} } does not "
        f"have the aspect ratio of the image's { {d: round(covered[d]) for d in plane} } pixels "
        f"({pixel} pixels per image pixel: {ratios}); is it transposed, or the {what} of "
        f"another image? Pass {what}=... with the image's aspect ratio, or as a DataArray with "
        "coordinates in the image's units (or an OME-NGFF image with its scale) to place it "
        "explicitly"
    )


def stored_placement(arr: xr.DataArray, like: xr.DataArray, *, what: str = "labels",
                     source: str | None = None) -> dict[str, tuple[float, float]]:
    """Where the whole stored array of ``arr`` lies in the image's space.

    The rule of :func:`as_mask`, for arrays that are read at their own
    resolution (labels recorded in a coordinate table): an array that
    :func:`spans_image` covers the image's whole stored array (the full
    array for an image opened with a ``roi``; for labels opened with a
    ``roi``, their full stored array spans it); otherwise its coordinates
    place it, and it must overlap the image.

    Parameters
    ----------
    arr : xarray.DataArray
        Labels (or a mask) opened with :func:`zarrdask.open_image`, with the
        image's spatial dim names; may carry a ``roi``.
    like : xarray.DataArray
        The image.
    what : str
        Used in messages (``"labels"``).
    source : str, optional
        The array's name in messages; default its ``source`` attribute.

    Returns
    -------
    dict of str to (float, float)
        Per spatial dim of the image (but a length-1 one that ``arr`` lacks):
        the physical position of the top-left corner of stored pixel 0 and
        the physical pixel size.

    Raises
    ------
    MaskError
        When ``arr`` lacks a spatial dim of the image, does not overlap it,
        or spans it with another aspect ratio (:func:`check_span_aspect`).
    """
    source = describe(arr) if source is None else source
    # a single plane of the image (z of length 1) may be left out: 2-D labels
    # of a one-plane stack
    sdims = [d for d in spatial_dims(like) if d in arr.dims or like.sizes[d] != 1]
    missing = [d for d in sdims if d not in arr.dims]
    if missing:
        raise MaskError(
            f"the {what} {source} has dims {tuple(map(str, arr.dims))} (shape "
            f"{tuple(arr.shape)}) without the spatial dims {missing} of the image "
            f"{describe(like)} (dims {tuple(map(str, like.dims))}); pass {what} over the "
            f"image's spatial dims {sdims} (name its axes with axes=...)"
        )
    boxes = {d: physical_box(arr, d, whole=True) for d in sdims}
    image_box = {d: physical_box(like, d, whole=True) for d in sdims}
    if spans_image(arr, like):
        lengths = {d: max(1, round((boxes[d][1] - boxes[d][0]) / pixel_size(arr, d)))
                   for d in sdims}
        check_span_aspect(lengths, like, image_box, what=what, source=source)
        return {d: (image_box[d][0], (image_box[d][1] - image_box[d][0]) / lengths[d])
                for d in sdims}
    _check_overlap(boxes, like, what=what, source=source)
    return {d: (boxes[d][0], pixel_size(arr, d)) for d in sdims}


def _check_overlap(boxes: Mapping[str, tuple[float, float]], like: xr.DataArray, *, what: str,
                   source: str) -> None:
    """Refuse a mask or labels placed by coordinates that miss the image."""
    for d, (mlo, mhi) in boxes.items():
        ilo, ihi = physical_box(like, d, whole=True)
        if mhi <= ilo or mlo >= ihi:
            raise MaskError(
                f"the {what} {source} covers [{mlo:g}, {mhi:g}) along {d} but the image "
                f"{describe(like)} covers [{ilo:g}, {ihi:g}) ({_units(like, d) or 'pixel'}); "
                f"they do not overlap: check the {what}'s coordinates and units, or drop its "
                "coordinates so that it spans the image"
            )
