"""The folder layout of coordinate tables at cohort scale (format 2).

A version folder of a folder table (:mod:`zarrdask.table_files`) holds::

    part-00000.parquet ...   patch rows, partitioned along whole images where possible
    _images.parquet          one row per image (its metadata entry as JSON + summary columns)
    _partitions.parquet      one row per part file: file, rows, first_row, image_min, image_max
    _skipped.parquet         images that could not be opened (only when there are some)
    _manifest.json           written last: format, version, row/image/part counts, hash,
                             the table-level metadata

No file holds one metadata entry per image in a footer or in the manifest,
so their sizes do not grow with the number of images. Names starting with
``_`` are skipped by pyarrow, pandas and dask when they read the folder, so
``pandas.read_parquet(path)`` still yields the patch rows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import TableError
from .table_files import hold_current

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST", "IMAGES", "PARTITIONS", "SKIPPED",
           "is_layout", "write_layout", "read_layout", "split_meta", "join_meta",
           "partition_cuts", "FolderTable", "image_row", "images_frame", "write_side_tables",
           "entry_column", "per_image_modalities", "read_images_file", "read_image_summaries",
           "images_table"]

FORMAT = "zarrdask-table"
FORMAT_VERSION = 2
MANIFEST = "_manifest.json"
IMAGES = "_images"
PARTITIONS = "_partitions.parquet"
SKIPPED = "_skipped.parquet"
_ENTRY = "entry"
#: Images per file of the images table (``_images/images-000000.parquet`` ...).
IMAGES_PER_FILE = 4096
_MODALITY = "modality."
_MASK_MPP = "mask_mpp"


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def is_layout(folder: str) -> bool:
    """Whether ``folder`` (a version folder) holds a format-2 table."""
    return os.path.isfile(os.path.join(folder, MANIFEST))


# -- metadata split ------------------------------------------------------------

def split_meta(meta: Mapping[str, Any]) -> tuple[dict[str, Any], pd.DataFrame, list[Any]]:
    """Table metadata split into what is the same for every image (for the
    manifest), the images table and the skipped list.

    Per-image lists are ``meta["images"]``, every list of
    ``meta["modalities"]`` with one entry per image, and
    ``meta["mask_mpp"]["images"]``; they become columns of the images table.
    """
    table_meta = {k: v for k, v in meta.items() if k not in ("images", "skipped")}
    images = list(meta.get("images") or [])
    n = len(images)
    columns: dict[str, Any] = {k: [row[k] for row in rows] if rows else []
                               for rows in [[image_row(e) for e in images]]
                               for k in _SUMMARY}
    columns["image_id"] = np.arange(n, dtype=np.int32)
    modalities = dict(meta.get("modalities") or {})
    kept: dict[str, Any] = {}
    per_image: list[str] = []
    for name, entries in modalities.items():
        if name == "images" and entries == images:
            per_image.append(name)
            continue
        if isinstance(entries, list | tuple) and len(entries) == n:
            columns[_MODALITY + name] = [None if e is None else _dumps(e) for e in entries]
            per_image.append(name)
        else:
            kept[name] = entries
    if modalities or "modalities" in meta:
        table_meta["modalities"] = kept
    table_meta["per_image_modalities"] = per_image
    mask_mpp = meta.get("mask_mpp")
    if isinstance(mask_mpp, Mapping) and isinstance(mask_mpp.get("images"), list) and len(
            mask_mpp["images"]) == n:
        columns[_MASK_MPP] = pd.array(mask_mpp["images"], dtype="Float64")
        table_meta["mask_mpp"] = {k: v for k, v in mask_mpp.items() if k != "images"}
    return table_meta, images_frame(columns), list(meta.get("skipped") or [])


def _parse_all(texts: list[str | None]) -> list[Any]:
    """JSON texts (None: null) parsed in one call."""
    return json.loads("[" + ",".join("null" if t is None else t for t in texts) + "]")


_SUMMARY = ("image_id", "name", "source", "reader", "dims", "shape", "chunks", "dtype", "level",
            "mpp", "scale", "content_key", _ENTRY)


def image_row(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The images-table columns of one image entry: summary columns for
    other tools and the whole entry as JSON (``entry``)."""
    level, mpp = entry.get("level"), entry.get("mpp")
    return {
        "image_id": int(entry.get("image_id", 0)),
        "name": _text(entry.get("name")),
        "source": _text((entry.get("open") or {}).get("source")),
        "reader": _text(entry.get("reader")),
        "dims": _dumps(entry.get("dims")),
        "shape": _dumps(entry.get("shape")),
        "chunks": _dumps(entry.get("chunks")),
        "dtype": _text(entry.get("dtype")),
        "level": None if level is None else int(level),
        "mpp": None if mpp is None else float(mpp),
        "scale": _dumps(entry.get("scale")),
        "content_key": _text(entry.get("content_key")),
        _ENTRY: _dumps(entry),
    }


