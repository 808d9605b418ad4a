"""Tissue masks of whole-slide images, computed on a low-resolution level.

The numpy core (:func:`grey`, :func:`resample_area`, :func:`tissue_from_grey`)
is shared by the dask pipeline :func:`tissue_mask` and by the
zarrdataset-compatible :class:`~zarrdask.masks.generators.WSITissueMaskGenerator`.
"""

from __future__ import annotations

import itertools
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph
from skimage.filters import threshold_otsu
from skimage.morphology import remove_small_holes, remove_small_objects

from ..axes import SPATIAL_DIMS
from ..errors import MaskError
from ..io.recipe import open_facts
from .align import (
    describe,
    physical_box,
    pixel_size,
    pyramid_levels,
    set_mask_scale,
    spanning_dataarray,
    spatial_dims,
    tree_levels,
)

__all__ = [
    "tissue_mask",
    "tissue_threshold",
    "grey",
    "resample_area",
    "tissue_from_grey",
    "otsu_threshold",
    "LUMINANCE",
]

#: ITU-R BT.709 luminance weights of R, G, B (those of ``skimage.color.rgb2gray``).
LUMINANCE = np.array([0.2125, 0.7154, 0.0721])

#: Floating-point slack when deciding whether pixel edges coincide.
_EPS = 1e-9

#: Input pixels per dask task when resampling by a non-integer factor.
_BLOCK_PIXELS = 2**22

#: Pixels of the level read per task of the whole grey-and-reduce step: the
#: fine graph (one read per storage chunk, grey level, block means) of a block
#: of about this many input pixels runs inside one task (see :func:`_fused_blocks`).
_TASK_PIXELS = 2**24


# -- numpy core ----------------------------------------------------------------------

def grey(image: np.ndarray, *, channel_axis: int | None = -1) -> np.ndarray:
    """Grey level of an image, in the image's own intensity units.

    Parameters
    ----------
    image : numpy.ndarray
        The image.
    channel_axis : int or None
        Axis of the channels; None when the image is already single-channel.

    Returns
    -------
    numpy.ndarray
        float64, without the channel axis: the BT.709 luminance for 3
        channels (RGB) or 4 (RGBA, alpha ignored), the mean otherwise.
    """
    image = np.asarray(image)
    if channel_axis is None:
        return image.astype(np.float64)
    image = np.moveaxis(image, channel_axis, -1)
    n = image.shape[-1]
    if n in (3, 4):
        return image[..., :3].astype(np.float64) @ LUMINANCE
    return image.astype(np.float64).mean(axis=-1)


def _area_weights(n_in: int, lo: float, hi: float, n_out: int, j0: int = 0,
                  j1: int | None = None) -> tuple[np.ndarray, int, int]:
    """Averaging weights of output pixels ``j0..j1`` over input pixels.

    Output pixel ``j`` covers input interval ``[lo + j r, lo + (j + 1) r)``
    with ``r = (hi - lo) / n_out`` (input pixel ``i`` covers ``[i, i + 1)``).
    Its value is the mean of the input over that interval, each input pixel
    weighted by its overlap; parts outside ``[0, n_in)`` are left out (the
    nearest input pixel stands in when nothing is left).

    Returns
    -------
    weights : numpy.ndarray
        ``(j1 - j0, i1 - i0)``, rows summing to 1.
    i0, i1 : int
        The input pixels the weights apply to.
    """
    j1 = n_out if j1 is None else j1
    r = (hi - lo) / n_out
    starts = lo + np.arange(j0, j1, dtype=np.float64) * r
    stops = starts + r
    i0 = min(max(0, math.floor(starts[0] + _EPS)), n_in - 1)
    i1 = max(min(n_in, math.ceil(stops[-1] - _EPS)), i0 + 1)
    idx = np.arange(i0, i1, dtype=np.float64)
    overlap = np.minimum(stops[:, None], idx + 1) - np.maximum(starts[:, None], idx)
    overlap[overlap < _EPS] = 0.0
    total = overlap.sum(axis=1)
    empty = total == 0
    if empty.any():
        centres = (starts[empty] + stops[empty]) / 2
        nearest = np.clip(np.floor(centres), i0, i1 - 1).astype(int) - i0
        overlap[np.flatnonzero(empty), nearest] = 1.0
        total = overlap.sum(axis=1)
    return overlap / total[:, None], i0, i1


