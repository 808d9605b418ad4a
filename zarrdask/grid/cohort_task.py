"""The per-batch task of :func:`zarrdask.build_cohort` (runs on a worker):
content keys, reuse of a previous table's rows, new images' grids, the
batch's part file.

See :mod:`zarrdask.grid.cohort` for the whole build.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .._version import __version__
from ..errors import GridParameterError, ZarrdaskError
from ..io.location import get_filesystem, protocol_of, redact_options
from ..io.recipe import open_facts
from ..table import _DTYPES, position_columns, row_runs, source_entry
from ..table_layout import (
    PARTITIONS,
    _read_images,
    image_row,
)
from .build import GridWarning, image_rows, image_spec, image_work
from .graph import assemble
from .options import GridOptions
from .sources import _stat_stamp, _walk_stamp, digest, item_name, open_item

__all__ = ["cohort_task", "content_key", "item_token", "shift_part", "empty_rows"]

_MASKS = "modality.masks"
_LABELS = "modality.labels"


def item_token(item: Any) -> str:
    """The identity of an input item: its path/URL, or its spec as JSON
    (storage options redacted)."""
    if isinstance(item, Mapping):
        spec = dict(item)
        if "storage_options" in spec:
            spec["storage_options"] = redact_options(spec["storage_options"])
        return json.dumps(spec, sort_keys=True, default=repr)
    return str(item)


def _stamp(item: Any) -> list:
    """Size and modification stamp of an item's source, without opening it:
    local files their size and mtime, local stores (folders) file count,
    total size and newest mtime, remote objects their ETag/size/mtime (of
    the store's metadata document)."""
    source = item.get("source", item.get("filename")) if isinstance(item, Mapping) else item
    options = dict(item.get("storage_options") or {}) if isinstance(item, Mapping) else {}
    if not isinstance(source, str | os.PathLike):
        raise GridParameterError(
            f"build_cohort takes paths, URLs or specs with a 'source'; {item_name(item)} is "
            "in memory: use zarrdask.build_table for in-memory images")
    source = os.fspath(source)
    if protocol_of(source) == "file":
        return _walk_stamp(source) if os.path.isdir(source) else _stat_stamp(source)
    fs, path = get_filesystem(source, options)
    for name in ("zarr.json", ".zattrs", ".zgroup", ".zarray", ""):
        target = f"{path.rstrip('/')}/{name}".rstrip("/")
        try:
            info = fs.info(target)
        except FileNotFoundError:
            continue
        return [source, info.get("ETag"), info.get("size"), str(info.get("LastModified",
                                                                           info.get("mtime")))]
    return [source, None]


def content_key(item: Any, opts: GridOptions | str) -> str:
    """What decides an image's rows: its source identity and stamp, every
    grid and mask option (``opts`` or its :meth:`~GridOptions.key`), and the
    zarrdask version (sha256)."""
    options = opts if isinstance(opts, str) else opts.key()
    return digest([item_token(item), _stamp(item), options, __version__])


# -- the per-batch task (runs on a worker) ----------------------------------------

def empty_rows(dims: list[str]) -> pd.DataFrame:
    cols = ["image_id", *position_columns(dims), "chunk_id", "coverage"]
    return pd.DataFrame({c: np.zeros(0, dtype=_DTYPES[c]) for c in cols})


def _new_image(index: int, item: Any, opts: GridOptions, image_id: int
               ) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any], float | None]:
    import dask

    # one image's work runs in this task's thread: computes inside it (the
    # tissue mask's) are synchronous, no thread pool per task thread
    with dask.config.set(scheduler="sync"):
        return _compute_image(index, item, opts, image_id)


def _compute_image(index: int, item: Any, opts: GridOptions, image_id: int
                   ) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any], float | None]:
    image = open_item(item, mpp=opts.mpp)
    spec = image_spec(image, opts, index=index, item=item)
    entry = source_entry(image, image_id=image_id)
    entry["index"] = index
    entry["mpp"] = open_facts(image).get("mpp")
    work = image_work(image, entry, spec, opts.masks, opts, index=index, item=item,
                      image_id=image_id)
    frame = assemble(image_rows(work) if work is not None else [], spec.dims)
    return entry, frame, spec.to_dict(), None if work is None else work.mask_mpp


def _reused(previous: Mapping[str, Any] | None, old_ids: list[int]
            ) -> tuple[dict[int, pd.Series], dict[int, pd.DataFrame]]:
    """Images-table rows and patch rows of ``old_ids`` in the previous table."""
    if previous is None or not old_ids:
        return {}, {}
    version = previous["version"]
    ids = np.asarray(sorted(old_ids), dtype=np.int64)
    images = _read_images(version, ids)
    parts = pq.read_table(os.path.join(version, PARTITIONS)).to_pandas()
    frames = []
    for _, part in parts.iterrows():
        if part["rows"] and np.any((ids >= part["image_min"]) & (ids <= part["image_max"])):
            frame = pq.read_table(os.path.join(version, part["file"]),
                                  filters=[("image_id", "in", ids.tolist())]).to_pandas()
            frames.append(frame)
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"image_id": []})
    by_id = {int(k): g for k, g in rows.groupby("image_id", sort=False)}
    return ({int(r["image_id"]): r for _, r in images.iterrows()}, by_id)


