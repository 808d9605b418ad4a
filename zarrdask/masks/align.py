"""Mask and label alignment with their image: the one place where it happens.

Every mask in zarrdask is a boolean ``xarray.DataArray`` whose spatial dims
are named like its image's (``z``, ``y``, ``x``) and whose coordinates are in
the image's physical space: mask pixel ``i`` covers
``[coord[i], coord[i] + pixel_size)`` along each spatial dim (coordinates
mark the top-left corner of a pixel, as :func:`zarrdask.open_image` does).
How many mask pixels fall on one image pixel, and where the mask starts in
image pixels, are read from those coordinates by :func:`mask_scale_factors`
and :func:`mask_origin`; nothing else in zarrdask computes a ratio between a
mask and an image.

The alignment rule for masks and labels that come without physical
coordinates (numpy, dask and zarr arrays, files without spatial metadata,
the output of a callable): the array spans the whole image, so its pixel
size along each dim is the image's physical extent divided by the array's
length, whatever its resolution (1/16 of the image, 1/7.3 of it, or 3 times
finer), provided its ``y``/``x`` aspect ratio is the image's. The rule, and
the geometry it reads (pixel sizes, physical boxes), live in
:mod:`zarrdask.masks.placement`, shared with the labels that
:func:`zarrdask.build_table` records.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from ..axes import SPATIAL_DIMS, dims_from_axes
from ..errors import MaskError
from ..io.recipe import open_facts, recipe_of
from .placement import (
    _check_overlap,
    _first_coord,
    _units,
    check_span_aspect,
    describe,
    physical_box,
    pixel_size,
    spans_image,
    spatial_dims,
)

__all__ = [
    "as_mask",
    "mask_from_labels",
    "mask_scale_factors",
    "mask_scale_of",
    "mask_origin",
    "default_mask",
    "mask_is_empty",
]

#: Dask graph layers that only move or select stored values. An image whose
#: graph holds nothing else still shows its source's pixels, so the other
#: levels of its pyramid may stand in for it.
_VALUE_PRESERVING = ("zarrdask-", "getitem-", "rechunk-", "transpose-")


def _span_coords(dims: Sequence[str], shape: Sequence[int], box: Mapping[str, tuple[float, float]],
                 units: Mapping[str, str | None]) -> dict[str, xr.Variable]:
    coords = {}
    for d, n in zip(dims, shape, strict=True):
        start, stop = box[d]
        size = (stop - start) / n
        attrs = {"scale": size}
        if units.get(d) is not None:
            attrs["units"] = units[d]
        coords[d] = xr.Variable(d, start + np.arange(n, dtype=float) * size, attrs=attrs)
    return coords


def spanning_dataarray(data: Any, dims: Sequence[str], like: xr.DataArray,
                       box: Mapping[str, tuple[float, float]], *, name: str,
                       attrs: Mapping[str, Any] | None = None) -> xr.DataArray:
    """Wrap ``data`` (one axis per spatial dim, in ``dims`` order) as a
    DataArray whose pixels tile ``box`` evenly, in ``like``'s physical space.

    Each spatial coordinate gets attrs ``scale``, ``units`` and
    ``mask_scale`` (mask pixels per pixel of ``like``): per-dim facts live on
    the coordinates, so ``attrs`` stay writable by ``to_zarr``/``to_netcdf``.
    """
    units = {d: _units(like, d) for d in dims}
    coords = _span_coords(dims, data.shape, box, units)
    out = xr.DataArray(data, dims=tuple(dims), coords=coords, name=name, attrs=dict(attrs or {}))
    set_mask_scale(out, mask_scale_factors(out, like))
    return out


def set_mask_scale(mask: xr.DataArray, factors: Mapping[str, float]) -> xr.DataArray:
    """Store ``factors`` (mask pixels per image pixel, by dim) as the
    ``mask_scale`` attr of each spatial coordinate of ``mask`` (in place);
    returns ``mask``."""
    for d, factor in factors.items():
        mask.coords[d].attrs["mask_scale"] = float(factor)
    return mask


def mask_scale_of(mask: xr.DataArray) -> dict[str, float]:
    """``{dim: mask_scale}`` read from the coordinates of a mask made by
    :func:`as_mask`, :func:`zarrdask.tissue_mask` or :func:`default_mask`."""
    return {str(d): float(mask.coords[d].attrs["mask_scale"]) for d in mask.dims
            if d in mask.coords and "mask_scale" in mask.coords[d].attrs}


# -- pyramid of an image ---------------------------------------------------------

def is_pristine(arr: xr.DataArray) -> bool:
    """Whether ``arr`` still holds its source's stored values (only read,
    sliced, rechunked or transposed since :func:`zarrdask.open_image`)."""
    data = arr.data
    if not isinstance(data, da.Array):
        return False
    layers = data.__dask_graph__().layers
    return all(str(name).startswith(_VALUE_PRESERVING) for name in layers)


def pyramid_levels(arr: xr.DataArray) -> list[xr.DataArray]:
    """The resolution levels of the source of ``arr``, finest first.

    An image opened by :func:`zarrdask.open_image` from a multiscale source,
    and not modified since, brings back every level of its pyramid (reopened
    from its recipe, lazily: no pixel is read). Any other array is its own
    only level.
    """
    recipe = recipe_of(arr, derived=True)
    if recipe is None or int(arr.attrs.get("levels", 1) or 1) <= 1 or not is_pristine(arr):
        return [arr]
    from ..io import open_pyramid

    kwargs = dict(open_facts(arr, derived=True).get("open_kwargs") or {})
    source = recipe.location if recipe.location is not None else recipe.obj
    if source is None or (isinstance(source, str) and source.startswith("<")):
        return [arr]
    tree = open_pyramid(source, axes=kwargs.get("axes"), data_group=kwargs.get("data_group"),
                        storage_options=dict(recipe.storage_options or {}) or None)
    levels = tree_levels(tree)
    if tuple(levels[0].dims) != tuple(arr.dims):
        return [arr]
    return levels


def tree_levels(tree: xr.DataTree) -> list[xr.DataArray]:
    """The ``"image"`` variable of each level of a pyramid from
    :func:`zarrdask.open_pyramid`, finest first."""
    names = tree.attrs.get("levels") or list(tree.children)
    levels = []
    for name in names:
        node = tree[str(name)]
        if "image" in node.data_vars:
            levels.append(node["image"])
        elif len(node.data_vars) == 1:
            levels.append(next(iter(node.data_vars.values())))
    if not levels:
        raise MaskError(
            f"the pyramid {tree.attrs.get('source', tree.name)!r} has no level holding an "
            "'image' variable; pass a tree made by zarrdask.open_pyramid"
        )
    return levels


# -- inputs to DataArrays --------------------------------------------------------

def _call_mask_function(func: Callable, like: xr.DataArray) -> tuple[Any, xr.DataArray]:
    """Call ``func`` on the coarsest available level of ``like`` as numpy.

    Returns what it returned and the level it was given (whose physical box
    the result spans).
    """
    level = pyramid_levels(like)[-1]
    if getattr(func, "channels_last", False):
        # zarrdataset mask generators (MaskGenerator) take channels last (YXC).
        order = [d for d in level.dims if d in SPATIAL_DIMS] + [
            d for d in level.dims if d not in SPATIAL_DIMS]
        level = level.transpose(*order)
    data = np.asarray(level.data.compute() if isinstance(level.data, da.Array) else level.data)
    try:
        return func(data), level
    except Exception as exc:
        name = getattr(func, "__qualname__", type(func).__name__)
        raise MaskError(
            f"the mask function {name} failed on the level of {describe(like)} it was given "
            f"(dims {tuple(map(str, level.dims))}, shape {data.shape}): {exc}; the function must "
            "take a numpy array in those dims and return a mask of the image's spatial dims"
        ) from exc


def _lazy(data: Any) -> da.Array:
    if isinstance(data, da.Array):
        return data
    if isinstance(data, np.ndarray):
        return da.from_array(data, chunks=data.shape or ())
    return da.from_array(data, chunks="auto", asarray=True)


def _array_dims(shape: tuple[int, ...], like: xr.DataArray, axes: Any, what: str,
                source: str) -> tuple[tuple[str, ...], tuple[int, ...] | None]:
    """Dims of a mask array without names; squeezes leading length-1 axes."""
    sdims = spatial_dims(like)
    if axes is not None:
        return dims_from_axes(axes, len(shape), source=f"the {what} {source}"), None
    squeeze = []
    while len(shape) - len(squeeze) > len(sdims) and shape[len(squeeze)] == 1:
        squeeze.append(len(squeeze))
    # A mask of fewer dims fits an image whose leading spatial dims are single
    # planes (a 2-D mask of a Z=1 stack): it names the trailing spatial dims.
    lacking = sdims[: max(0, len(sdims) - len(shape))]
    if lacking and all(like.sizes[d] == 1 for d in lacking):
        return sdims[len(lacking):], None
    if len(shape) - len(squeeze) != len(sdims):
        raise MaskError(
            f"the {what} {source} has shape {tuple(shape)} ({len(shape)}-D) but the image "
            f"{describe(like)} has {len(sdims)} spatial dims {sdims} (image dims "
            f"{tuple(map(str, like.dims))}, shape {tuple(like.shape)}); pass a "
            f"{what} array with the {len(sdims)} dims {sdims}, or name its dims with axes=... "
            f"(e.g. axes={('C' + ''.join(sdims)).upper()!r}) so that extra dims are reduced "
            "with any()"
        )
    return sdims, tuple(squeeze) or None


def _prepare(mask: Any, like: xr.DataArray, axes: Any, what: str
             ) -> tuple[xr.DataArray, dict[str, tuple[float, float]] | None, str]:
    """Turn any accepted mask input into a DataArray with the image's spatial dims.

    Returns the DataArray (not yet boolean, non-spatial dims kept), the
    physical box it spans when it has no trustworthy coordinates of its own
    (None when its coordinates are used), and its name for messages.
    """
    if not isinstance(like, xr.DataArray):
        raise MaskError(
            f"like= must be the image as an xarray.DataArray (from zarrdask.open_image), not "
            f"{type(like).__name__}; open the image first"
        )
    sdims = spatial_dims(like)
    if not sdims:
        raise MaskError(
            f"the image {describe(like)} has no spatial dim (dims {tuple(map(str, like.dims))}); "
            "open it with axes=... naming its Y and X axes"
        )
    box_of_whole = {d: physical_box(like, d, whole=True) for d in sdims}
    source = describe(mask)
    span_box: dict[str, tuple[float, float]] | None = box_of_whole
    from .annotations import is_annotations, rasterize_annotations

    if is_annotations(mask):  # GeoJSON / shapely: a raster with physical coordinates
        arr = rasterize_annotations(mask, like=like, what="mask" if what == "mask" else "labels")
    elif isinstance(mask, str | os.PathLike):
        from ..io import open_image

        arr = open_image(mask, axes=axes)
        axes = None
    elif isinstance(mask, xr.DataArray):
        arr = mask
    elif callable(mask) and not hasattr(mask, "shape"):
        source = f"returned by {getattr(mask, '__qualname__', type(mask).__name__)}"
        result, level = _call_mask_function(mask, like)
        span_box = {d: physical_box(level, d) for d in sdims}
        if isinstance(result, xr.DataArray):
            arr = result
        else:
            result = np.asarray(result)
            dims, squeeze = _array_dims(result.shape, like, axes, what, source)
            if squeeze:
                result = result.squeeze(axis=squeeze)
            arr = xr.DataArray(_lazy(result), dims=dims)
    elif hasattr(mask, "shape") and hasattr(mask, "dtype"):
        dims, squeeze = _array_dims(tuple(int(s) for s in mask.shape), like, axes, what, source)
        data = _lazy(mask)
        if squeeze:
            data = data.squeeze(axis=squeeze)
        arr = xr.DataArray(data, dims=dims)
    else:
        raise MaskError(
            f"cannot use a {type(mask).__name__} as a {what} of {describe(like)}; pass a numpy, "
            "dask or zarr array, an xarray.DataArray, a path/URL or a callable"
        )
    if isinstance(mask, xr.DataArray) and axes is not None:
        arr = arr.rename(dict(zip(arr.dims, dims_from_axes(axes, arr.ndim, source=source),
                                  strict=True)))
    elif isinstance(arr, xr.DataArray):
        arr = arr.rename({d: str(d).lower() for d in arr.dims if str(d) != str(d).lower()})
    if not isinstance(arr.data, da.Array):
        arr = arr.copy(data=_lazy(arr.data))
    single = [d for d in sdims if d not in spatial_dims(arr) and like.sizes[d] == 1]
    if single:  # a 2-D mask of a single-plane stack
        arr = arr.expand_dims({d: 1 for d in single})
    mdims = spatial_dims(arr)
    if set(mdims) != set(sdims):
        raise MaskError(
            f"the {what} {source} has spatial dims {mdims} (dims {tuple(map(str, arr.dims))}, "
            f"shape {tuple(arr.shape)}) but the image {describe(like)} has {sdims} (shape "
            f"{tuple(like.shape)}); pass a {what} over exactly {sdims}, e.g. select or reduce "
            "the extra dims, or add a length-1 axis for a missing one"
        )
    if any(arr.sizes[d] == 0 for d in mdims):
        raise MaskError(
            f"the {what} {source} is empty (shape {tuple(arr.shape)}); pass a {what} with at "
            "least one pixel along each spatial dim"
        )
    if not spans_image(arr, like):
        span_box = None
    else:
        check_span_aspect({d: int(arr.sizes[d]) for d in sdims}, like, span_box, what=what,
                          source=source)
    return arr, span_box, source


def _finish(flags: xr.DataArray, span_box: Mapping[str, tuple[float, float]] | None,
            like: xr.DataArray, source: str, what: str) -> xr.DataArray:
    """Reduce non-spatial dims with any(), order the dims like the image and
    place the mask in the image's physical space."""
    sdims = spatial_dims(like)
    extra = [d for d in flags.dims if d not in SPATIAL_DIMS]
    if extra:
        flags = flags.any(dim=extra)
    flags = flags.transpose(*sdims)
    attrs = {"source": source}
    if span_box is not None:
        return spanning_dataarray(flags.data, sdims, like, span_box, name="mask", attrs=attrs)
    out = xr.DataArray(flags.data, dims=sdims, name="mask", attrs=attrs,
                       coords={d: flags.coords[d].variable for d in sdims})
    for d in sdims:
        out.coords[d].attrs.setdefault("scale", pixel_size(flags, d))
        unit = _units(flags, d) or _units(like, d)
        if unit is not None:
            out.coords[d].attrs.setdefault("units", unit)
    set_mask_scale(out, mask_scale_factors(out, like))
    _check_overlap({d: physical_box(out, d) for d in sdims}, like, what=what, source=source)
    return out


