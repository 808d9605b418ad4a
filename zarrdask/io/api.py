"""``open_image`` and ``open_pyramid``: any source as a labelled dask array."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from ..axes import SPATIAL_DIMS, dims_from_axes
from ..errors import (
    AxesError,
    DataGroupError,
    OptionError,
    SourceNotFoundError,
    UnsupportedFormatError,
)
from ..roi import roi_to_selection
from .level_select import level_magnification, level_mpp, parse_magnification, select_level
from .levels import Level, SourceLevels
from .location import check_storage_options, get_filesystem, protocol_of, remote_error
from .openslide_reader import OPENSLIDE_EXTENSIONS, discover_openslide
from .pil_reader import discover_pil, pil_extensions
from .recipe import ArrayRecipe, LazyArray, open_facts, remember_opened
from .tiff_reader import TIFF_EXTENSIONS, discover_tiff, is_tiff_magic
from .zarr_reader import discover_zarr, looks_like_zarr

__all__ = ["open_image", "open_pyramid", "discover"]

Source = Any  # str | os.PathLike | numpy/dask/zarr/xarray object


def _memory_levels(obj: Any) -> SourceLevels:
    shape = tuple(int(s) for s in obj.shape)
    chunks = None
    if isinstance(obj, da.Array):
        chunks = tuple(int(c[0]) for c in obj.chunks)
    level = Level(name="", recipe=ArrayRecipe("memory", None, None, {}, obj), shape=shape,
                  dtype=np.dtype(obj.dtype), chunks=chunks)
    return SourceLevels("memory", f"<in-memory {type(obj).__name__}>", [level])


def _head(location: str, storage_options: Mapping[str, Any] | None) -> bytes:
    """The first 8 bytes of a file; a URL's failures as zarrdask errors."""
    if protocol_of(location) == "file":
        with open(location, "rb") as fh:
            return fh.read(8)
    try:
        fs, path = get_filesystem(location, storage_options)
        with fs.open(path, "rb") as fh:
            return fh.read(8)
    except Exception as exc:
        raise remote_error(location, storage_options, exc) from exc


_READERS = (None, "auto", "openslide")


def discover(source: Source, *, data_group: str | int | None = None,
             storage_options: Mapping[str, Any] | None = None,
             reader: str | None = None) -> SourceLevels:
    """Find the reader and the resolution levels of ``source``.

    Parameters
    ----------
    source : path, URL, numpy/dask/zarr array, zarr group or store
        The image.
    data_group : str or int, optional
        Which image inside the source (zarr path, TIFF ``"series/level"``).
    storage_options : mapping, optional
        fsspec options for URLs.
    reader : {None, "auto", "openslide"}, optional
        ``"openslide"`` reads a slide file with OpenSlide even when another
        reader could; by default the format decides (MRXS, VMS, VMU and
        SVSLIDE go to OpenSlide).

    Returns
    -------
    SourceLevels
    """
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if reader not in _READERS:
        raise OptionError(f"reader={reader!r} is unknown; pass None (the format decides) or "
                          "'openslide'")
    storage_options = check_storage_options(storage_options, source=source)
    if isinstance(source, zarr.Array | zarr.Group) or _is_zarr_store(source):
        return discover_zarr(source, data_group=data_group, storage_options=storage_options)
    if isinstance(source, np.ndarray | da.Array):
        return _memory_levels(source)
    if not isinstance(source, str):
        if hasattr(source, "shape") and hasattr(source, "dtype") and hasattr(source, "__getitem__"):
            return _memory_levels(source)
        raise UnsupportedFormatError(
            f"cannot open a {type(source).__name__} as an image; pass a path/URL, a numpy, "
            "dask or zarr array, a zarr group, or an xarray.DataArray"
        )
    location = source
    lower = location.lower().rstrip("/")
    remote = protocol_of(location) != "file"
    if not remote and not os.path.exists(location):
        raise SourceNotFoundError(
            f"{location} does not exist (working directory {os.getcwd()}); check the path"
        )
    if reader == "openslide" or lower.endswith(OPENSLIDE_EXTENSIONS):
        return discover_openslide(location, data_group=data_group,
                                  storage_options=storage_options)
    if looks_like_zarr(location, storage_options):  # also any name ending in .zarr
        return discover_zarr(location, data_group=data_group, storage_options=storage_options)
    if not remote and os.path.isdir(location):
        raise UnsupportedFormatError(
            f"{location} is a folder without zarr metadata (no zarr.json, .zgroup or .zarray); "
            "point to a zarr store or an image file"
        )
    ext = os.path.splitext(lower)[1]
    if remote and lower.endswith(TIFF_EXTENSIONS):
        return discover_tiff(location, data_group=data_group, storage_options=storage_options)
    # The first bytes decide (for a local file, whatever its extension says).
    head = _head(location, storage_options)
    if is_tiff_magic(head):
        return discover_tiff(location, data_group=data_group, storage_options=storage_options)
    if not remote:
        if not head:
            raise UnsupportedFormatError(
                f"{location} is empty (0 bytes); the file was not written completely, "
                "write or copy it again"
            )
        if lower.endswith(TIFF_EXTENSIONS):
            raise UnsupportedFormatError(
                f"{location} has a TIFF extension but does not start with a TIFF header "
                f"(first bytes {head[:4]!r}); it is not a TIFF or is damaged: check the file, "
                "or rename it after its real format"
            )
    if ext and ext not in pil_extensions():
        raise UnsupportedFormatError(
            f"{location}: the extension {ext!r} is not zarr, TIFF or a format Pillow reads; "
            "convert the image (e.g. to OME-Zarr or TIFF)"
        )
    return discover_pil(location, data_group=data_group, storage_options=storage_options)


