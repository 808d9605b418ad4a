"""The images table of a cohort build, written on the workers.

Each batch task writes its images-table rows to a hidden batch file of the
version being written (``.batches/images-<part>.parquet``); once every
batch is done and image ids are final, one merge task per images file
(:data:`zarrdask.table_layout.IMAGES_PER_FILE` images) reads the batch files
it covers, renumbers them after skipped images and writes
``_images/images-<k>.parquet``. The client only passes file names and id
offsets, never the rows.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..table_layout import IMAGES, IMAGES_PER_FILE, images_file

__all__ = ["images_schema", "write_batch_images", "read_images_rows", "merge_plan",
           "merge_images", "remove_batches", "write_atomic"]

_BATCHES = ".batches"
#: Rows per row group of a cohort's images files (at most
#: ``IMAGES_PER_FILE / IMAGES_ROW_GROUP`` row groups per file, whatever the
#: cohort size): a rebuild's task decodes only the row groups of the images
#: it reuses (``image_id`` statistics), not whole files.
IMAGES_ROW_GROUP = 256


def images_schema(masks: bool) -> pa.Schema:
    """The columns of a cohort's images table: the summary columns of
    :func:`zarrdask.table_layout.image_row`, the per-image modalities (no
    labels; the mask name, when ``masks``), the tissue-mask resolution and
    the input item's identity. One schema per build: every batch file, and
    so every images file, has the same column types (a column without any
    value is of Arrow's null type, as pandas writes it)."""
    return pa.schema([
        ("image_id", pa.int32()), ("name", pa.string()), ("source", pa.string()),
        ("reader", pa.string()), ("dims", pa.string()), ("shape", pa.string()),
        ("chunks", pa.string()), ("dtype", pa.string()), ("level", pa.int64()),
        ("mpp", pa.float64()), ("scale", pa.string()),
        ("content_key", pa.string()), ("entry", pa.string()), ("modality.labels", pa.null()),
        ("modality.masks", pa.string() if masks else pa.null()), ("mask_mpp", pa.float64()),
        ("item", pa.string()),
    ])


def write_atomic(table: pa.Table, path: str, **kwargs: Any) -> None:
    """Write a Parquet file under a temporary name and rename it: a task run
    twice (a worker lost mid-build) leaves one whole file."""
    tmp = f"{path}.tmp-{os.getpid()}-{id(table)}"
    pq.write_table(table, tmp, **kwargs)
    os.replace(tmp, path)


def _batch_file(folder: str, part: int) -> str:
    return os.path.join(folder, _BATCHES, f"images-{part:06d}.parquet")


def write_batch_images(folder: str, part: int, records: list[Mapping[str, Any]], *,
                       masks: bool) -> None:
    """Write one batch's images-table rows (dicts with the columns of
    :func:`images_schema`)."""
    os.makedirs(os.path.join(folder, _BATCHES), exist_ok=True)
    schema = images_schema(masks)
    table = pa.Table.from_pylist([{c: r.get(c) for c in schema.names} for r in records],
                                 schema=schema)
    write_atomic(table, _batch_file(folder, part))


def read_images_rows(version: str, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The images-table rows (as dicts) of ``ids`` in the table version
    ``version``, reading only the row groups that hold them."""
    ids = np.unique(np.asarray(ids, dtype=np.int64))
    out: dict[int, dict[str, Any]] = {}
    for k in np.unique(ids // IMAGES_PER_FILE):
        chunk = ids[ids // IMAGES_PER_FILE == k].tolist()
        table = pq.read_table(images_file(version, int(k)), filters=[("image_id", "in", chunk)])
        for row in table.to_pylist():
            out[int(row["image_id"])] = row
    return out


def merge_plan(counts: Sequence[int], deltas: Sequence[int]) -> list[tuple[int, list, int, int]]:
    """The merge tasks: per images file ``k``, the batches it takes (part
    index and id shift) and its id range ``[lo, hi)``, from each batch's
    image count and shift (in batch order)."""
    total = int(sum(counts))
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    plan = []
    for k, lo in enumerate(range(0, max(total, 1), IMAGES_PER_FILE)):
        hi = min(total, lo + IMAGES_PER_FILE)
        parts = [(p, int(deltas[p])) for p in range(len(counts))
                 if counts[p] and starts[p] < hi and starts[p + 1] > lo]
        plan.append((k, parts, lo, hi))
    return plan


def _shifted(table: pa.Table, delta: int) -> pa.Table:
    """A batch's rows with image ids (and the ids in their entries) moved by ``delta``."""
    ids = pc.add(table.column("image_id"), pa.scalar(delta, pa.int32())).cast(pa.int32())
    entries = []
    for text, new in zip(table.column("entry").to_pylist(), ids.to_pylist(), strict=True):
        entry = json.loads(text)
        entry["image_id"] = new
        entries.append(json.dumps(entry, separators=(",", ":")))
    table = table.set_column(table.schema.get_field_index("image_id"), "image_id", ids)
    return table.set_column(table.schema.get_field_index("entry"), "entry",
                            pa.array(entries, pa.string()))


def merge_images(folder: str, k: int, parts: list[tuple[int, int]], lo: int, hi: int) -> int:
    """Write images file ``k`` (image ids ``[lo, hi)``) from the batch files
    of ``parts`` (part index, id shift); returns its row count."""
    tables = []
    for part, delta in parts:
        table = pq.read_table(_batch_file(folder, part))
        tables.append(_shifted(table, delta) if delta else table)
    table = pa.concat_tables(tables) if tables else images_schema(False).empty_table()
    ids = table.column("image_id")
    table = table.filter(pc.and_(pc.greater_equal(ids, lo), pc.less(ids, hi)))
    os.makedirs(os.path.join(folder, IMAGES), exist_ok=True)
    write_atomic(table, images_file(folder, k), row_group_size=IMAGES_ROW_GROUP)
    return table.num_rows


def remove_batches(folder: str) -> None:
    """Remove the batch files once merged."""
    shutil.rmtree(os.path.join(folder, _BATCHES), ignore_errors=True)