def _as_bool(arr: xr.DataArray) -> xr.DataArray:
    if arr.dtype == bool:
        return arr
    return arr != 0


# -- public API ----------------------------------------------------------------------

def as_mask(mask: Any, *, like: xr.DataArray, axes: str | Sequence[str] | None = None
            ) -> xr.DataArray:
    """Align a mask with an image: a boolean DataArray in the image's space.

    Parameters
    ----------
    mask : array, DataArray, path/URL or callable
        - numpy, dask or zarr array, one axis per spatial dim of the image
          in the image's order (leading length-1 axes are dropped); any
          resolution. Non-zero is True.
        - ``xarray.DataArray`` with the image's spatial dim names (any
          order). Physical coordinates, when it has them in the image's
          units, place it; otherwise it spans the image.
        - path or URL of a mask image, opened with
          :func:`zarrdask.open_image` (``axes`` applies). Its OME-NGFF
          coordinates place it when it has them.
        - callable: called once with a numpy array of the image's coarsest
          available level (its pyramid's last level when ``like`` was opened
          from a multiscale source, otherwise ``like`` itself, read whole),
          in the image's dim order, channels included (zarrdataset
          ``MaskGenerator`` objects get the channels last, ``YXC``). It
          returns a mask (array or DataArray), which spans that level.
    like : xarray.DataArray
        The image, from :func:`zarrdask.open_image`.
    axes : str or sequence of str, optional
        Names of the mask's dims (``"CYX"``...) when it is an array or file
        with more dims than the image has spatial dims; extra dims are
        reduced with ``any()``.

    Returns
    -------
    xarray.DataArray
        Lazy (dask) boolean mask with the image's spatial dims in the
        image's order, physical coordinates in the image's space (pixel
        ``i`` covers ``[coord[i], coord[i] + scale)``) and attrs ``scale``,
        ``units``, ``source`` and ``mask_scale`` (mask pixels per image
        pixel, per dim).

    Raises
    ------
    MaskError
        When the mask's spatial dims do not match the image's, when it is
        empty, when its coordinates do not overlap the image, or when a
        callable fails.

    Notes
    -----
    A mask without physical coordinates spans the *whole* stored image: for
    an image opened with a ``roi`` that is the full array, not the region.
    Non-spatial dims (channels) are reduced with ``any()``.
    """
    arr, span_box, source = _prepare(mask, like, axes, "mask")
    return _finish(_as_bool(arr), span_box, like, source, "mask")