def _is_zarr_store(obj: Any) -> bool:
    return isinstance(obj, zarr.abc.store.Store)


def _resolve_dims(level: Level, axes: str | Sequence[str] | None, display: str) -> tuple[str, ...]:
    ndim = len(level.shape)
    stored = None
    if level.dims is not None:
        if len(level.dims) != ndim:
            raise AxesError(
                f"the metadata of {display} names {len(level.dims)} axes "
                f"({''.join(level.dims).upper()}) but its array has {ndim} dims "
                f"(shape {tuple(level.shape)}); pass axes=... with one letter per dim"
            )
        stored = dims_from_axes(level.dims, ndim, source=display)
    if axes is not None:
        given = len(axes.strip()) if isinstance(axes, str) else len(axes)
        if stored is not None and given != ndim:
            raise AxesError(
                f"axes={axes!r} has {given} letters but {display} has {ndim} dims, "
                f"declared {''.join(stored).upper()!r} in its metadata; pass "
                f"axes={''.join(stored).upper()!r} or leave axes out"
            )
        dims = dims_from_axes(axes, ndim, source=display)
        if stored is not None and dims != stored and sorted(dims) == sorted(stored):
            # Same names in another order: the caller described a wanted
            # order, not the stored one; honouring it would mislabel the data.
            raise AxesError(
                f"axes={axes!r} reorders the axes that {display} declares in its metadata "
                f"({''.join(stored).upper()}); axes= names the stored order, it does not "
                f"transpose: pass axes={''.join(stored).upper()!r} (or leave it out) and "
                "transpose the result"
            )
        return dims
    if stored is not None:
        return stored
    if ndim == 2:
        return ("y", "x")
    example = "YXC" if ndim == 3 else "TCZYX"[-ndim:] if ndim <= 5 else None
    raise AxesError(
        f"{display} has {ndim} dims (shape {tuple(level.shape)}) and no axis names in its "
        f"metadata; pass axes=... with one letter per dim"
        + (f", e.g. axes={example!r}" if example else "")
    )


def _coords(level: Level, dims: tuple[str, ...]) -> dict[str, Any]:
    coords = {}
    for i, d in enumerate(dims):
        if d in SPATIAL_DIMS:
            scale = level.scale.get(d, 1.0)
            origin = level.translation.get(d, 0.0)
            values = origin + np.arange(level.shape[i], dtype=float) * scale
            coords[d] = xr.Variable(
                d, values, attrs={"units": level.units.get(d, "pixel"), "scale": scale}
            )
    return coords


def _check_chunks(chunks: Any, dims: tuple[str, ...], shape: tuple[int, ...], dtype: Any,
                  display: str, storage: tuple[int, ...] | None = None) -> Any:
    """``chunks`` normalised by dask (a dict by dim name keeps the storage
    chunks on the dims it leaves out), or an :class:`OptionError` naming what
    to pass."""
    if chunks is None:
        return None
    fix = ("pass an int, 'auto', a byte size such as '64MiB', a tuple with one entry per "
           f"dim {dims}, or a dict by dim name such as {{'y': 512, 'x': 512}}")
    given = chunks
    if isinstance(chunks, Mapping):
        unknown = [k for k in chunks if k not in dims and not (
            isinstance(k, int) and not isinstance(k, bool) and 0 <= k < len(dims))]
        if unknown:
            raise OptionError(
                f"chunks={given!r} for {display} names {unknown!r}, which are not dims of "
                f"the image {dims}; {fix}"
            )
        given_axes = {dims.index(k) if isinstance(k, str) else k: v for k, v in chunks.items()}
        chunks = tuple(given_axes.get(i, storage[i] if storage else -1) for i in range(len(dims)))
    if isinstance(chunks, bool):
        raise OptionError(f"chunks={given!r} for {display}; {fix}")
    try:
        return da.core.normalize_chunks(chunks, shape, dtype=np.dtype(dtype))
    except Exception as exc:  # dask raises ValueError, TypeError, ZeroDivisionError...
        raise OptionError(
            f"chunks={given!r} for {display} (dims {dims}, shape {tuple(shape)}) cannot be "
            f"used: {exc}; {fix}"
        ) from exc