def _apply_weights(block: np.ndarray, weights: Sequence[np.ndarray]) -> np.ndarray:
    out = np.asarray(block, dtype=np.float64)
    for axis, w in enumerate(weights):
        out = np.moveaxis(np.tensordot(w, out, axes=(1, axis)), 0, axis)
    return out


def resample_area(image: np.ndarray, shape: Sequence[int], *,
                  box: Sequence[tuple[float, float]] | None = None) -> np.ndarray:
    """Resample by area averaging to ``shape`` (any factor, up or down).

    Parameters
    ----------
    image : numpy.ndarray
        Single-channel image, one axis per spatial dim.
    shape : sequence of int
        Output shape.
    box : sequence of (float, float), optional
        Interval of input pixels the output spans along each axis (default
        the whole axis, ``(0, n)``).

    Returns
    -------
    numpy.ndarray
        float64 of ``shape``; with an integer factor this is the block mean.
    """
    image = np.asarray(image)
    box = [(0.0, float(n)) for n in image.shape] if box is None else box
    weights = []
    slices = []
    for n_in, (lo, hi), n_out in zip(image.shape, box, shape, strict=True):
        w, i0, i1 = _area_weights(n_in, lo, hi, int(n_out))
        weights.append(w)
        slices.append(slice(i0, i1))
    return _apply_weights(image[tuple(slices)], weights)


def otsu_threshold(grey_image: np.ndarray) -> float:
    """Otsu's threshold of the finite grey levels of an image (NaN when none).

    Parameters
    ----------
    grey_image : numpy.ndarray

    Returns
    -------
    float
        A constant image gives its own value, so that nothing is darker.
    """
    grey_image = np.asarray(grey_image, dtype=np.float64)
    finite = grey_image[np.isfinite(grey_image)]
    return float(threshold_otsu(finite)) if finite.size else math.nan


def tissue_from_grey(grey_image: np.ndarray, *, thresh: float | None = None, min_size: int = 16,
                     area_threshold: int = 128) -> tuple[np.ndarray, float]:
    """Tissue (dark) pixels of a grey image, cleaned by morphology.

    Parameters
    ----------
    grey_image : numpy.ndarray
        Grey levels at the mask's resolution.
    thresh : float, optional
        Threshold in the image's intensity units; default: Otsu's threshold
        of ``grey_image``.
    min_size : int
        Smallest tissue object kept, in mask pixels (smaller ones are
        removed).
    area_threshold : int
        Smallest background hole kept inside tissue, in mask pixels (smaller
        ones are filled).

    Returns
    -------
    mask : numpy.ndarray
        bool, True on tissue (pixels darker than the threshold).
    threshold : float
        The threshold used.
    """
    grey_image = np.asarray(grey_image, dtype=np.float64)
    threshold = otsu_threshold(grey_image) if thresh is None else float(thresh)
    mask = grey_image < threshold
    with warnings.catch_warnings():
        # "Only one label was provided": an all-tissue or all-background mask.
        warnings.filterwarnings("ignore", category=UserWarning, module="skimage")
        if min_size > 1:
            mask = remove_small_objects(mask, max_size=int(min_size) - 1)
        if area_threshold > 1:
            mask = remove_small_holes(mask, max_size=int(area_threshold) - 1)
    return mask, threshold


# -- dask pipeline --------------------------------------------------------------------

def _requested_scale(mask_scale: float | Mapping[str, float], dims: Sequence[str],
                     source: str) -> dict[str, float]:
    if isinstance(mask_scale, Mapping):
        unknown = sorted(set(map(str, mask_scale)) - set(dims))
        if unknown:
            raise MaskError(
                f"mask_scale names {unknown} but the image {source} has spatial dims "
                f"{tuple(dims)}; pass a float, or a mapping over those dims"
            )
        scale = {d: float(mask_scale.get(d, 1.0)) for d in dims}
    else:
        scale = {d: (1.0 if d == "z" else float(mask_scale)) for d in dims}
    bad = {d: s for d, s in scale.items() if not (s > 0 and math.isfinite(s))}
    if bad:
        raise MaskError(
            f"mask_scale={mask_scale!r} for {source} must be > 0 (mask pixels per image "
            f"pixel, e.g. 1/16); got {bad}"
        )
    return scale