def mask_from_labels(labels: Any, *, like: xr.DataArray, classes: Iterable[int] | None = None,
                     axes: str | Sequence[str] | None = None) -> xr.DataArray:
    """A mask from a label image: True where the label is > 0 (or in ``classes``).

    Parameters
    ----------
    labels : array, DataArray, path/URL or callable
        Integer labels, accepted in every form :func:`as_mask` accepts and
        aligned the same way.
    like : xarray.DataArray
        The image.
    classes : iterable of int, optional
        Label values that count as True; default: every label > 0.
    axes : str or sequence of str, optional
        Names of the labels' dims, as in :func:`as_mask`.

    Returns
    -------
    xarray.DataArray
        Boolean mask, as :func:`as_mask` returns it.

    Raises
    ------
    MaskError
        As :func:`as_mask`, and when ``classes`` is empty.
    """
    arr, span_box, source = _prepare(labels, like, axes, "labels")
    if classes is None:
        flags = arr > 0
    else:
        values = sorted({int(c) for c in classes})
        if not values:
            raise MaskError(
                f"classes=[] selects nothing in the labels {source}; pass the label values to "
                "keep, or classes=None for every label > 0"
            )
        flags = arr.copy(data=da.isin(arr.data, values))
    return _finish(flags, span_box, like, source, "labels")


