"""``build_cohort``: the coordinate table of a whole cohort, built on the
workers and written as a partitioned folder table, incrementally.

Plan (client): expand the inputs (:mod:`zarrdask.grid.inputs`), look up each
input's image id in the previous table at ``out``, cut the inputs into
batches (:func:`_cuts`). Per batch (one task on a worker,
:func:`zarrdask.grid.cohort_task.cohort_task`): compute each image's content
key from the source's identity and modification stamp without opening it;
reuse its rows and images-table row from the previous table when the key is
unchanged, else open it, compute its mask and grid; write the batch's part
file and its images-table rows. Write: renumber after skipped images and
merge the images table (worker tasks, :mod:`zarrdask.grid.cohort_images`),
then the partitions and skipped tables, the manifest and the ``current``
link (client, :mod:`zarrdask.table_files`): readers see the previous table
until the new one is complete.

The client holds per image only its input item, its old image id while
planning, 32 bytes of content key and the rows' digest runs; entries and
rows stay on the workers and in the table's files.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from typing import Any

import pyarrow.parquet as pq

from .._version import __version__
from ..errors import GridParameterError, ZarrdaskError
from ..io.location import protocol_of
from ..table import digest_header, runs_digest
from ..table_files import check_writable, remove_old_versions, write_folder
from ..table_layout import FolderTable, write_side_tables
from .cohort_images import merge_images, merge_plan, remove_batches
from .cohort_task import cohort_task, empty_rows, item_token, shift_part
from .graph import run_tasks
from .image_task import GridWarning
from .inputs import expand_sources
from .options import GridOptions
from .plan import _absolute_item, _tissue_params

__all__ = ["build_cohort"]


# -- the client: plan, run, write ----------------------------------------------------

def _with_options(item: Any, storage_options: Mapping[str, Any] | None) -> Any:
    """A remote item with ``storage_options`` (a spec's own options win)."""
    if not storage_options:
        return item
    if isinstance(item, str) and protocol_of(item) != "file":
        return {"source": item, "storage_options": dict(storage_options)}
    if isinstance(item, Mapping) and not item.get("storage_options"):
        source = item.get("source", item.get("filename"))
        if isinstance(source, str) and protocol_of(source) != "file":
            return {**item, "storage_options": dict(storage_options)}
    return item


def _previous(out: str) -> tuple[FolderTable | None, dict[str, int]]:
    """The table at ``out`` (held while the new one is written) and, per
    input item, its image id there (the tasks compare its content key)."""
    try:
        previous = FolderTable(out) if FolderTable.applies(out) else None
    except ZarrdaskError:
        return None, {}
    if previous is None:
        return None, {}
    folder = os.path.join(previous.version, "_images")
    if "item" not in pq.read_schema(sorted(
            os.path.join(folder, n) for n in os.listdir(folder))[0]).names:
        return previous, {}
    table = pq.read_table(folder, columns=["image_id", "item"])
    return previous, dict(zip(table.column("item").to_pylist(),
                              table.column("image_id").to_pylist(), strict=True))


def _cuts(old_ids: list[int | None], images_per_task: int | None,
          previous: FolderTable | None) -> list[tuple[int, int]]:
    """The batches: ``(start, stop)`` input positions of each task.

    With ``images_per_task`` given, runs of that many images. By default,
    up to 256 images per task, fewer for small cohorts so that there are at
    least 16 tasks (a previous table's task size is kept when close, so
    unchanged batches keep their part files); new images (not in the
    previous table) are spread over at least 16 tasks too, so that the
    1 % new slides of a rebuild do not all land in one task.
    """
    n = len(old_ids)
    if images_per_task is not None:
        return [(a, min(a + images_per_task, n)) for a in range(0, n, images_per_task)]
    per_task = min(256, -(-n // 16))
    before = ((previous.manifest["meta"].get("build") or {}).get("images_per_task")
              if previous is not None else None)
    if isinstance(before, int) and per_task // 2 <= before <= 256:
        per_task = before
    new = sum(1 for i in old_ids if i is None)
    new_per_task = max(1, min(per_task, -(-new // 16)))
    cuts, start, fresh = [], 0, 0
    for i, old in enumerate(old_ids):
        fresh += old is None
        if i + 1 - start >= per_task or fresh >= new_per_task:
            cuts.append((start, i + 1))
            start, fresh = i + 1, 0
    if start < n:
        cuts.append((start, n))
    return cuts


def build_cohort(
    images: Any,
    *,
    out: str | os.PathLike,
    patch_size: Any,
    stride: Any = None,
    pad: Any = None,
    mpp: float | None = None,
    mask_mpp: float | None = None,
    min_area: float = 1,
    masks: str | None = None,
    allow_incomplete_patches: bool = False,
    sampler: str = "grid",
    seed: int = 0,
    spatial_axes: str = "ZYX",
    allow_overlap: bool = False,
    tissue_options: Mapping[str, Any] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    client: Any = None,
    images_per_task: int | None = None,
    on_error: str = "raise",
    progress: bool = False,
) -> FolderTable:
    """Build the coordinate table of a cohort on the workers, incrementally.

    Each task takes ``images_per_task`` images: it opens them, computes
    their masks and grids and writes their part file, on the worker; the
    client lists the inputs and gathers per-image summaries. The table at
    ``out`` (a partitioned folder table, ``docs/table.md``) is replaced
    atomically once complete. Rebuilding over a previous table recomputes
    only images whose content key changed (source, size/modification
    stamp, any option) and copies the rows of the others.

    Parameters
    ----------
    images : source, list, iterable, glob pattern or folder
        Paths, URLs or spec mappings (:func:`zarrdask.open_image`
        keywords plus ``source``); patterns (``"s3://bucket/cohort/*.zarr"``)
        and folders are expanded (:func:`zarrdask.grid.inputs.expand_sources`).
    out : path
        The table folder (local or on a file system the workers share).
    patch_size, stride, pad, mpp, mask_mpp, min_area, allow_incomplete_patches, sampler, seed, spatial_axes, allow_overlap, tissue_options
        As :func:`zarrdask.build_table` (:class:`~zarrdask.grid.options.GridOptions`);
        blue-noise seeds are ``seed`` plus the image's position in the inputs.
    masks : None or "tissue"
        No mask, or a tissue mask per image.
    storage_options : mapping, optional
        fsspec options for remote inputs (listing and opening).
    client : distributed.Client, optional
        Run the tasks on this cluster; default: local threads.
    images_per_task : int, optional
        Images per task (and per part file). Default: 256, or fewer for
        small cohorts so that there are at least 16 tasks; images new since
        the previous table are spread over at least 16 tasks as well.
    on_error : {"raise", "skip"}
        An image that cannot be opened: raise naming it, or skip it (listed
        in ``meta["skipped"]``).
    progress : bool
        Show a progress bar.

    Returns
    -------
    zarrdask.table_layout.FolderTable
        The new table, not loaded (``zarrdask.read_table(out)`` loads it;
        ``zarrdask.PatchDataset(out)`` reads it part by part). Its manifest
        holds ``meta["build"]``: images opened, reused and skipped.
    """
    import dask

    if on_error not in ("raise", "skip"):
        raise GridParameterError(f"on_error={on_error!r} is unknown; use 'raise' or 'skip'")
    if images_per_task is not None and (isinstance(images_per_task, bool) or not isinstance(
            images_per_task, int) or images_per_task < 1):
        raise GridParameterError(f"images_per_task={images_per_task!r}: pass an integer >= 1")
    opts = GridOptions(patch_size=patch_size, stride=stride, pad=pad, mpp=mpp, mask_mpp=mask_mpp,
                       min_area=min_area, masks=masks,
                       allow_incomplete_patches=allow_incomplete_patches, sampler=sampler,
                       seed=seed, spatial_axes=spatial_axes, allow_overlap=allow_overlap,
                       tissue_options=tissue_options or {})
    if masks == "tissue":
        _tissue_params(opts.tissue_options)  # unknown keys fail now
    items = [_absolute_item(_with_options(i, storage_options))
             for i in expand_sources(images, storage_options=storage_options)]
    if not items:
        raise GridParameterError("images is empty; pass at least one image source")
    out = os.path.abspath(os.fspath(out))
    check_writable(out)
    previous, known = _previous(out)
    info = None if previous is None else {"version": previous.version,
                                          "columns": previous.manifest.get("columns")}
    old_ids = [known.get(item_token(item)) for item in items]
    del known
    batches = [(part, [(i, items[i], old_ids[i]) for i in range(start, stop)], start)
               for part, (start, stop) in enumerate(
                   _cuts(old_ids, images_per_task, previous))]
    del old_ids
    result: dict[str, Any] = {}

    def write(folder: str) -> None:
        tag = hashlib.sha256(folder.encode()).hexdigest()[:16]
        tasks = [dask.delayed(cohort_task, pure=False)(folder, part, batch, opts, start, info,
                                                       on_error, dask_key_name=f"cohort-{tag}-{part}")
                 for part, batch, start in batches]
        summaries = run_tasks(tasks, client=client, progress=progress)
        del tasks
        _renumber(folder, summaries, client=client)
        result.update(_finish(folder, summaries, opts, previous, len(items)))

    try:
        write_folder(out, write, overwrite=True)
    finally:
        if previous is not None:
            previous.close()
            remove_old_versions(out)
    for note in result.get("warnings", [])[:5]:
        warnings.warn(note, GridWarning, stacklevel=2)
    return FolderTable(out)


def _renumber(folder: str, summaries: list[dict[str, Any]], *, client: Any) -> None:
    """Make image ids dense after skipped images: the part files of batches
    after a skip are renumbered, and the images table is merged from the
    batch files with the same shifts (on the workers)."""
    import dask

    offset, shifts = 0, []
    for s in summaries:
        s["delta"] = offset - s["first_id"]
        if s["delta"]:
            shifts.append(s)
            for key in ("image_min", "image_max"):
                if s["part"][key] >= 0:
                    s["part"][key] += s["delta"]
        offset += s["count"]
    tag = hashlib.sha256(folder.encode()).hexdigest()[:16]
    tasks = [dask.delayed(shift_part, pure=False)(folder, s["part"]["file"], s["delta"],
                                                  dask_key_name=f"shift-{tag}-{n}")
             for n, s in enumerate(shifts)]
    plan = merge_plan([s["count"] for s in summaries], [s["delta"] for s in summaries])
    tasks += [dask.delayed(merge_images, pure=False)(folder, k, parts, lo, hi,
                                                     dask_key_name=f"images-{tag}-{k}")
              for k, parts, lo, hi in plan]
    done = run_tasks(tasks, client=client, progress=False)
    for s, runs in zip(shifts, done, strict=False):
        s["runs"] = runs
    remove_batches(folder)


def _finish(folder: str, summaries: list[dict[str, Any]], opts: GridOptions,
            previous: FolderTable | None, n_items: int) -> dict[str, Any]:
    """Check the grids agree, then write the partitions and skipped tables
    and the manifest (the part files and the images table are written)."""
    skipped = [k for s in summaries for k in s["skipped"]]
    n_images = sum(s["count"] for s in summaries)
    if not n_images:
        raise GridParameterError(f"none of the {n_items} image(s) could be opened: "
                                 f"{skipped[:5]}")
    grids = {g for s in summaries for g in s["grids"]}
    if grids and previous is not None and any(s["reused"] for s in summaries):
        grids.add(json.dumps(previous.manifest["meta"]["grid"], sort_keys=True))  # reused rows'
    if len(grids) > 1:
        raise GridParameterError(
            f"the images do not share one grid ({sorted(grids)[:2]}...): different spatial "
            "dims, or µm lengths giving other pixel sizes; build one table per kind of image")
    if grids:
        grid = json.loads(grids.pop())
    elif previous is not None:
        grid = previous.manifest["meta"]["grid"]
    else:  # every image too small for a patch
        grid = {}
    parts, first_row = [], 0
    for s in summaries:
        part = dict(s["part"], first_row=first_row)
        first_row += part["rows"]
        parts.append(part)
    columns = summaries[0]["columns"]
    template = empty_rows(grid.get("dims", ["y", "x"]))[columns]
    rows_hash = runs_digest(digest_header(template, num_rows=first_row),
                            [s["runs"] for s in summaries])
    keys = hashlib.sha256(opts.key().encode())
    for s in summaries:
        blob = s["keys"]
        for start in range(0, len(blob), 32):
            keys.update(f"|{blob[start:start + 32].hex()}".encode())
    for skip in skipped:
        keys.update(f"|skipped:{skip['source']}".encode())
    inputs_hash = keys.hexdigest()
    table_hash = hashlib.sha256(f"{inputs_hash}|{rows_hash}".encode()).hexdigest()
    opened = sum(s["opened"] for s in summaries)
    reused = sum(s["reused"] for s in summaries)
    table_meta: dict[str, Any] = {
        "zarrdask_version": __version__,
        "schema_version": 1,
        "grid": grid,
        "sampler": "blue-noise" if opts.blue_noise else "grid",
        "seed": opts.seed,
        "allow_overlap": bool(opts.allow_overlap),
        "tissue_options": _tissue_params(opts.tissue_options) if opts.masks == "tissue" else {},
        "modalities": {},
        "per_image_modalities": ["images", "labels", "masks"],
        "label_classes": None,
        "inputs_hash": inputs_hash,
        "built_rows_hash": rows_hash,
        "hash": table_hash,
        "build": {"images_opened": opened, "images_reused": reused, "skipped": len(skipped),
                  "images_per_task": max(s["count"] + len(s["skipped"]) for s in summaries)},
    }
    if opts.mask_mpp is not None:
        table_meta["mask_mpp"] = {"asked": opts.mask_mpp}
    if opts.mpp is not None or any(isinstance(v, str) or isinstance(v, Mapping)
                                   for v in (opts.patch_size, opts.stride, opts.pad)):
        from .physical import is_physical, jsonable

        if opts.mpp is not None or is_physical(opts.patch_size, opts.stride, opts.pad):
            table_meta["physical"] = {"patch_size": jsonable(opts.patch_size),
                                      "stride": jsonable(opts.stride),
                                      "pad": jsonable(opts.pad), "mpp": opts.mpp}
    write_side_tables(folder, table_meta, n_images, skipped, parts, num_rows=first_row,
                      columns=columns, table_hash=table_hash)
    return {"warnings": [n for s in summaries for n in s["warnings"]]}