def _luminance(block: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    letters = "abcdefghijklmnopqrstuvwxyz"[:block.ndim]
    kept = letters.replace(letters[axis], "")
    return np.einsum(f"{letters},{letters[axis]}->{kept}", block, weights, dtype=np.float64)


def _grey_level(level: xr.DataArray, channel_dim: str, dims: Sequence[str]) -> xr.DataArray:
    """Grey levels of one pyramid level, lazily, with only spatial dims."""
    out = level
    if channel_dim in out.dims and out.sizes[channel_dim] in (3, 4):
        n = out.sizes[channel_dim]
        weights = np.zeros(n, dtype=np.float64)
        weights[:3] = LUMINANCE
        axis = out.dims.index(channel_dim)
        data = out.data if isinstance(out.data, da.Array) else da.asarray(out.data)
        data = data.rechunk({axis: -1})
        # one einsum per chunk, casting to float64 in small buffers: the
        # values of ``level.astype(float64).dot(weights)`` without its float64
        # copy of every chunk and its reduction step
        grey_data = data.map_blocks(_luminance, weights, axis, drop_axis=axis, dtype=np.float64,
                                    meta=np.empty((0,) * (data.ndim - 1), dtype=np.float64))
        out = xr.DataArray(grey_data, dims=[d for d in out.dims if d != channel_dim])
    out = out.astype(np.float64)
    if channel_dim in out.dims:
        out = out.mean(dim=channel_dim)
    others = [d for d in out.dims if d not in SPATIAL_DIMS]
    if others:
        out = out.mean(dim=others)
    return out.transpose(*dims)


def _integer_factor(lo: float, hi: float, n_in: int, n_out: int) -> int | None:
    k = (hi - lo) / n_out
    if (abs(k - round(k)) < 1e-6 and abs(lo - round(lo)) < 1e-6 and round(lo) >= 0
            and round(hi) <= n_in and round(k) >= 1):
        return int(round(k))
    return None


def _resample_dask(data: da.Array, box: Sequence[tuple[float, float]],
                   shape: Sequence[int]) -> da.Array:
    """Area-averaging resample of a dask array to ``shape`` (float64).

    Block means through :func:`dask.array.coarsen` when every factor is an
    integer and the box falls on whole pixels; otherwise one task per output
    block, each reading only the input it covers.
    """
    factors = [_integer_factor(lo, hi, n, m) for (lo, hi), n, m
               in zip(box, data.shape, shape, strict=True)]
    if all(f is not None for f in factors):
        region = data[tuple(slice(round(lo), round(lo) + f * m)
                            for (lo, _), f, m in zip(box, factors, shape, strict=True))]
        if all(f == 1 for f in factors):
            return region.astype(np.float64)
        return da.coarsen(np.mean, region, dict(enumerate(factors)),
                          trim_excess=False).astype(np.float64)
    ndim = data.ndim
    side = max(1, int(_BLOCK_PIXELS ** (1 / ndim)))
    out_blocks = []
    for (lo, hi), m in zip(box, shape, strict=True):
        r = (hi - lo) / m
        step = max(1, min(m, int(side / max(r, 1e-12))))
        out_blocks.append([(j, min(m, j + step)) for j in range(0, m, step)])

    def build(axis: int, prefix: tuple) -> Any:
        if axis == ndim:
            weights, slices, out_shape = [], [], []
            for ax, (j0, j1) in enumerate(prefix):
                (lo, hi), n_in, m = box[ax], data.shape[ax], shape[ax]
                w, i0, i1 = _area_weights(n_in, lo, hi, m, j0, j1)
                weights.append(w)
                slices.append(slice(i0, i1))
                out_shape.append(j1 - j0)
            region = data[tuple(slices)]
            region = region.rechunk(region.shape)
            return region.map_blocks(partial(_apply_weights, weights=tuple(weights)),
                                     name="resample-" + tokenize(region.name, weights),
                                     chunks=tuple(out_shape),
                                     dtype=np.float64, meta=np.empty((0,) * ndim))
        parts = [build(axis + 1, prefix + (b,)) for b in out_blocks[axis]]
        return parts[0] if len(parts) == 1 else da.concatenate(parts, axis=axis)

    return build(0, ()).astype(np.float64)


class _Fused:
    """A dask array that one task of an outer graph computes, with the
    synchronous scheduler, inside the worker that runs the task.

    Not a dask collection, so the outer graph holds one task where the inner
    graph has one per storage chunk (and its intermediate blocks never leave
    that worker).
    """

    __slots__ = ("array",)

    def __init__(self, array: da.Array) -> None:
        self.array = array


def _compute_fused(part: _Fused) -> np.ndarray:
    return np.asarray(part.array.compute(scheduler="sync"))


def _group_chunks(chunks: Sequence[int], side: float) -> list[tuple[int, int]]:
    """Runs of consecutive chunks of about ``side`` elements (at least one chunk each)."""
    runs, start, size = [], 0, 0
    for c in chunks:
        if size and size + c > side:
            runs.append((start, start + size))
            start, size = start + size, 0
        size += c
    runs.append((start, start + size))
    return runs


def _fused_blocks(small: da.Array, input_pixels: int) -> da.Array:
    """``small`` recomputed as one task per block of about
    :data:`_TASK_PIXELS` input pixels (a whole slide of up to 4096² pixels
    is one task).

    The per-chunk graph of the grey level and its reduction has hundreds of
    tiny tasks per slide; on a distributed cluster their scheduling costs far
    more than their work. Each block's part of that graph runs inside one
    task (:class:`_Fused`), on chunk-aligned slices of ``small``, so the
    values are exactly those of the fine graph.
    """
    per_output = input_pixels / max(1, small.size)
    side = max(1.0, _TASK_PIXELS / max(per_output, 1e-12)) ** (1 / max(1, small.ndim))
    runs = [_group_chunks(c, side) for c in small.chunks]
    name = "tissue-grey-" + tokenize(small.name, runs)
    layer = {}
    for index in itertools.product(*(range(len(r)) for r in runs)):
        sel = tuple(slice(*runs[axis][i]) for axis, i in enumerate(index))
        layer[(name, *index)] = (_compute_fused, _Fused(small[sel]))
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[])
    chunks = tuple(tuple(b - a for a, b in r) for r in runs)
    return da.Array(graph, name, chunks=chunks, dtype=small.dtype,
                    meta=np.empty((0,) * small.ndim, dtype=small.dtype))