def cohort_task(folder: str, part: int, batch: list[tuple[int, Any, Any]], opts: GridOptions,
                first_id: int, previous: Mapping[str, Any] | None, on_error: str
                ) -> dict[str, Any]:
    """Compute (or reuse) the rows of one batch of images and write its part file.

    Parameters
    ----------
    folder : str
        The table version being written.
    part : int
        Index of the part file.
    batch : list of (index, item, previous)
        Input position, item, and ``(old image_id, old content key)`` in the
        previous table or None.
    opts : GridOptions
    first_id : int
        ``image_id`` of the batch's first image (its input position).
    previous : mapping or None
        ``{"version": folder}`` of the previous table.
    on_error : {"raise", "skip"}

    Returns
    -------
    dict
        Summary: part record, images-table rows, skipped images, the rows'
        digest runs, counts of opened and reused images, warnings.
    """
    rows_out, records, skipped, notes = [], [], [], []
    opened = reused = 0
    keys = {}
    options_key = opts.key()
    for index, item, _old in batch:
        try:
            keys[index] = content_key(item, options_key)
        except (ZarrdaskError, OSError) as exc:
            keys[index] = exc
    wanted = [old[0] for index, _item, old in batch
              if old is not None and not isinstance(keys[index], BaseException)
              and old[1] == keys[index]]
    old_images, old_rows = _reused(previous, wanted)
    next_id = first_id
    grids: set[str] = set()
    for index, item, old in batch:
        key = keys[index]
        try:
            if isinstance(key, BaseException):
                raise key
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", GridWarning)
                if old is not None and old[0] in old_images and old[1] == key:
                    row = old_images[old[0]]
                    entry = json.loads(row["entry"])
                    frame = old_rows.get(old[0])
                    if frame is None:  # an image without patches
                        frame = empty_rows(entry_grid_dims(entry))
                    frame = frame.assign(image_id=np.int32(next_id))
                    masks, mask_mpp, grid_dict = row.get(_MASKS), row.get("mask_mpp"), None
                    reused += 1
                else:
                    entry, frame, grid_dict, mask_mpp = _new_image(index, item, opts, next_id)
                    masks = None if opts.masks is None else json.dumps(opts.masks)
                    opened += 1
            notes += [str(w.message) for w in caught]
        except ZarrdaskError as exc:
            if on_error == "raise":
                raise type(exc)(f"image {index} ({item_name(item)}): {exc}") from exc
            skipped.append({"index": index, "source": item_name(item), "error": str(exc)})
            continue
        entry["image_id"] = next_id
        entry["content_key"] = key
        entry["item"] = item_token(item)
        record = image_row(entry)
        record[_LABELS] = None
        record[_MASKS] = _value(masks)
        record["mask_mpp"] = None if _value(mask_mpp) is None else float(mask_mpp)
        record["item"] = entry["item"]
        records.append(record)
        rows_out.append(frame)
        if grid_dict is not None:
            grids.add(json.dumps(grid_dict, sort_keys=True))
        next_id += 1
    name = f"part-{part:06d}.parquet"
    frame = _part_frame(rows_out)
    _write_atomic(frame, os.path.join(folder, name))
    ids = frame["image_id"].to_numpy()
    return {"part": {"file": name, "rows": len(frame), "first_row": 0,
                     "image_min": int(ids.min()) if len(ids) else -1,
                     "image_max": int(ids.max()) if len(ids) else -1},
            "records": records, "skipped": skipped, "runs": row_runs(frame),
            "first_id": first_id, "count": next_id - first_id, "opened": opened,
            "reused": reused, "warnings": notes, "grids": sorted(grids),
            "columns": list(frame.columns)}


def _value(value: Any) -> Any:
    """``value``, or None for a missing one (None, NaN, pandas NA)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value


def entry_grid_dims(entry: Mapping[str, Any]) -> list[str]:
    """The spatial dims of an image entry (for an empty frame)."""
    return [d for d in ("z", "y", "x") if d in (entry.get("dims") or [])]


def _part_frame(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f.columns)]
    frame = pd.concat(frames, ignore_index=True) if frames else empty_rows(["y", "x"])
    return frame.astype({c: t for c, t in _DTYPES.items() if c in frame.columns})


def _write_atomic(frame: pd.DataFrame, path: str) -> None:
    """Write a part file under a temporary name and rename it: a task run
    twice (a worker lost mid-build) leaves one whole file."""
    tmp = f"{path}.tmp-{os.getpid()}-{id(frame)}"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
    os.replace(tmp, path)


def shift_part(folder: str, name: str, delta: int) -> dict[str, Any]:
    """Renumber the images of a part file by ``delta`` (images skipped in
    earlier batches); returns its new digest runs."""
    path = os.path.join(folder, name)
    frame = pq.read_table(path).to_pandas()
    frame["image_id"] = (frame["image_id"].astype(np.int64) + delta).astype(np.int32)
    _write_atomic(frame, path)
    return row_runs(frame)