def images_frame(columns: Mapping[str, Any]) -> pd.DataFrame:
    """The images table from its columns, with its dtypes."""
    frame = pd.DataFrame(dict(columns))
    frame["image_id"] = frame["image_id"].astype(np.int32)
    frame["level"] = frame["level"].astype("Int64")
    frame["mpp"] = frame["mpp"].astype("Float64")
    if _MASK_MPP in frame.columns:
        frame[_MASK_MPP] = frame[_MASK_MPP].astype("Float64")
    return frame


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def join_meta(table_meta: Mapping[str, Any], images: pd.DataFrame,
              skipped: list[Any]) -> dict[str, Any]:
    """The inverse of :func:`split_meta`."""
    meta = {k: v for k, v in table_meta.items() if k != "per_image_modalities"}
    entries = _parse_all(images[_ENTRY].tolist())
    meta["images"] = entries
    per_image = list(table_meta.get("per_image_modalities") or [])
    if "modalities" in table_meta:
        modalities = dict(table_meta.get("modalities") or {})
        for name in per_image:
            if name == "images":
                modalities[name] = entries
            else:
                modalities[name] = _parse_all(images[_MODALITY + name].tolist())
        meta["modalities"] = modalities
    if _MASK_MPP in images.columns and isinstance(meta.get("mask_mpp"), Mapping):
        meta["mask_mpp"] = {**meta["mask_mpp"], "images": [
            None if pd.isna(v) else float(v) for v in images[_MASK_MPP].tolist()]}
    meta["skipped"] = skipped
    return meta


# -- partitions ----------------------------------------------------------------

def partition_cuts(image_id: np.ndarray, part_rows: int) -> np.ndarray:
    """Row offsets ``[0, ..., n]`` of the part files: about ``part_rows``
    rows each, each cut moved back to where its image's rows start (so an
    image stays in one part) unless that image alone is larger than a part."""
    n = len(image_id)
    if n == 0:
        return np.array([0, 0], dtype=np.int64)
    change = np.flatnonzero(np.diff(image_id)) + 1
    run_starts = np.concatenate([[0], change]).astype(np.int64)
    cuts = [0]
    target = part_rows
    while target < n:
        start = int(run_starts[np.searchsorted(run_starts, target, side="right") - 1])
        cut = start if start > cuts[-1] else target
        cuts.append(cut)
        target = cut + part_rows
    cuts.append(n)
    return np.asarray(cuts, dtype=np.int64)


def _part_name(i: int) -> str:
    return f"part-{i:06d}.parquet"


# -- writing -------------------------------------------------------------------

def write_layout(folder: str, rows: pa.Table, meta: Mapping[str, Any], *, part_rows: int,
                 row_group: int) -> None:
    """Fill the version ``folder`` with a format-2 table (the manifest last).

    Parameters
    ----------
    folder : str
        An empty folder (a version being written).
    rows : pyarrow.Table
        The patch rows, without zarrdask metadata in their schema.
    meta : mapping
        The table's JSON-able metadata (``PatchTable.meta``).
    part_rows, row_group : int
        Rows per part file (see :func:`partition_cuts`) and per row group.
    """
    image_id = rows.column("image_id").to_numpy() if rows.num_rows else np.zeros(0, np.int32)
    cuts = partition_cuts(image_id, part_rows)
    records = []
    for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
        name = _part_name(i)
        pq.write_table(rows.slice(int(a), int(b - a)), os.path.join(folder, name),
                       row_group_size=row_group)
        ids = image_id[a:b]
        records.append({"file": name, "rows": int(b - a), "first_row": int(a),
                        "image_min": int(ids.min()) if len(ids) else -1,
                        "image_max": int(ids.max()) if len(ids) else -1})
    table_meta, images, skipped = split_meta(meta)
    write_side_tables(folder, table_meta, images, skipped, records, num_rows=rows.num_rows,
                      columns=rows.column_names, table_hash=meta.get("hash"))


