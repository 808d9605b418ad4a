"""``build_table``: masks and patch grids of many images as one dask graph.

The graph has, per image, at most one mask task (tissue detection on a
low-resolution level, or a user mask) and one grid task per run of storage
chunks, so one huge slide spreads across workers. Every task is pure and
deterministic: a task lost with a worker is recomputed elsewhere and the
table comes out the same. The integer geometry lives in
:mod:`zarrdask.grid.geometry`, the task layout and execution in
:mod:`zarrdask.grid.graph`; this module only wires them.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dask
import numpy as np
import pandas as pd
import xarray as xr

from .._version import __version__
from ..errors import GridParameterError, MaskError, TableError, ZarrdaskError
from ..io.recipe import open_facts, recipe_of
from ..masks.class_coverage import add_class_coverage, table_class_map
from ..table import (
    PatchTable,
    absolute_location,
    read_table,
    rows_digest,
    source_entry,
)
from ..table_files import check_writable, is_folder_table
from .geometry import (
    GridSpec,
    chunk_ids,
    grid_starts_in_box,
    keep_patches,
    normalize_grid_params,
    window_coverage,
)
from .graph import assemble, run_tasks, task_boxes
from .inputs import expand_sources
from .options import GridOptions
from .physical import (
    check_mask_mpp,
    check_same_pixels,
    is_physical,
    jsonable,
    mask_mpp_of,
    mask_scale_for,
    physical_to_pixels,
)
from .sources import (
    _stat_stamp,
    digest,
    fingerprint,
    item_name,
    item_source_and_options,
    open_item,
    per_image,
)

__all__ = ["build_table", "GridWarning", "GridOptions", "image_spec", "image_work", "image_rows"]


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


def _grid_task(box_start: dict, box_stop: dict, *, roi_start: dict, roi_shape: dict,
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


def _mask_numpy(mask: Any) -> np.ndarray:
    return np.asarray(mask, dtype=bool)


# -- graph construction -----------------------------------------------------

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
               opts: GridOptions, *, index: int, item: Any, image_id: int) -> ImageWork | None:
    """The grid tasks of one image (None, after a :class:`GridWarning`, when
    the image is smaller than a patch); its mask is resolved (lazily)."""
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
            GridWarning, stacklevel=3)
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
    mask = None if work.mask is None else _mask_numpy(
        work.mask.compute(scheduler="sync") if hasattr(work.mask, "compute") else work.mask)
    candidates = None
    if work.blue_noise is not None:
        from .bluenoise import blue_noise_starts

        candidates = blue_noise_starts(*work.blue_noise[:2], **work.blue_noise[2])
    return [_grid_task(start, stop, **work.grid, mask=mask, candidates=candidates)
            for start, stop in work.boxes]


def build_table(
    images: Any,
    *,
    patch_size: int | str | Sequence[int | str] | Mapping[str, int | str],
    stride: int | str | Sequence[int | str] | Mapping[str, int | str] | None = None,
    pad: int | str | Sequence[int | str] | Mapping[str, int | str] | None = None,
    mpp: float | None = None,
    mask_mpp: float | None = None,
    min_area: float = 1,
    masks: Any = None,
    labels: Any = None,
    allow_incomplete_patches: bool = False,
    sampler: str = "grid",
    seed: int | None = None,
    client: Any = None,
    progress: bool = False,
    spatial_axes: str = "ZYX",
    allow_overlap: bool = False,
    tissue_options: Mapping[str, Any] | None = None,
    on_error: str = "raise",
    cache: str | os.PathLike | None = None,
    chunks_per_task: int = 16,
) -> PatchTable:
    """Compute the coordinate table of one or many images as one dask graph.

    Parameters
    ----------
    images : source, list or iterable of sources, glob pattern or folder
        Paths/URLs, in-memory arrays, ``xarray.DataArray`` objects, or specs
        (mappings with ``source`` and any :func:`zarrdask.open_image`
        keyword: ``axes``, ``data_group``, ``roi``, ``level``, ``mpp``,
        ``storage_options``). Glob patterns (``"slides/*.zarr"``) and
        folders of images are expanded
        (:func:`zarrdask.grid.inputs.expand_sources`). For cohorts of
        thousands of images use :func:`zarrdask.build_cohort`.
    patch_size, stride, pad : int, str, sequence or mapping
        Patch geometry in pixels of the level that is read, or in
        micrometres (``"128um"``, ``{"y": "64um", "x": "64um"}``) on images
        with a physical scale (:mod:`zarrdask.grid.physical`; see
        ``docs/grid.md``); ``stride`` defaults to ``patch_size``, ``pad`` to 0.
    mpp : float, optional
        Read every image at this resolution (µm per pixel): the level is
        chosen as ``open_image(..., mpp=)`` does. A spec with its own
        ``level`` or ``mpp`` keeps it.
    mask_mpp : float, optional
        Resolution (µm per pixel) of the tissue masks (``masks="tissue"``):
        each image's ``mask_scale`` becomes its level-0 µm/px divided by
        ``mask_mpp``, so scans at 0.25 and 0.5 µm/px get the same physical
        mask. Not with ``tissue_options["mask_scale"]``.
    min_area : float
        Below 1: the fraction of the patch window the mask must cover; from 1:
        the number of covered image pixels (default 1: any coverage).
    masks : None, "tissue", mask or list
        Per image (or one for all): ``"tissue"`` computes a tissue mask on a
        low-resolution level; an array, path, DataArray or callable is a user
        mask at any resolution, aligned through physical coordinates.
    labels : None, source or list
        Label sources recorded in the table for training (read at their own
        resolution by :class:`zarrdask.PatchDataset`); ``{"weak": value}`` is
        a per-image label.
    allow_incomplete_patches : bool
        Also place patches that run past the border (padded at read time).
    sampler : {"grid", "blue-noise"}
        Regular grid, or seeded Poisson-disc (blue-noise) positions.
    seed : int, optional
        Seed of the blue-noise sampler (default 0).
    client : distributed.Client, optional
        Run the graph on this cluster; default: local threads.
    progress : bool
        Show a progress bar.
    spatial_axes : str
        Axes patches may span (zarrdataset's ``spatial_axes``).
    allow_overlap : bool
        Blue noise only: allow patches to overlap.
    tissue_options : mapping, optional
        Keywords of :func:`zarrdask.tissue_mask` (``mask_scale``,
        ``min_size``, ``area_threshold``, ``thresh``).
    on_error : {"raise", "skip"}
        What to do with an image that cannot be opened: raise (naming it) or
        skip it and report it in ``table.meta["skipped"]``.
    cache : path, optional
        A Parquet path: the table stored there is returned without
        recomputing when it was built from the same inputs and parameters
        and its rows are those the build produced (not a filtered copy);
        otherwise the table is built and written there (an unreadable or
        filtered table there is replaced, with a :class:`GridWarning`). The
        location is checked for writing before any work.
    chunks_per_task : int
        Storage chunks per grid task.

    Returns
    -------
    PatchTable
    """
    if sampler not in ("grid", "blue-noise", "bluenoise"):
        raise GridParameterError(f"sampler={sampler!r} is unknown; use 'grid' or 'blue-noise'")
    if on_error not in ("raise", "skip"):
        raise GridParameterError(f"on_error={on_error!r} is unknown; use 'raise' or 'skip'")
    items = [_absolute_item(item) for item in expand_sources(images)]
    if not items:
        raise GridParameterError("images is empty; pass at least one image source")
    mask_items = [m if isinstance(m, str) and m == "tissue" else _absolute_item(m)
                  for m in per_image(masks, len(items), "masks")]
    label_items = [_absolute_item(m) for m in per_image(labels, len(items), "labels")]
    seed = 0 if seed is None else int(seed)
    if cache is not None:
        cache = os.fspath(cache)

    opened: list[tuple[int, Any, xr.DataArray]] = []
    skipped: list[dict[str, str]] = []
    for index, item in enumerate(items):
        try:
            opened.append((index, item, open_item(item, mpp=mpp)))
        except ZarrdaskError as exc:
            if on_error == "raise":
                raise type(exc)(f"image {index} ({item_name(item)}) of {len(items)}: {exc}") from exc
            skipped.append({"index": index, "source": item_name(item), "error": str(exc)})
            warnings.warn(f"skipping image {index} ({item_name(item)}): {exc}", GridWarning,
                          stacklevel=2)
    if not opened:
        raise GridParameterError(f"none of the {len(items)} image(s) could be opened: {skipped}")

    physical = is_physical(patch_size, stride, pad)
    opts = GridOptions(patch_size=patch_size, stride=stride, pad=pad, mpp=mpp, mask_mpp=mask_mpp,
                       min_area=min_area, allow_incomplete_patches=allow_incomplete_patches,
                       sampler=sampler, seed=seed, spatial_axes=spatial_axes,
                       allow_overlap=allow_overlap, tissue_options=tissue_options or {},
                       chunks_per_task=chunks_per_task)
    specs = [image_spec(image, opts, index=index, item=item) for index, item, image in opened]
    if len({s.dims for s in specs}) > 1:
        raise GridParameterError(
            "the images do not share the same spatial dims "
            f"({sorted({s.dims for s in specs})}); build one table per kind of image"
        )
    if physical:
        check_same_pixels(specs, opened)
    grid = specs[0]
    params = {
        "grid": grid.to_dict(), "sampler": "blue-noise" if sampler != "grid" else "grid",
        "seed": seed, "allow_overlap": bool(allow_overlap),
        "tissue_options": _tissue_params(tissue_options) if "tissue" in [
            m for m in mask_items if isinstance(m, str)] else {},
    }
    if mask_mpp is not None:
        params["mask_mpp"] = check_mask_mpp(mask_mpp, tissue_options)
    if physical or mpp is not None:
        params["physical"] = {"patch_size": jsonable(patch_size), "stride": jsonable(stride),
                              "pad": jsonable(pad), "mpp": mpp}

    # -- metadata and hash (no pixel is read) --
    entries, label_entries, mask_desc, prints = [], [], [], []
    for image_id, (index, item, image) in enumerate(opened):
        entry = source_entry(image, image_id=image_id)
        entry["index"] = index
        entry["mpp"] = open_facts(image).get("mpp")
        entries.append(entry)
        prints.append(fingerprint(image))
        mask_item = mask_items[index]
        mask_desc.append(_describe(mask_item))
        label_entries.append(_label_entry(label_items[index], image, index=index,
                                          image_name=item_name(item)))
    table_hash = digest({"params": params, "images": prints, "masks": [
        _mask_token(m) for m in (mask_items[i] for i, _, _ in opened)], "labels": label_entries,
        "version": __version__})
    label_classes = table_class_map(label_entries)  # one class map per table, checked early
    if cache is not None:
        cached = _cached_table(cache, table_hash)
        if cached is not None:
            return cached
        check_writable(cache)  # before any work, naming the target

    # -- the graph --
    tasks = []
    mask_mpps: list[float | None] = [None] * len(opened)
    for image_id, (index, item, image) in enumerate(opened):
        work = image_work(image, entries[image_id], specs[image_id], mask_items[index], opts,
                          index=index, item=item, image_id=image_id)
        if work is None:
            continue
        mask_mpps[image_id] = work.mask_mpp
        tag = f"{table_hash[:16]}-{image_id}"
        mask_task = candidates = None
        if work.mask is not None:
            mask_task = dask.delayed(_mask_numpy)(work.mask, dask_key_name=f"mask-{tag}")
        if work.blue_noise is not None:
            from .bluenoise import blue_noise_starts

            candidates = dask.delayed(blue_noise_starts)(*work.blue_noise[:2],
                                                         **work.blue_noise[2],
                                                         dask_key_name=f"bluenoise-{tag}")
        for n, (box_start, box_stop) in enumerate(work.boxes):
            tasks.append(dask.delayed(_grid_task, pure=True)(
                box_start, box_stop, **work.grid, mask=mask_task, candidates=candidates,
                dask_key_name=f"grid-{tag}-{n}"))

    parts = run_tasks(tasks, client=client, progress=progress)
    frame = add_class_coverage(assemble(parts, grid.dims), entries, label_entries, grid.patch,
                               client=client)
    counts = frame.groupby("image_id").size() if len(frame) else pd.Series(dtype=int)
    for image_id, (index, item, _image) in enumerate(opened):
        if counts.get(image_id, 0) == 0 and mask_items[index] is not None:
            warnings.warn(
                f"the mask of image {index} ({item_name(item)}) selects no patch (it covers "
                "nothing, or less than min_area of every patch window); check the mask or "
                "lower min_area", GridWarning, stacklevel=2)
    meta = {
        "zarrdask_version": __version__,
        "schema_version": 1,
        **params,
        "images": entries,
        "modalities": {"images": entries, "labels": label_entries, "masks": mask_desc},
        "label_classes": label_classes,
        "skipped": skipped,
        **({"mask_mpp": {"asked": params["mask_mpp"], "images": mask_mpps}}
           if mask_mpp is not None else {}),
        "inputs_hash": table_hash,
        "built_rows_hash": rows_digest(frame),
    }
    sources = [None if getattr(recipe_of(image), "location", None) is not None else image
               for _, _, image in opened]
    table = PatchTable(frame, meta, sources=sources)
    if cache is not None:
        table.to_parquet(cache)
    return table


def _absolute_item(item: Any) -> Any:
    """An image/mask/label item whose local path is absolute, so that dask
    workers and later readers in another working directory find it."""
    if isinstance(item, str | os.PathLike):
        return absolute_location(item)
    if isinstance(item, Mapping):
        out = dict(item)
        for key in ("source", "filename"):
            if isinstance(out.get(key), str | os.PathLike):
                out[key] = absolute_location(out[key])
        return out
    return item


def _cached_table(cache: str, table_hash: str) -> PatchTable | None:
    """The table stored at ``cache`` when it is the one these inputs build,
    else None (after a warning when the file is unreadable or was filtered)."""
    if not os.path.lexists(cache):
        return None
    try:
        cached = read_table(cache)
    except TableError as exc:
        if os.path.isdir(cache) and not is_folder_table(cache):
            raise  # never overwrite a folder that holds something else
        warnings.warn(f"cache={cache} could not be read; rebuilding it. The error: {exc}",
                      GridWarning, stacklevel=3)
        return None
    if cached.meta.get("inputs_hash") != table_hash or "built_rows_hash" not in cached.meta:
        return None  # other inputs or parameters, or an older zarrdask: rebuild, as documented
    if not cached.is_as_built:
        warnings.warn(
            f"cache={cache} holds a table derived from this build ({len(cached)} rows: filtered "
            "or edited after build_table); rebuilding the full table and overwriting it. Write "
            "filtered tables to another path", GridWarning, stacklevel=3)
        return None
    return cached


def _tissue_params(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Tissue-mask keywords with :func:`zarrdask.tissue_mask`'s defaults
    filled in, so that spelling out a default does not change the hash."""
    import inspect

    from ..masks import tissue_mask

    params = {name: p.default for name, p in inspect.signature(tissue_mask).parameters.items()
              if p.kind is p.KEYWORD_ONLY and name in ("mask_scale", "min_size",
                                                       "area_threshold", "thresh")}
    unknown = set(options or {}) - set(params) - {"channel_dim", "axes", "data_group",
                                                   "storage_options"}
    if unknown:
        raise GridParameterError(
            f"tissue_options has unknown keys {sorted(unknown)}; use {sorted(params)}")
    params.update({k: v for k, v in (options or {}).items() if k in params})
    return params


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


def _describe(mask_item: Any) -> Any:
    if mask_item is None:
        return None
    if isinstance(mask_item, str):
        return mask_item if mask_item == "tissue" else {"source": mask_item}
    if isinstance(mask_item, xr.DataArray):
        recipe = recipe_of(mask_item)
        return {"source": recipe.public() if recipe is not None else "<in-memory>"}
    if callable(mask_item):
        return {"callable": getattr(mask_item, "__qualname__", repr(mask_item))}
    return {"source": f"<in-memory {type(mask_item).__name__}>"}


def _mask_token(mask_item: Any) -> Any:
    from dask.base import tokenize

    if mask_item is None or isinstance(mask_item, str):
        from ..masks.annotations import is_annotations

        return [mask_item, _stat_stamp(mask_item)] if is_annotations(mask_item) else mask_item
    if isinstance(mask_item, xr.DataArray):
        return fingerprint(mask_item) if recipe_of(mask_item) else tokenize(mask_item.data)
    return tokenize(mask_item)


def _label_entry(label_item: Any, image: xr.DataArray, *, index: int = 0,
                 image_name: str = "") -> Any:
    """The table entry of an image's labels, placed in the image's space.

    Labels with coordinates in the image's units keep them; labels without
    (numpy/dask/zarr arrays, files without spatial metadata) span the image's
    whole stored array (:func:`zarrdask.masks.placement.stored_placement`,
    the rule masks follow). The entry's ``scale``/``origin`` (and
    ``scale0``/``origin0``, mapped the same way) are in the image's physical
    space, so :class:`zarrdask.PatchDataset` reads the label box under each
    patch.
    """
    if label_item is None:
        return None
    if isinstance(label_item, Mapping) and "weak" in label_item:
        return {"weak": label_item["weak"]}
    from ..masks.annotations import annotation_entry
    from ..masks.placement import stored_placement

    labels = open_item(label_item, like=image)
    entry = {**source_entry(labels), **annotation_entry(labels)}
    try:
        placement = stored_placement(labels, image, what="labels", source=item_name(label_item))
    except MaskError as exc:
        raise MaskError(f"labels of image {index} ({image_name}): {exc}") from exc
    for d, (origin, size) in placement.items():
        # the affine map from the labels' own space to the image's, applied to
        # the read level and to level 0 alike
        factor = size / float(entry["scale"][d])
        shift = origin - factor * float(entry["origin"][d])
        entry["scale"][d] = size
        entry["origin"][d] = origin
        entry["scale0"][d] = factor * float(entry["scale0"][d])
        entry["origin0"][d] = shift + factor * float(entry["origin0"][d])
    return entry


