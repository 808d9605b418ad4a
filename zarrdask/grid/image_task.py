"""The per-image work of a grid build: an image's grid in its pixels, its
mask, its grid tasks (one per run of storage chunks) and the pure task
function computing the rows of one run.

:func:`zarrdask.build_table` turns the tasks of every image into one dask
graph (:mod:`zarrdask.grid.build`); a cohort build computes an image's
tasks in one worker task (:mod:`zarrdask.grid.cohort_task`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from ..errors import MaskError
from .geometry import (
    GridSpec,
    chunk_ids,
    grid_starts_in_box,
    keep_patches,
    normalize_grid_params,
    window_coverage,
)
from .graph import task_boxes
from .options import GridOptions
from .physical import is_physical, mask_mpp_of, mask_scale_for, physical_to_pixels
from .sources import item_name, item_source_and_options

__all__ = ["GridWarning", "ImageWork", "image_spec", "image_work", "image_rows", "grid_task",
           "mask_numpy"]


class GridWarning(UserWarning):
    """A grid that is empty or smaller than expected for one image."""


# -- pure task functions (run on dask workers) ------------------------------

def _to_level0(starts: np.ndarray, dims: Sequence[str], geo: Mapping[str, Any]) -> np.ndarray:
    """Read-level pixel positions to level-0 pixel positions (via physical space)."""
    out = np.empty_like(starts)
    for i, d in enumerate(dims):
        phys = geo["origin"][d] + starts[:, i] * geo["scale"][d]
        out[:, i] = np.rint((phys - geo["origin0"][d]) / geo["scale0"][d]).astype(np.int64)
    return out


def grid_task(box_start: dict, box_stop: dict, *, roi_start: dict, roi_shape: dict,
               full_shape: dict, chunk_shape: dict, spec: dict, geo: dict,
               mask: np.ndarray | None, mask_scale: dict | None, mask_origin: dict | None,
               candidates: np.ndarray | None, image_id: int) -> dict[str, np.ndarray]:
    """Rows of the patches whose top-left lies in one run of chunks."""
    grid = GridSpec.from_dict(spec)
    dims = grid.dims
    rel_start = {d: box_start[d] - roi_start[d] for d in dims}
    rel_stop = {d: box_stop[d] - roi_start[d] for d in dims}
    if candidates is None:
        starts = grid_starts_in_box(rel_start, rel_stop, roi_shape, grid)
    else:
        lo = np.array([rel_start[d] for d in dims])
        hi = np.array([rel_stop[d] for d in dims])
        inside = np.all((candidates >= lo) & (candidates < hi), axis=1)
        starts = candidates[inside]
    starts = starts.astype(np.int64) + np.array([roi_start[d] for d in dims], dtype=np.int64)
    if mask is not None and len(starts):
        cov = window_coverage(mask, [mask_scale[d] for d in dims], starts,
                              [grid.patch[d] for d in dims],
                              mask_origin=[mask_origin[d] for d in dims])
        keep = keep_patches(cov, grid.min_area, grid.patch_area)
        starts, cov = starts[keep], cov[keep]
    else:
        cov = np.ones(len(starts))
    cids = chunk_ids(starts, [chunk_shape[d] for d in dims], [full_shape[d] for d in dims])
    level0 = _to_level0(starts, dims, geo)
    out = {"image_id": np.full(len(starts), image_id, dtype=np.int32)}
    for i, d in enumerate(dims):
        out[d] = level0[:, i]
    out["chunk_id"] = cids.astype(np.int64)
    out["coverage"] = cov.astype(np.float32)
    return out


def mask_numpy(mask: Any) -> np.ndarray:
    return np.asarray(mask, dtype=bool)


# -- one image: its mask, grid spec and grid tasks ------------------------------

def _resolve_mask(mask_item: Any, image: xr.DataArray, item: Any, tissue_options: Mapping) -> Any:
    if mask_item is None:
        return None
    from ..masks import as_mask, tissue_mask

    if isinstance(mask_item, str) and mask_item == "tissue":
        options = dict(tissue_options or {})
        source, open_options = item_source_and_options(item)
        for key in ("data_group", "storage_options", "axes"):
            if key in open_options:
                options.setdefault(key, open_options[key])
        if isinstance(source, str | os.PathLike):
            return tissue_mask(os.fspath(source), **options)
        return tissue_mask(image, **options)
    return as_mask(mask_item, like=image)


def _full_image(image: xr.DataArray) -> xr.DataArray:
    """The whole stored array at the read level (undoing a ROI)."""
    from ..io import open_facts, open_image

    facts = open_facts(image)
    recipe = facts.get("recipe")
    if not facts.get("roi") or recipe is None:
        return image
    kwargs = dict(facts.get("open_kwargs") or {})
    kwargs.pop("roi", None)
    kwargs["level"] = image.attrs.get("level")
    source = recipe.location if recipe.location is not None else recipe.obj
    return open_image(source, storage_options=recipe.storage_options, **{
        k: v for k, v in kwargs.items()
        if k in ("axes", "data_group", "level", "reader") and v is not None})


def image_spec(image: xr.DataArray, opts: GridOptions, *, index: int, item: Any) -> GridSpec:
    """The grid of one opened image: ``opts``' lengths in its pixels
    (physical lengths converted with its scale), checked against its dims."""
    geometry = [opts.patch_size, opts.stride, opts.pad]
    if is_physical(*geometry):
        geometry = [physical_to_pixels(v, name, image=image, spatial_axes=opts.spatial_axes,
                                       mpp=opts.mpp, what=f"image {index} ({item_name(item)})")
                    for v, name in zip(geometry, ("patch_size", "stride", "pad"), strict=True)]
    return normalize_grid_params(
        *geometry, min_area=opts.min_area, spatial_axes=opts.spatial_axes,
        allow_incomplete_patches=opts.allow_incomplete_patches,
        image_dims=[str(d) for d in image.dims], image_shape=image.shape,
    )


@dataclass
class ImageWork:
    """What computing one image's rows takes (see :func:`image_rows`).

    Attributes
    ----------
    boxes : list of (start, stop)
        Runs of chunks, one grid task each.
    grid : dict
        The other keywords of the grid task (ROI, shapes, spec, geometry,
        mask scale and origin, image id).
    mask : dask array or None
        The mask in the grid's dim order.
    mask_mpp : float or None
        µm per pixel of a tissue mask made at ``mask_mpp``.
    blue_noise : tuple or None
        ``(roi_shape, spec, keywords)`` of :func:`blue_noise_starts`.
    """

    boxes: list
    grid: dict
    mask: Any = None
    mask_mpp: float | None = None
    blue_noise: tuple | None = None


def image_work(image: xr.DataArray, entry: Mapping[str, Any], spec: GridSpec, mask_item: Any,
               opts: GridOptions, *, index: int, item: Any, image_id: int,
               stacklevel: int = 3) -> ImageWork | None:
    """The grid tasks of one image (None, after a :class:`GridWarning`, when
    the image is smaller than a patch; ``stacklevel`` as
    :func:`warnings.warn`'s, counted from the caller); its mask is resolved
    (lazily)."""
    dims = spec.dims
    full_shape = {d: entry["shape"][d] for d in dims}
    chunk_shape = {d: entry["chunks"][d] for d in dims}
    roi_start = {d: entry["roi"].get(d, [0, 0])[0] for d in dims}
    roi_stop = {d: entry["roi"].get(d, [0, full_shape[d]])[1] for d in dims}
    roi_shape = {d: roi_stop[d] - roi_start[d] for d in dims}
    small = [d for d in dims if roi_shape[d] < spec.patch[d]]
    if small and not spec.allow_incomplete:
        warnings.warn(
            f"image {index} ({item_name(item)}) is smaller than the patch along "
            f"{small} ({ {d: roi_shape[d] for d in small} } < { {d: spec.patch[d] for d in small} }); "
            "it yields no patch. Use a smaller patch_size or allow_incomplete_patches=True",
            GridWarning, stacklevel=stacklevel)
        return None
    geo = {k: entry[k] for k in ("scale", "origin", "scale0", "origin0")}
    options = dict(opts.tissue_options or {})
    tissue = isinstance(mask_item, str) and mask_item == "tissue"
    if opts.mask_mpp is not None and tissue:
        options["mask_scale"] = mask_scale_for(image, float(opts.mask_mpp), index, item)
    mask = _resolve_mask(mask_item, image, item, options)
    work = ImageWork(boxes=task_boxes(roi_start, roi_stop, chunk_shape, dims,
                                      max(1, opts.chunks_per_task)),
                     grid={"roi_start": roi_start, "roi_shape": roi_shape,
                           "full_shape": full_shape, "chunk_shape": chunk_shape,
                           "spec": spec.to_dict(), "geo": geo, "mask_scale": None,
                           "mask_origin": None, "image_id": image_id})
    if mask is not None:
        if opts.mask_mpp is not None and tissue:
            work.mask_mpp = mask_mpp_of(mask)
        work.mask, work.grid["mask_scale"], work.grid["mask_origin"] = _mask_for_grid(
            mask, _full_image(image), dims, full_shape, index, item)
    if opts.blue_noise:
        work.blue_noise = (roi_shape, spec, {"seed": opts.seed + image_id,
                                             "allow_overlap": opts.allow_overlap})
    return work


def image_rows(work: ImageWork) -> list[dict[str, np.ndarray]]:
    """Compute one image's grid tasks here, in this thread (no graph):
    the parts :func:`zarrdask.grid.graph.assemble` orders."""
    mask = None if work.mask is None else mask_numpy(
        work.mask.compute(scheduler="sync") if hasattr(work.mask, "compute") else work.mask)
    candidates = None
    if work.blue_noise is not None:
        from .bluenoise import blue_noise_starts

        candidates = blue_noise_starts(*work.blue_noise[:2], **work.blue_noise[2])
    return [grid_task(start, stop, **work.grid, mask=mask, candidates=candidates)
            for start, stop in work.boxes]



def _mask_for_grid(mask: xr.DataArray, full: xr.DataArray, dims: Sequence[str],
                   full_shape: Mapping[str, int], index: int, item: Any):
    """The mask's dask array in the grid's dim order, with its scale and
    origin per grid dim. Grid dims of size 1 that the mask lacks (a 2-D mask
    of a single-plane ``z`` stack) are added with size 1."""
    from ..masks import mask_origin, mask_scale_factors
    from ..masks.align import spatial_dims

    mdims = list(spatial_dims(mask))
    missing = [d for d in dims if d not in mdims]
    extra = [d for d in mdims if d not in dims]
    if extra or any(full_shape[d] != 1 for d in missing) or len(mdims) != mask.ndim:
        raise MaskError(
            f"the mask of image {index} ({item_name(item)}) has dims {list(mask.dims)} but the "
            f"grid runs over {list(dims)}; pass a mask with the image's spatial dims only"
        )
    scale = {d: float(v) for d, v in mask_scale_factors(mask, full).items()}
    origin = {d: float(v) for d, v in mask_origin(mask, full).items()}
    data = mask.transpose(*[d for d in dims if d in mdims]).data
    for axis, d in enumerate(dims):
        if d in missing:
            data = data[(slice(None),) * axis + (None,)]
            scale[d], origin[d] = 1.0, 0.0
    return data, scale, origin