def _shared_spatial_dims(mask: xr.DataArray, image: xr.DataArray) -> tuple[str, ...]:
    """The image's spatial dims, after checking that the mask has them all."""
    sdims = spatial_dims(image)
    missing = [d for d in sdims if d not in mask.dims]
    if missing:
        raise MaskError(
            f"the mask {describe(mask)} has dims {tuple(map(str, mask.dims))} but the image "
            f"{describe(image)} has spatial dims {sdims}; align the mask with "
            "zarrdask.masks.as_mask(mask, like=image) first"
        )
    return sdims


def mask_scale_factors(mask: xr.DataArray, image: xr.DataArray) -> dict[str, float]:
    """Mask pixels per image pixel along each spatial dim of the image.

    Computed from the physical pixel sizes (coordinate spacing) of both:
    ``image_pixel_size / mask_pixel_size``. A mask at 1/16 of the image gives
    0.0625, a mask 2x finer gives 2.0.

    Parameters
    ----------
    mask : xarray.DataArray
        A mask from :func:`as_mask`, :func:`mask_from_labels` or
        :func:`zarrdask.masks.tissue_mask`.
    image : xarray.DataArray
        The image.

    Returns
    -------
    dict of str to float

    Raises
    ------
    MaskError
        When the mask lacks a spatial dim of the image.
    """
    sdims = _shared_spatial_dims(mask, image)
    return {d: pixel_size(image, d) / pixel_size(mask, d) for d in sdims}