def _as_dask(level: Level, name: str, chunks: Any) -> da.Array:
    obj = level.recipe.obj
    if isinstance(obj, da.Array):
        return obj if chunks is None else obj.rechunk(chunks)
    if isinstance(obj, np.ndarray):
        return da.from_array(obj, chunks=chunks or "auto", name=name)
    lazy = LazyArray(level.recipe, level.shape, level.dtype, level.chunks)
    if level.array is not None:
        lazy.attach(level.array)  # reuse the handle opened while probing
    return da.from_array(
        lazy,
        chunks=chunks or level.chunks or "auto",
        name=name,
        lock=False,
        asarray=False,
        inline_array=True,
        meta=np.empty((0,) * len(level.shape), dtype=level.dtype),
    )


def _level0_geometry(src: SourceLevels, dims: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Physical pixel size and origin of level 0 on each spatial dim."""
    base = src.levels[0]
    spatial = [d for d in dims if d in SPATIAL_DIMS]
    return {
        "scale": {d: float(base.scale.get(d, 1.0)) for d in spatial},
        "origin": {d: float(base.translation.get(d, 0.0)) for d in spatial},
    }


def _level_dataarray(src: SourceLevels, index: int, *, axes, roi, chunks, open_kwargs: dict
                     ) -> xr.DataArray:
    level = src.levels[index]
    dims = _resolve_dims(level, axes, src.display)
    name = f"zarrdask-{level.recipe.token()}-{index}-{chunks}"
    chunks = _check_chunks(chunks, dims, level.shape, level.dtype, src.display, level.chunks)
    data = _as_dask(level, name, chunks)
    spatial = [d for d in dims if d in SPATIAL_DIMS]
    attrs: dict[str, Any] = {"source": src.display, "reader": src.reader}
    if level.name:
        attrs["data_group"] = level.name
    attrs.update({"level": index, "levels": len(src.levels)})
    if src.objective_power:
        attrs["objective_power"] = float(src.objective_power)
    arr = xr.DataArray(data, dims=dims, coords=_coords(level, dims), name="image", attrs=attrs)
    facts: dict[str, Any] = {
        "open_kwargs": open_kwargs,
        "full_shape": dict(zip(dims, level.shape, strict=True)),
        "storage_chunks": dict(zip(dims, level.chunks or data.chunksize, strict=True)),
        "level0": _level0_geometry(src, dims),
        "scale": {d: float(level.scale.get(d, 1.0)) for d in spatial},
        "units": {d: level.units.get(d, "pixel") for d in spatial},
        "objective_power": src.objective_power,
        "mpp": level_mpp(src, index),
        "magnification": level_magnification(src, index),
        "associated_images": list(src.associated),
    }
    selection = roi_to_selection(roi, dims, level.shape, source=src.display)
    if selection:
        arr = arr.isel(selection)
        facts["roi"] = {d: [s.start, s.stop] for d, s in selection.items()}
    return remember_opened(arr, level.recipe, **facts)


def _from_xarray(obj: xr.DataArray, axes, roi, chunks: Any = None) -> xr.DataArray:
    arr = obj if isinstance(obj.data, da.Array) else obj.chunk()
    if axes is not None:
        dims = dims_from_axes(axes, obj.ndim, source="the DataArray")
        arr = arr.rename(dict(zip(obj.dims, dims, strict=True)))
    else:
        arr = arr.rename({d: str(d).lower() for d in obj.dims if str(d) != str(d).lower()})
    if chunks is not None:
        dims = tuple(map(str, arr.dims))
        normalised = _check_chunks(chunks, dims, arr.shape, arr.dtype, "the DataArray",
                                   tuple(c[0] for c in arr.chunks))
        arr = arr.chunk(dict(zip(dims, normalised, strict=True)))
    selection = roi_to_selection(roi, tuple(map(str, arr.dims)), arr.shape, source="the DataArray")
    return arr.isel(selection) if selection else arr


def _check_single_resolution(arr: xr.DataArray, mpp: float) -> None:
    """``mpp=`` on a DataArray (one resolution): it must not be coarser than asked."""
    spatial = [str(d) for d in arr.dims if str(d) in ("y", "x")]
    levels = [Level(name="", recipe=ArrayRecipe("memory", None), shape=arr.shape,
                    dtype=arr.dtype, chunks=None,
                    scale={d: float(arr[d].attrs.get("scale", 1.0)) for d in spatial
                           if d in arr.coords},
                    units={d: str(arr[d].attrs.get("units", "pixel")) for d in spatial
                           if d in arr.coords})]
    select_level(SourceLevels("memory", str(arr.attrs.get("source", "the DataArray")), levels),
                 mpp=mpp)


def _check_level(src: SourceLevels, level: int | str | None, mpp: float | None = None
                 ) -> int:
    """The index of ``level`` in ``src``: an int from 0 (finest) to n - 1, a
    magnification such as ``"20x"``, or the level chosen for ``mpp``.

    Negative levels are refused rather than counted from the end: one
    ``level=`` is applied to every slide of a table, and slides with pyramids
    of different depths would silently be read at different resolutions.
    """
    if mpp is not None:
        if level is not None:
            raise OptionError(
                f"level={level!r} and mpp={mpp!r} both given for {src.display}: pass one "
                "(mpp= chooses the level)"
            )
        return select_level(src, mpp=mpp)
    if level is None:
        return src.default
    n = len(src.levels)
    if isinstance(level, str) and parse_magnification(level) is not None:
        return select_level(src, magnification=parse_magnification(level))
    if isinstance(level, bool) or not isinstance(level, int | np.integer):
        raise OptionError(
            f"level={level!r} (a {type(level).__name__}) for {src.display}: pass an int "
            f"from 0 (finest) to {n - 1}, or a magnification such as '20x'"
        )
    if not 0 <= int(level) < n:
        names = ", ".join(lv.name or str(i) for i, lv in enumerate(src.levels))
        extra = (f"; levels are not counted from the end: pass level={n - 1} for the "
                 "coarsest" if level < 0 else "")
        raise DataGroupError(
            f"level={level} asked for, but {src.display} has {n} level(s) "
            f"({names}); pass 0..{n - 1}{extra}"
        )
    return int(level)


def open_image(
    source: Source,
    *,
    axes: str | Sequence[str] | None = None,
    data_group: str | int | None = None,
    roi: Any = None,
    level: int | str | None = None,
    mpp: float | None = None,
    storage_options: Mapping[str, Any] | None = None,
    chunks: Any = None,
    reader: str | None = None,
) -> xr.DataArray:
    """Open an image lazily as a dask-backed ``xarray.DataArray``.

    Parameters
    ----------
    source : str, path, numpy/dask/zarr array, zarr group/store or DataArray
        Local path or URL (``s3://``, ``http(s)://``) of a zarr v2/v3 store,
        OME-NGFF image, (OME-)TIFF or Pillow-readable file, or an in-memory
        array.
    axes : str, optional
        Axes of the stored array, e.g. ``"TCZYX"`` or ``"yxc"`` (either
        case). Defaults to the source's own axis names.
    data_group : str or int, optional
        Which image in the source: a zarr path (``"0"``, ``"labels/0"``,
        an OME-NGFF multiscale group), or for TIFF ``"level"`` /
        ``"series/level"``.
    roi : str, tuple of slice or dict, optional
        Region of interest in the stored array's axis order
        (``"(start,...):(length,...)"``; a length of -1 means to the end), or
        ``{dim: slice}``.
    level : int or str, optional
        Pyramid level, from 0 (the finest) to ``levels - 1``; overrides the
        level implied by ``data_group``. Negative levels are an error (not
        counted from the end). A magnification such as ``"20x"`` picks the
        level as ``mpp`` does, from the objective power the file states.
    mpp : float, optional
        Wanted micrometres per pixel: the coarsest level whose pixel size is
        at most ``mpp * 1.1`` is read (:mod:`zarrdask.io.level_select`);
        nothing is resampled, the coordinates give the real pixel size.
    storage_options : mapping, optional
        fsspec options for URLs (``endpoint_url``, ``anon``, credentials).
    chunks : int, str, tuple or dict, optional
        Dask chunks (anything ``dask.array`` takes, or a dict by dim name such
        as ``{"y": 512, "x": 512}``); default: the storage chunks (or shards).
    reader : {None, "openslide"}, optional
        Force OpenSlide (``pip install zarrdask[openslide]``) for a slide
        file; by default the format decides (see docs/readers.md).

    Returns
    -------
    xarray.DataArray
        Named dims (``t, c, z, y, x``; other letters lower-case), physical
        coordinates on spatial dims (each with attrs ``units`` and
        ``scale``), and attrs ``source``, ``reader``, ``data_group``,
        ``level``, ``levels`` and, when the file states it,
        ``objective_power`` (strings and numbers only: the array writes
        with ``to_zarr`` / ``to_netcdf``). How to reopen it:
        :func:`zarrdask.io.recipe.recipe_of`.

    Raises
    ------
    SourceNotFoundError, UnsupportedFormatError, AxesError, DataGroupError,
    RoiError, RemoteAccessError, OptionError
    """
    if isinstance(source, xr.DataArray):
        arr = _from_xarray(source, axes, roi, chunks)
        if mpp is not None:
            _check_single_resolution(arr, mpp)
        return arr
    src = discover(source, data_group=data_group, storage_options=storage_options,
                   reader=reader)
    index = _check_level(src, level, mpp)
    open_kwargs = {"axes": axes, "data_group": data_group, "roi": roi, "level": level}
    if mpp is not None:
        open_kwargs["mpp"] = mpp
    if reader is not None:
        open_kwargs["reader"] = reader
    return _level_dataarray(src, index, axes=axes, roi=roi, chunks=chunks, open_kwargs=open_kwargs)


def _scaled_roi(roi_sel: dict[str, slice], base: Level, level: Level, dims) -> dict[str, slice]:
    out = {}
    for d, sl in roi_sel.items():
        i = dims.index(d)
        factor = level.shape[i] / base.shape[i]
        start = int(np.floor(sl.start * factor))
        stop = max(start + 1, int(np.ceil(sl.stop * factor)))
        out[d] = slice(start, min(stop, level.shape[i]))
    return out


def open_pyramid(
    source: Source,
    *,
    axes: str | Sequence[str] | None = None,
    data_group: str | int | None = None,
    roi: Any = None,
    storage_options: Mapping[str, Any] | None = None,
    chunks: Any = None,
    reader: str | None = None,
) -> xr.DataTree:
    """Open every resolution level of an image as an ``xarray.DataTree``.

    Parameters are those of :func:`open_image`; ``roi`` is given in level-0
    pixels and scaled to each level.

    Returns
    -------
    xarray.DataTree
        One child node per level, named by the level's key in the source (or
        its index), each holding the level as the variable ``"image"`` with
        its own physical coordinates. ``tree.attrs["levels"]`` lists the
        node names finest first; ``tree.attrs["associated_images"]`` the
        names of a slide's thumbnail/label/macro images, and
        ``tree.attrs["objective_power"]`` is set when the file states it.
    """
    if isinstance(source, xr.DataArray):
        arr = _from_xarray(source, axes, roi, chunks)
        return xr.DataTree.from_dict({"0": xr.Dataset({"image": arr})}, name="pyramid")
    src = discover(source, data_group=data_group, storage_options=storage_options,
                   reader=reader)
    base = src.levels[0]
    base_dims = _resolve_dims(base, axes, src.display)
    roi_sel = roi_to_selection(roi, base_dims, base.shape, source=src.display)
    nodes = {}
    names = []
    for i, lvl in enumerate(src.levels):
        arr = _level_dataarray(src, i, axes=axes, roi=None, chunks=chunks,
                               open_kwargs={"axes": axes, "data_group": data_group, "level": i,
                                            **({"reader": reader} if reader else {})})
        if roi_sel:
            selection = _scaled_roi(roi_sel, base, lvl, base_dims)
            facts = open_facts(arr)
            arr = arr.isel(selection)
            facts["roi"] = {d: [s.start, s.stop] for d, s in selection.items()}
            arr = remember_opened(arr, facts.pop("recipe"), **facts)
        node = (lvl.name.rpartition("/")[2] or str(i)).replace("/", "_")
        if node in nodes:
            node = str(i)
        nodes[node] = xr.Dataset({"image": arr})
        names.append(node)
    tree = xr.DataTree.from_dict(nodes, name="pyramid")
    tree.attrs.update({"source": src.display, "levels": names, "reader": src.reader,
                       "associated_images": list(src.associated)})
    if src.objective_power:
        tree.attrs["objective_power"] = float(src.objective_power)
    return tree