def fused_layers(arr: da.Array) -> set[str]:
    """Names of the graph layers of ``arr``, including those of the inner
    graphs its fused tasks compute (for tests and debugging).

    Parameters
    ----------
    arr : dask.array.Array
        E.g. ``tissue_mask(...).data``.

    Returns
    -------
    set of str
    """
    graph = arr.__dask_graph__()
    names = set(map(str, graph.layers))
    for task in dict(graph).values():
        args = getattr(task, "args", task if isinstance(task, tuple) else ())
        for arg in args:
            value = getattr(arg, "value", arg)
            if isinstance(value, _Fused):
                names |= fused_layers(value.array)
    return names


def _mask_task(grey_image: np.ndarray, threshold: float, min_size: int,
               area_threshold: int) -> np.ndarray:
    return tissue_from_grey(grey_image, thresh=threshold, min_size=min_size,
                            area_threshold=area_threshold)[0]


def _tissue_graph(small: da.Array, *, thresh: float | None, min_size: int,
                  area_threshold: int) -> tuple[da.Array, da.Array | float]:
    """The threshold and mask tasks on the mask-resolution grey image.

    One task computes the threshold (Otsu's unless given), one the mask
    from it; both read the single chunk of the grey image, so computing
    the mask and its threshold together evaluates the image once.
    """
    whole = small.rechunk(small.shape)
    block = (whole.name,) + (0,) * whole.ndim
    token = tokenize(whole.name, thresh, min_size, area_threshold)
    if thresh is None:
        t_name = "tissue-threshold-" + token
        graph = HighLevelGraph.from_collections(
            t_name, {(t_name,): (otsu_threshold, block)}, dependencies=[whole])
        threshold: da.Array | float = da.Array(graph, t_name, chunks=(), dtype=np.float64,
                                               meta=np.empty((), dtype=np.float64))
        t_arg: Any = (t_name,)
        deps = [whole, threshold]
    else:
        threshold = float(thresh)
        t_arg = threshold
        deps = [whole]
    m_name = "tissue-mask-" + token
    graph = HighLevelGraph.from_collections(
        m_name,
        {(m_name,) + (0,) * whole.ndim: (_mask_task, block, t_arg, min_size, area_threshold)},
        dependencies=deps,
    )
    mask = da.Array(graph, m_name, chunks=tuple((n,) for n in whole.shape), dtype=bool,
                    meta=np.empty((0,) * whole.ndim, dtype=bool))
    return mask, threshold


