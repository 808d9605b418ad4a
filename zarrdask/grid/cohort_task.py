"""The per-batch task of :func:`zarrdask.build_cohort` (runs on a worker):
content keys, reuse of a previous table's rows, new images' grids, the
batch's part file.

See :mod:`zarrdask.grid.cohort` for the whole build.
"""

from __future__ import annotations

import json
import os
import shutil
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
from ..table_layout import PARTITIONS, image_row
from .cohort_images import read_images_rows, write_atomic, write_batch_images
from .graph import assemble
from .image_task import GridWarning, image_rows, image_spec, image_work
from .options import GridOptions
from .sources import _stat_stamp, _walk_stamp, digest, item_name, open_item

__all__ = ["cohort_task", "content_key", "item_token", "shift_part", "empty_rows"]

_MASKS = "modality.masks"
_LABELS = "modality.labels"
_NOTES = 5  # warnings a task returns (the client shows the first few)


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


def _old_parts(previous: Mapping[str, Any]) -> pd.DataFrame:
    return pq.read_table(os.path.join(previous["version"], PARTITIONS)).to_pandas()


def _old_rows(previous: Mapping[str, Any], parts: pd.DataFrame, ids: np.ndarray
              ) -> pd.DataFrame | None:
    """The patch rows of the images ``ids`` (sorted) in the previous table,
    in its order (whole images: their part files, filtered)."""
    if not len(ids):
        return None
    lo, hi = int(ids[0]), int(ids[-1])
    frames = []
    for part in parts.itertuples(index=False):
        if part.rows and part.image_max >= lo and part.image_min <= hi:
            frame = pq.read_table(os.path.join(previous["version"], part.file),
                                  filters=[("image_id", "in", ids.tolist())]).to_pandas()
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else None


def _linkable(parts: pd.DataFrame, first: int, last: int) -> str | None:
    """The previous table's part file holding exactly the rows of images
    ``first..last`` (and no other), if there is one."""
    hit = parts[(parts["rows"] > 0) & (parts["image_max"] >= first) & (parts["image_min"] <= last)]
    if len(hit) == 1 and hit["image_min"].iloc[0] >= first and hit["image_max"].iloc[0] <= last:
        return str(hit["file"].iloc[0])
    return None


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _reused_record(row: dict[str, Any], image_id: int) -> dict[str, Any]:
    """A previous images-table row under its new image id."""
    record = dict(row)
    if int(record["image_id"]) != image_id:
        entry = json.loads(record["entry"])
        entry["image_id"] = image_id
        record["entry"] = json.dumps(entry, separators=(",", ":"))
        record["image_id"] = image_id
    return record