def write_side_tables(folder: str, table_meta: Mapping[str, Any], images: pd.DataFrame | int,
                      skipped: list[Any], partitions: list[dict[str, Any]], *, num_rows: int,
                      columns: list[str], table_hash: str | None) -> None:
    """Write the images, partitions and skipped tables and then the manifest
    of a version whose part files are written (``partitions``: one record
    per part file, in row order; ``table_meta``, ``images`` and ``skipped``
    as :func:`split_meta` returns them). ``images`` may instead be the
    number of images when the images files are written already (a cohort
    build writes them on the workers)."""
    if not isinstance(images, int):
        os.makedirs(os.path.join(folder, IMAGES), exist_ok=True)
        arrow = pa.Table.from_pandas(images, preserve_index=False)
        for k, start in enumerate(range(0, max(len(images), 1), IMAGES_PER_FILE)):
            pq.write_table(arrow.slice(start, IMAGES_PER_FILE), images_file(folder, k))
    pq.write_table(pa.Table.from_pandas(pd.DataFrame(
        partitions, columns=["file", "rows", "first_row", "image_min", "image_max"]),
        preserve_index=False), os.path.join(folder, PARTITIONS))
    if skipped:
        frame = pd.DataFrame([{k: _text(v) if k != "index" else v for k, v in dict(s).items()}
                              for s in skipped])
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False),
                       os.path.join(folder, SKIPPED))
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "rows": int(num_rows),
        "images": images if isinstance(images, int) else len(images),
        "partitions": len(partitions),
        "skipped": len(skipped),
        "columns": list(columns),
        "hash": table_hash,
        "images_per_file": IMAGES_PER_FILE,
        "files": {"images": IMAGES, "partitions": PARTITIONS,
                  "skipped": SKIPPED if skipped else None},
        "meta": table_meta,
    }
    tmp = os.path.join(folder, f".{MANIFEST}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, default=repr)
    os.replace(tmp, os.path.join(folder, MANIFEST))


# -- reading -------------------------------------------------------------------

def _read_manifest(folder: str, where: str) -> dict[str, Any]:
    try:
        with open(os.path.join(folder, MANIFEST), encoding="utf-8") as f:
            manifest = json.load(f)
    except ValueError as exc:
        raise TableError(f"{where} has an unreadable {MANIFEST} ({exc}); rebuild the table") from exc
    if manifest.get("format") != FORMAT or int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise TableError(
            f"{where} is a table of format {manifest.get('format')!r} version "
            f"{manifest.get('format_version')}; this zarrdask reads {FORMAT!r} up to version "
            f"{FORMAT_VERSION}: upgrade zarrdask (pip install -U zarrdask)")
    return manifest


def images_file(folder: str, k: int) -> str:
    """Path of file ``k`` of the images table of the version ``folder``."""
    return os.path.join(folder, IMAGES, f"images-{k:06d}.parquet")


def _read_images(folder: str, image_ids: np.ndarray | None = None) -> pd.DataFrame:
    """The images table (or the rows of ``image_ids`` only, reading only
    the files that hold them)."""
    if image_ids is None:
        return images_table(folder).to_pandas()
    ids = np.unique(np.asarray(image_ids, dtype=np.int64))
    frames = []
    for k in np.unique(ids // IMAGES_PER_FILE):
        frame = pq.read_table(images_file(folder, int(k))).to_pandas()
        frames.append(frame[frame["image_id"].isin(ids)])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def entry_column(modality: str) -> str:
    """The images-table column holding each image's entry of ``modality``."""
    return _ENTRY if modality == "images" else _MODALITY + modality


def per_image_modalities(manifest: Mapping[str, Any]) -> list[str]:
    """The modalities with one entry per image in the images table,
    ``"images"`` first."""
    meta = manifest.get("meta") or {}
    if "modalities" not in meta:
        return ["images"]
    names = list(meta.get("per_image_modalities") or [])
    return ["images", *[n for n in names if n != "images"]]


def _read_file(path: str, columns: list[str] | None = None) -> pa.Table:
    """One Parquet file (without pyarrow.dataset, whose first import costs
    about a second)."""
    return pq.ParquetFile(path).read(columns=columns)


def read_images_file(folder: str, k: int, columns: list[str]) -> dict[str, list[Any]]:
    """Columns of file ``k`` of the images table of the version ``folder``,
    as lists (a column the file lacks is all None)."""
    file = pq.ParquetFile(images_file(folder, k))
    table = file.read(columns=[c for c in columns if c in file.schema_arrow.names])
    return {c: table.column(c).to_pylist() if c in table.column_names else [None] * table.num_rows
            for c in columns}


def images_table(folder: str, columns: list[str] | None = None) -> pa.Table:
    """The images table of the version ``folder`` (or these ``columns``),
    file by file; files whose column types differ (an all-null column is
    of Arrow's null type) are read as one table."""
    names = sorted(f for f in os.listdir(os.path.join(folder, IMAGES))
                   if f.endswith(".parquet") and not f.startswith((".", "_")))
    tables = [_read_file(os.path.join(folder, IMAGES, f), columns) for f in names]
    return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})