def _levels_and_reference(image: Any, *, axes, data_group, storage_options
                          ) -> tuple[list[xr.DataArray], xr.DataArray, str]:
    if isinstance(image, xr.DataTree):
        levels = tree_levels(image)
        return levels, levels[0], str(image.attrs.get("source") or describe(levels[0]))
    if isinstance(image, xr.DataArray):
        if axes is not None:
            from ..io import open_image

            image = open_image(image, axes=axes)
        return pyramid_levels(image), image, describe(image)
    from ..io import open_pyramid

    path = os.fspath(image) if isinstance(image, str | os.PathLike) else None
    tree = open_pyramid(image if path is None else path, axes=axes, data_group=data_group,
                        storage_options=storage_options)
    levels = tree_levels(tree)
    source = path if path is not None else str(tree.attrs.get("source") or describe(image))
    return levels, levels[0], source


def _choose_level(levels: Sequence[xr.DataArray], dims: Sequence[str],
                  mask_pixel: Mapping[str, float]) -> int:
    """Index of the coarsest level whose pixels are no larger than the
    mask's along every dim (the finest level when none is)."""
    best, best_volume = None, -1.0
    for i, level in enumerate(levels):
        sizes = {d: pixel_size(level, d) for d in dims}
        if all(sizes[d] <= mask_pixel[d] * (1 + 1e-6) for d in dims):
            volume = math.prod(sizes.values())
            if volume > best_volume * (1 + 1e-9):
                best, best_volume = i, volume
    if best is None:
        volumes = [math.prod(pixel_size(lv, d) for d in dims) for lv in levels]
        best = int(np.argmin(volumes))
    return best