def cohort_task(folder: str, part: int, batch: list[tuple[int, Any, Any]], opts: GridOptions,
                first_id: int, previous: Mapping[str, Any] | None, on_error: str
                ) -> dict[str, Any]:
    """Compute (or reuse) the rows of one batch of images; write its part
    file and its images-table rows (a batch file,
    :mod:`zarrdask.grid.cohort_images`).

    Parameters
    ----------
    folder : str
        The table version being written.
    part : int
        Index of the part file.
    batch : list of (index, item, previous)
        Input position, item, and the item's image id in the previous table
        (None: not in it); its rows are reused when its content key there
        is the one computed now.
    opts : GridOptions
    first_id : int
        ``image_id`` of the batch's first image (its input position).
    previous : mapping or None
        ``{"version": folder, "columns": [...]}`` of the previous table.
    on_error : {"raise", "skip"}

    Returns
    -------
    dict
        Summary (small, whatever the batch holds): part record, skipped
        images, the rows' digest runs, the content keys (32 bytes per
        image), counts of images opened and reused, the first warnings.
    """
    options_key = opts.key()
    keys: dict[int, Any] = {}
    for index, item, _old in batch:
        try:
            keys[index] = content_key(item, options_key)
        except (ZarrdaskError, OSError) as exc:
            keys[index] = exc
    candidates = {index: old for index, _item, old in batch
                  if old is not None and not isinstance(keys[index], BaseException)}
    old_images = read_images_rows(previous["version"], list(candidates.values())) if (
        candidates) else {}
    reuse = {index: old for index, old in candidates.items()
             if old in old_images and old_images[old]["content_key"] == keys[index]}
    parts = _old_parts(previous) if reuse else None
    name = f"part-{part:06d}.parquet"
    target = os.path.join(folder, name)
    linked = None
    if len(reuse) == len(batch) and all(
            old == first_id + n for n, old in enumerate(reuse[i] for i, _, _ in batch)):
        # every image unchanged and in its old place: its old part file, as it is
        linked = _linkable(parts, first_id, first_id + len(batch) - 1)
    records, frames, skipped, notes, grids = [], [], [], [], set()
    moved: dict[int, int] = {}  # old image id -> new, of the reused images
    opened = 0
    next_id = first_id
    for index, item, _old in batch:
        key = keys[index]
        try:
            if isinstance(key, BaseException):
                raise key
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", GridWarning)
                if index in reuse:
                    record = _reused_record(old_images[reuse[index]], next_id)
                    moved[reuse[index]] = next_id
                else:
                    entry, frame, grid_dict, mask_mpp = _new_image(index, item, opts, next_id)
                    opened += 1
                    entry["content_key"] = key
                    entry["item"] = item_token(item)
                    record = image_row(entry)
                    record[_LABELS] = None
                    record[_MASKS] = None if opts.masks is None else json.dumps(opts.masks)
                    record["mask_mpp"] = None if _value(mask_mpp) is None else float(mask_mpp)
                    record["item"] = entry["item"]
                    frames.append(frame)
                    if grid_dict is not None:
                        grids.add(json.dumps(grid_dict, sort_keys=True))
            notes += [str(w.message) for w in caught]
        except ZarrdaskError as exc:
            if on_error == "raise":
                raise type(exc)(f"image {index} ({item_name(item)}): {exc}") from exc
            skipped.append({"index": index, "source": item_name(item), "error": str(exc)})
            continue
        records.append(record)
        next_id += 1
    if linked is not None and len(moved) == len(batch):
        _link_or_copy(os.path.join(previous["version"], linked), target)
        frame = pq.read_table(target).to_pandas()
    else:
        old = np.asarray(sorted(moved), dtype=np.int64)
        rows = _old_rows(previous, parts, old) if len(old) else None
        if rows is not None:
            new = np.asarray([moved[i] for i in old.tolist()], dtype=np.int64)
            position = np.searchsorted(old, rows["image_id"].to_numpy(dtype=np.int64))
            frames.append(rows.assign(image_id=new[position].astype(np.int32)))
        frame = _part_frame(frames, previous)
        write_atomic(pa.Table.from_pandas(frame, preserve_index=False), target)
    write_batch_images(folder, part, records, masks=opts.masks is not None)
    ids = frame["image_id"].to_numpy()
    return {"part": {"file": name, "rows": len(frame), "first_row": 0,
                     "image_min": int(ids.min()) if len(ids) else -1,
                     "image_max": int(ids.max()) if len(ids) else -1},
            "skipped": skipped, "runs": row_runs(frame),
            "keys": b"".join(bytes.fromhex(r["content_key"]) for r in records),
            "first_id": first_id, "count": next_id - first_id, "opened": opened,
            "reused": len(moved), "warnings": notes[:_NOTES], "warned": len(notes),
            "grids": sorted(grids), "columns": list(frame.columns)}


def _value(value: Any) -> Any:
    """``value``, or None for a missing one (None, NaN, pandas NA)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value


def _part_frame(frames: list[pd.DataFrame], previous: Mapping[str, Any] | None) -> pd.DataFrame:
    """One batch's rows in image order (each image's rows in their order)."""
    if not any(len(f) for f in frames):
        columns = list(frames[0].columns) if frames else (previous or {}).get("columns") or [
            "image_id", "y", "x", "chunk_id", "coverage"]
        return pd.DataFrame({c: np.zeros(0, dtype=_DTYPES.get(c, np.float64)) for c in columns})
    frames = [f for f in frames if len(f)]
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    frame = frame.astype({c: t for c, t in _DTYPES.items() if c in frame.columns})
    order = np.argsort(frame["image_id"].to_numpy(), kind="stable")
    if np.any(np.diff(order) != 1):
        frame = frame.iloc[order].reset_index(drop=True)
    return frame


def shift_part(folder: str, name: str, delta: int) -> dict[str, Any]:
    """Renumber the images of a part file by ``delta`` (images skipped in
    earlier batches); returns its new digest runs."""
    path = os.path.join(folder, name)
    frame = pq.read_table(path).to_pandas()
    frame["image_id"] = (frame["image_id"].astype(np.int64) + delta).astype(np.int32)
    write_atomic(pa.Table.from_pandas(frame, preserve_index=False), path)
    return row_runs(frame)