def mask_origin(mask: xr.DataArray, image: xr.DataArray) -> dict[str, float]:
    """Image-pixel position of the top-left corner of mask pixel 0, per dim.

    0 when the mask starts where the image starts; positive when it covers a
    sub-region further in; negative when it starts before (e.g. a mask of
    the whole image against an image opened with a ``roi``).

    Parameters
    ----------
    mask, image : xarray.DataArray
        As in :func:`mask_scale_factors`.

    Returns
    -------
    dict of str to float
    """
    sdims = _shared_spatial_dims(mask, image)
    return {d: (_first_coord(mask, d) - _first_coord(image, d)) / pixel_size(image, d)
            for d in sdims}


def default_mask(like: xr.DataArray) -> xr.DataArray:
    """An all-True mask covering the whole image, one pixel per image chunk.

    Parameters
    ----------
    like : xarray.DataArray
        The image.

    Returns
    -------
    xarray.DataArray
        Lazy boolean mask (all True) with the image's spatial dims, spanning
        the image's whole physical extent (see :func:`as_mask`).
    """
    if not isinstance(like, xr.DataArray):
        raise MaskError(f"like= must be an xarray.DataArray image, not {type(like).__name__}")
    sdims = spatial_dims(like)
    storage = open_facts(like, derived=True).get("storage_chunks") or {}
    box = {d: physical_box(like, d, whole=True) for d in sdims}
    shape = []
    for d in sdims:
        lo, hi = box[d]
        n_pixels = max(1, round((hi - lo) / pixel_size(like, d)))
        if d in storage:
            chunk = int(storage[d])
        elif isinstance(like.data, da.Array):
            chunk = int(like.data.chunksize[like.dims.index(d)])
        else:
            chunk = n_pixels
        shape.append(max(1, math.ceil(n_pixels / max(1, chunk))))
    data = da.ones(tuple(shape), dtype=bool, chunks=tuple(shape))
    return spanning_dataarray(data, sdims, like, box, name="mask",
                              attrs={"source": f"default mask of {describe(like)}"})


def mask_is_empty(mask: Any) -> bool:
    """Whether a mask selects nothing (no True pixel). Computes the mask.

    Parameters
    ----------
    mask : xarray.DataArray, dask or numpy array

    Returns
    -------
    bool
    """
    data = mask.data if isinstance(mask, xr.DataArray) else mask
    if isinstance(data, da.Array):
        return not bool(data.any().compute())
    return not bool(np.any(np.asarray(data)))
