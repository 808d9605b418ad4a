"""``build_table``: masks and patch grids of many images as one dask graph.

Three steps: the plan (:func:`zarrdask.grid.plan.plan_build`, on the
client: the inputs opened, their grids, entries and inputs hash), the
graph of per-image tasks (:mod:`zarrdask.grid.image_task`: per image at most
one mask task -- tissue detection on a low-resolution level, or a user
mask -- and one grid task per run of storage chunks, so one huge slide
spreads across workers), and the table written from the tasks' rows. Every
task is pure and deterministic: a task lost with a worker is recomputed
elsewhere and the table comes out the same. The grid and mask parameters
are one :class:`~zarrdask.grid.options.GridOptions`. For cohorts of
thousands of images, where opening every image on the client is the cost,
:func:`zarrdask.build_cohort` runs the per-image work on the workers.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import dask
import pandas as pd

from .._version import __version__
from ..errors import GridParameterError, TableError
from ..io.recipe import recipe_of
from ..masks.class_coverage import add_class_coverage
from ..table import PatchTable, read_table, rows_digest
from ..table_files import check_writable, is_folder_table
from .graph import assemble, run_tasks
from .image_task import GridWarning, grid_task, image_rows, image_spec, image_work, mask_numpy
from .options import GridOptions
from .plan import BuildPlan, plan_build
from .sources import item_name

__all__ = ["build_table", "GridWarning", "GridOptions", "image_spec", "image_work", "image_rows"]


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
    opts = GridOptions(patch_size=patch_size, stride=stride, pad=pad, mpp=mpp, mask_mpp=mask_mpp,
                       min_area=min_area, allow_incomplete_patches=allow_incomplete_patches,
                       sampler=sampler, seed=seed, spatial_axes=spatial_axes,
                       allow_overlap=allow_overlap, tissue_options=tissue_options or {},
                       chunks_per_task=chunks_per_task)
    if on_error not in ("raise", "skip"):
        raise GridParameterError(f"on_error={on_error!r} is unknown; use 'raise' or 'skip'")
    plan = plan_build(images, opts, masks=masks, labels=labels, on_error=on_error)
    if cache is not None:
        cache = os.fspath(cache)
        cached = _cached_table(cache, plan.table_hash)
        if cached is not None:
            return cached
        check_writable(cache)  # before any work, naming the target
    tasks, mask_mpps = _graph(plan, opts)
    parts = run_tasks(tasks, client=client, progress=progress)
    table = _table(plan, parts, mask_mpps, client=client)
    if cache is not None:
        table.to_parquet(cache)
    return table


def _graph(plan: BuildPlan, opts: GridOptions) -> tuple[list, list[float | None]]:
    """The grid tasks of every image (delayed; masks and blue-noise
    positions shared by an image's tasks under their own keys) and each
    image's tissue-mask resolution."""
    tasks = []
    mask_mpps: list[float | None] = [None] * len(plan.opened)
    for image_id, (index, item, image) in enumerate(plan.opened):
        work = image_work(image, plan.entries[image_id], plan.specs[image_id],
                          plan.mask_items[index], opts, index=index, item=item,
                          image_id=image_id, stacklevel=4)
        if work is None:
            continue
        mask_mpps[image_id] = work.mask_mpp
        tag = f"{plan.table_hash[:16]}-{image_id}"
        mask_task = candidates = None
        if work.mask is not None:
            mask_task = dask.delayed(mask_numpy)(work.mask, dask_key_name=f"mask-{tag}")
        if work.blue_noise is not None:
            from .bluenoise import blue_noise_starts

            candidates = dask.delayed(blue_noise_starts)(*work.blue_noise[:2],
                                                         **work.blue_noise[2],
                                                         dask_key_name=f"bluenoise-{tag}")
        for n, (box_start, box_stop) in enumerate(work.boxes):
            tasks.append(dask.delayed(grid_task, pure=True)(
                box_start, box_stop, **work.grid, mask=mask_task, candidates=candidates,
                dask_key_name=f"grid-{tag}-{n}"))
    return tasks, mask_mpps


def _table(plan: BuildPlan, parts: list[dict], mask_mpps: list[float | None], *,
           client: Any) -> PatchTable:
    """The table of the grid tasks' rows and the plan's metadata."""
    grid, params = plan.grid, plan.params
    frame = add_class_coverage(assemble(parts, grid.dims), plan.entries, plan.label_entries,
                               grid.patch, client=client)
    counts = frame.groupby("image_id").size() if len(frame) else pd.Series(dtype=int)
    for image_id, (index, item, _image) in enumerate(plan.opened):
        if counts.get(image_id, 0) == 0 and plan.mask_items[index] is not None:
            warnings.warn(
                f"the mask of image {index} ({item_name(item)}) selects no patch (it covers "
                "nothing, or less than min_area of every patch window); check the mask or "
                "lower min_area", GridWarning, stacklevel=3)
    meta = {
        "zarrdask_version": __version__,
        "schema_version": 1,
        **params,
        "images": plan.entries,
        "modalities": {"images": plan.entries, "labels": plan.label_entries,
                       "masks": plan.mask_desc},
        "label_classes": plan.label_classes,
        "skipped": plan.skipped,
        **({"mask_mpp": {"asked": params["mask_mpp"], "images": mask_mpps}}
           if "mask_mpp" in params else {}),
        "inputs_hash": plan.table_hash,
        "built_rows_hash": rows_digest(frame),
    }
    sources = [None if getattr(recipe_of(image), "location", None) is not None else image
               for _, _, image in plan.opened]
    return PatchTable(frame, meta, sources=sources)


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