def tissue_mask(
    image: Any,
    *,
    mask_scale: float | Mapping[str, float] = 1 / 16,
    min_size: int = 16,
    area_threshold: int = 128,
    thresh: float | None = None,
    channel_dim: str = "c",
    axes: str | Sequence[str] | None = None,
    data_group: str | int | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> xr.DataArray:
    """Tissue mask of a whole-slide image, as a lazy dask graph.

    Parameters
    ----------
    image : path/URL, xarray.DataArray or xarray.DataTree
        The image: a source :func:`zarrdask.open_pyramid` opens, an image from
        :func:`zarrdask.open_image` (its pyramid is reopened when it has one
        and was not modified, so a coarse level is read instead of it), or a
        pyramid from :func:`zarrdask.open_pyramid`.
    mask_scale : float or mapping
        Mask pixels per level-0 image pixel. A float applies to ``y`` and
        ``x`` (``z`` keeps the level-0 resolution); a mapping gives it per
        dim.
    min_size : int
        Tissue objects smaller than this many mask pixels are removed.
    area_threshold : int
        Background holes inside tissue smaller than this many mask pixels are
        filled.
    thresh : float, optional
        Grey-level threshold in the image's intensity units (e.g. 0..255 for
        uint8); default: Otsu's threshold of this image's grey levels.
    channel_dim : str
        The channel dim: 3 (RGB) or 4 (RGBA) channels become the BT.709
        luminance, other counts their mean. Other non-spatial dims are
        averaged.
    axes : str, optional
        Axes of the stored image when its metadata lacks them (``"CYX"``).
    data_group : str or int, optional
        Which image inside the source.
    storage_options : mapping, optional
        fsspec options for URLs.

    Returns
    -------
    xarray.DataArray
        Lazy boolean mask, True on tissue, with the image's spatial dims
        (``y, x``, and ``z`` for 3-D images), physical coordinates in the
        image's space (``coord = translation + i * mask_pixel_size``) and
        attrs ``scale``, ``units``, ``source``, ``mask_scale`` (mask pixels
        per level-0 image pixel, from the shapes), ``level`` (index of the
        level read), ``threshold`` (a 0-d dask array sharing the mask's
        graph, or the float given as ``thresh``; see
        :func:`tissue_threshold`), ``min_size`` and ``area_threshold``.

    Raises
    ------
    MaskError
        When ``mask_scale`` is not positive or the image has no spatial dim.

    Notes
    -----
    The level read is the coarsest whose pixel size is at most the mask's
    pixel size along every dim; it is resampled to exactly the mask's shape
    by block means (integer factor) or area averaging (otherwise). The mask
    spans the physical extent of the image (or of its region when the image
    was opened with a ``roi``): its pixel size is that extent divided by
    ``round(level-0 pixels * mask_scale)``. The threshold is computed for
    each image on its own.
    """
    levels, reference, source = _levels_and_reference(
        image, axes=axes, data_group=data_group, storage_options=storage_options)
    dims = spatial_dims(reference)
    if not dims:
        raise MaskError(
            f"the image {source} has no spatial dim (dims {tuple(map(str, reference.dims))}); "
            "pass axes=... naming its Y and X axes"
        )
    for name, value in (("min_size", min_size), ("area_threshold", area_threshold)):
        if int(value) != value or value < 0:
            raise MaskError(f"{name}={value!r} for {source} must be a whole number of mask "
                            "pixels >= 0")
    scale = _requested_scale(mask_scale, dims, source)
    level0 = open_facts(reference, derived=True).get("level0", {}).get("scale", {})
    s0 = {d: float(level0.get(d, pixel_size(reference, d))) for d in dims}
    box = {d: physical_box(reference, d) for d in dims}
    n0 = {d: (box[d][1] - box[d][0]) / s0[d] for d in dims}
    shape = {d: max(1, round(n0[d] * scale[d])) for d in dims}
    mask_pixel = {d: (box[d][1] - box[d][0]) / shape[d] for d in dims}

    index = _choose_level(levels, dims, mask_pixel)
    level = levels[index]
    grey_level = _grey_level(level, channel_dim, dims)
    data = grey_level.data if isinstance(grey_level.data, da.Array) else da.asarray(grey_level.data)
    level_box = []
    for d in dims:
        origin, size = physical_box(level, d)[0], pixel_size(level, d)
        level_box.append(((box[d][0] - origin) / size, (box[d][1] - origin) / size))
    small = _fused_blocks(_resample_dask(data, level_box, [shape[d] for d in dims]), data.size)

    mask_data, threshold = _tissue_graph(small, thresh=thresh, min_size=int(min_size),
                                         area_threshold=int(area_threshold))
    attrs = {
        "source": source,
        "level": int(level.attrs.get("level", index)),
        "min_size": int(min_size),
        "area_threshold": int(area_threshold),
    }
    if not isinstance(threshold, da.Array):
        attrs["threshold"] = float(threshold)
    out = spanning_dataarray(mask_data, dims, reference, box, name="tissue_mask", attrs=attrs)
    # a computed threshold stays lazy, outside attrs (which must hold plain
    # values, so that the mask writes with to_zarr / to_netcdf)
    out.encoding[_THRESHOLD_KEY] = threshold
    # mask pixels per level-0 pixel (the reference may be a coarser level)
    set_mask_scale(out, {d: shape[d] / n0[d] for d in dims})
    return out


_THRESHOLD_KEY = "zarrdask_threshold"


def tissue_threshold(mask: xr.DataArray, *, lazy: bool = False) -> Any:
    """The grey-level threshold a tissue mask used (computes it if needed).

    Parameters
    ----------
    mask : xarray.DataArray
        A mask from :func:`tissue_mask`.
    lazy : bool
        Return a computed (Otsu) threshold as the 0-d dask array that shares
        the mask's graph instead of computing it.

    Returns
    -------
    float (or 0-d dask array with ``lazy=True``)

    Raises
    ------
    MaskError
        When ``mask`` did not come from :func:`tissue_mask`.
    """
    value = mask.attrs.get("threshold", mask.encoding.get(_THRESHOLD_KEY))
    if value is None:
        raise MaskError(
            f"the mask {describe(mask)} has no threshold; it was not made by "
            "zarrdask.masks.tissue_mask (or was computed from one, which drops it)"
        )
    if isinstance(value, da.Array):
        return value if lazy else float(value.compute())
    return float(value)