def read_image_summaries(folder: str, columns: list[str]) -> pa.Table | None:
    """Columns of the whole images table (a pyarrow table), or None when it
    lacks one of them (a table written by an older zarrdask)."""
    first = images_file(folder, 0)
    if not os.path.exists(first) or any(c not in pq.read_schema(first).names for c in columns):
        return None
    return images_table(folder, columns)


def _skipped(folder: str, manifest: Mapping[str, Any]) -> list[Any]:
    name = (manifest.get("files") or {}).get("skipped")
    if not name:
        return []
    return pq.read_table(os.path.join(folder, name)).to_pandas().to_dict("records")


def read_layout(folder: str, where: str) -> tuple[pa.Table, dict[str, Any]]:
    """All rows and the full metadata of the format-2 table in ``folder``."""
    manifest = _read_manifest(folder, where)
    parts = pq.read_table(os.path.join(folder, PARTITIONS)).column("file").to_pylist()
    tables = [pq.read_table(os.path.join(folder, p)) for p in parts]
    rows = pa.concat_tables(tables) if tables else pa.table({})
    images = _read_images(folder)
    if rows.num_rows != int(manifest["rows"]):
        raise TableError(f"{where} has {rows.num_rows} rows but its manifest lists "
                         f"{manifest['rows']}; the table is damaged, rebuild it")
    return rows, join_meta(manifest["meta"], images, _skipped(folder, manifest))


class FolderTable:
    """A format-2 folder table opened without reading its rows: the manifest,
    the images and partition tables, and part files read one at a time.

    The live version is share-locked while the object lives in a process (a
    writer replacing the table leaves it in place), and locked again in a
    DataLoader worker or after unpickling.

    Parameters
    ----------
    path : str
        The table folder.
    """

    def __init__(self, path: str) -> None:
        self.path = os.fspath(path)
        self._fd: int | None = None
        self._pid = None
        self.version = self._hold()
        self.manifest = _read_manifest(self.version, self.path)
        self.partitions = _read_file(os.path.join(self.version, PARTITIONS)).to_pandas()
        self._meta: dict[str, Any] | None = None

    @staticmethod
    def applies(path: str) -> bool:
        """Whether ``path`` is a folder table whose live version is format 2."""
        from .table_files import CURRENT

        return os.path.isdir(path) and is_layout(os.path.join(path, CURRENT))

    def _hold(self) -> str:
        version, fd = hold_current(self.path)
        self._fd, self._pid = fd, os.getpid()
        return version

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None, "_pid": None}

    def close(self) -> None:
        """Release the lock on the version (it may then be removed by a writer)."""
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = None

    def __del__(self) -> None:
        self.close()

    def __len__(self) -> int:
        return int(self.manifest["rows"])

    @property
    def num_images(self) -> int:
        return int(self.manifest["images"])

    @property
    def hash(self) -> str:
        return str(self.manifest.get("hash"))

    def images(self, columns: list[str] | None = None) -> pd.DataFrame:
        """The images table: one row per image, its summary columns and its
        entries as JSON text (nothing parsed).

        Parameters
        ----------
        columns : list of str, optional
            Only these columns.
        """
        table = images_table(self.version, columns)
        return table.to_pandas() if table.num_columns else pd.DataFrame()

    @property
    def meta(self) -> dict[str, Any]:
        """The full metadata (the images table parsed once, on first use)."""
        if self._meta is None:
            images = _read_images(self.version)
            self._meta = join_meta(self.manifest["meta"], images,
                                   _skipped(self.version, self.manifest))
        return self._meta

    def read_partition(self, index: int, columns: list[str] | None = None) -> pd.DataFrame:
        """The rows of part file ``index`` (a pandas frame, table order)."""
        if self._pid != os.getpid():
            fd = os.open(self.version, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            from .table_files import _flock

            _flock(fd, exclusive=False, wait=True)
            self._fd, self._pid = fd, os.getpid()
        name = self.partitions["file"].iloc[int(index)]
        try:
            return _read_file(os.path.join(self.version, name), columns).to_pandas()
        except (OSError, pa.ArrowException) as exc:
            raise TableError(
                f"{self.path}: part {name} could not be read ({exc}); the table was damaged or "
                "removed while in use, reopen it") from exc
