"""The coordinate table: the one contract between preprocessing and training.

One row per patch:

=============  =======  =====================================================
column         dtype    meaning
=============  =======  =====================================================
``image_id``   int32    index into ``meta["images"]``
``z``          int64    top-left in level-0 pixels (only for 3-D grids)
``y``, ``x``   int64    top-left in level-0 pixels of the stored array
                        (absolute: a ROI's offset is included)
``chunk_id``   int64    row-major index of the storage chunk (of the level
                        that is read) holding the patch's top-left
``coverage``   float32  fraction of the patch window covered by the mask
                        (1.0 without a mask)
=============  =======  =====================================================

The metadata (``PatchTable.meta``, stored as JSON in the Parquet schema under
the key ``zarrdask``) holds the zarrdask version, the grid parameters
(``grid``: dims, patch, stride, pad, min_area, allow_incomplete), the sampler
and seed, one entry per image (``images``: how to reopen it, without
secrets, local paths absolute; dims, shape, chunks, read level and its scale
relative to level 0), the label and mask sources, ``inputs_hash`` (a content
hash of inputs and parameters), ``built_rows_hash`` (a digest of the rows
``build_table`` produced) and ``hash``, which identifies the table: inputs
*and* rows, recomputed from the rows, so a filtered table never passes for
its parent.

Tables are written atomically (:mod:`zarrdask.table_files`): the file (or
the folder's new version) appears at its path only once it is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from .errors import TableError
from .table_files import TableWriteError, read_version, write_folder, write_parquet
from .table_layout import is_layout, read_layout, write_layout
from .table_paths import absolute_location, remap_paths

__all__ = ["PatchTable", "read_table", "TableWriteError", "META_KEY", "SCHEMA_VERSION",
           "position_columns", "rows_digest", "row_runs", "runs_digest", "digest_header",
           "absolute_location", "remap_paths"]

META_KEY = b"zarrdask"
SCHEMA_VERSION = 1
_DATASET_ROWS = 5_000_000  # above this, write a folder of part files
_FILE_IMAGES = 1_000  # above this many images, too: the metadata leaves the footer
_PART_ROWS = 1_000_000  # rows per part file of a folder table
_ROW_GROUP = 1_000_000

_DTYPES = {"image_id": np.int32, "z": np.int64, "y": np.int64, "x": np.int64,
           "chunk_id": np.int64, "coverage": np.float32}


def position_columns(dims: Sequence[str]) -> list[str]:
    """The position columns of a grid over ``dims`` (spatial dims, outermost first)."""
    return [d for d in ("z", "y", "x") if d in dims]


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, slice):
        return [obj.start, obj.stop]
    if isinstance(obj, tuple | set):
        return list(obj)
    return repr(obj)


_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, element-wise on uint64 (wrapping)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def row_runs(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The pieces :func:`rows_digest` combines: the frame's runs of rows of
    one ``image_id`` (in row order), each with its length and two 64-bit
    sums of its rows' hashes mixed with their position in the run.

    Runs of frames that follow each other (part files of whole images)
    concatenate into the runs of the whole table, so a table written in parts
    by several processes gets the digest of its rows without one process
    holding them all.
    """
    n = len(frame)
    ids = (frame["image_id"].to_numpy(dtype=np.int64) if "image_id" in frame.columns
           else np.zeros(n, dtype=np.int64))
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return {"image_id": empty, "rows": empty, "sum0": empty.astype(np.uint64),
                "sum1": empty.astype(np.uint64)}
    starts = np.concatenate([[0], np.flatnonzero(np.diff(ids)) + 1]).astype(np.int64)
    lengths = np.diff(np.append(starts, n))
    row_hash = pd.util.hash_pandas_object(frame, index=False).to_numpy().astype(np.uint64)
    local = (np.arange(n, dtype=np.int64) - np.repeat(starts, lengths)).astype(np.uint64)
    with np.errstate(over="ignore"):
        lane0 = _mix64(row_hash ^ _mix64(local))
        lane1 = _mix64(row_hash + _mix64(local + np.uint64(0x9E3779B97F4A7C15)))
    return {"image_id": ids[starts], "rows": lengths,
            "sum0": np.add.reduceat(lane0, starts).astype(np.uint64),
            "sum1": np.add.reduceat(lane1, starts).astype(np.uint64)}


def runs_digest(header: str, runs: Sequence[Mapping[str, np.ndarray]]) -> str:
    """sha256 of the runs of consecutive frames (:func:`row_runs`) under a
    header naming the columns and dtypes."""
    h = hashlib.sha256(header.encode())
    for key in ("image_id", "rows", "sum0", "sum1"):
        parts = [np.asarray(r[key]) for r in runs]
        values = np.concatenate(parts) if parts else np.zeros(0)
        h.update(f"|{key}|".encode())
        h.update(np.ascontiguousarray(values.astype(np.uint64 if key.startswith("sum")
                                                    else np.int64)).tobytes())
    return h.hexdigest()


def digest_header(frame: pd.DataFrame, num_rows: int | None = None) -> str:
    """The header :func:`rows_digest` hashes: row count, column names and dtypes."""
    n = len(frame) if num_rows is None else num_rows
    cols = ",".join(f"{c}:{_dtype_label(frame[c].dtype)}" for c in frame.columns)
    return f"rows:{n}|{cols}"


def _dtype_label(dtype: Any) -> str:
    """A numpy numeric dtype's code; 'object' for anything else (text, and
    pandas extension dtypes such as nullable ``Int64``, which have no code)."""
    return dtype.str if isinstance(dtype, np.dtype) and dtype.kind in "biufcmM" else "object"


def rows_digest(frame: pd.DataFrame) -> str:
    """sha256 of a frame's rows: column names, dtypes and values, in row
    order within each run of one ``image_id`` (the index is ignored);
    composable over part files (:func:`row_runs`)."""
    return runs_digest(digest_header(frame), [row_runs(frame)])


def _table_hash(inputs_hash: Any, rows: str) -> str:
    return hashlib.sha256(f"{inputs_hash}|{rows}".encode()).hexdigest()


class PatchTable:
    """A coordinate table: patch positions (a ``pandas.DataFrame``) and
    their metadata.

    Filter a table by building a new one from a subset of its frame
    (``PatchTable(t.frame[keep], t.meta)``) or by assigning ``t.frame``: the
    :attr:`hash` follows the rows, so a filtered table never passes for the
    table it came from (in :func:`zarrdask.build_table`'s ``cache=`` or a
    resumed :class:`zarrdask.PatchDataset`).

    Parameters
    ----------
    frame : pandas.DataFrame
        Columns ``image_id``, the position columns (``z``, ``y``, ``x`` as
        present), ``chunk_id`` and ``coverage``; extra columns are kept.
    meta : mapping
        JSON-able metadata (see the module documentation).
    sources : sequence, optional
        Per image, an in-memory object to read from when the image cannot be
        reopened from its recipe (numpy/dask arrays). Not persisted.
    """

    def __init__(self, frame: pd.DataFrame, meta: Mapping[str, Any], *,
                 sources: Sequence[Any] | None = None, _parsed: bool = False) -> None:
        # a private copy in plain JSON types (``_parsed``: meta was just parsed from JSON)
        self.meta: dict[str, Any] = dict(meta) if _parsed else json.loads(
            json.dumps(dict(meta), default=_json_default))
        # tables written before zarrdask recorded inputs_hash: their hash was it
        self.meta.setdefault("inputs_hash", self.meta.get("hash"))
        self.frame = frame
        self.sources = list(sources) if sources is not None else [None] * len(self.images)

    @property
    def frame(self) -> pd.DataFrame:
        """The rows (one per patch). Assigning a new frame refreshes
        :attr:`hash`; edit a copy rather than the frame in place."""
        return self._frame

    @frame.setter
    def frame(self, frame: pd.DataFrame) -> None:
        missing = [c for c in ["image_id", *position_columns(self.dims), "chunk_id", "coverage"]
                   if c not in frame.columns]
        if missing:
            raise TableError(
                f"a coordinate table needs the columns {missing}; build it with "
                "zarrdask.build_table"
            )
        self._frame = frame.astype(
            {c: t for c, t in _DTYPES.items() if c in frame.columns}
        ).reset_index(drop=True)
        self._rehash()

    def _rehash(self) -> None:
        self._rows = rows_digest(self._frame)
        self.meta["hash"] = _table_hash(self.meta.get("inputs_hash"), self._rows)

    # -- metadata views ---------------------------------------------------
    @property
    def grid(self) -> dict[str, Any]:
        """Grid parameters: dims, patch, stride, pad, min_area, allow_incomplete."""
        return self.meta.get("grid", {})

    @property
    def dims(self) -> list[str]:
        """Spatial dims of the grid, outermost first."""
        return list(self.grid.get("dims", ["y", "x"]))

    @property
    def patch_size(self) -> dict[str, int]:
        """Patch size per spatial dim, in pixels of the level that is read."""
        return dict(self.grid.get("patch", {}))

    @property
    def pad(self) -> dict[str, int]:
        """Padding per spatial dim added on each side at read time."""
        return dict(self.grid.get("pad", {}))

    @property
    def images(self) -> list[dict[str, Any]]:
        """One entry per image: how to reopen it and its geometry."""
        return list(self.meta.get("images", []))

    @property
    def hash(self) -> str:
        """What identifies this table: the hash of its inputs and parameters
        (``meta["inputs_hash"]``) combined with a digest of its rows,
        computed from the rows at each access (so also after an edit of the
        frame in place; about 0.2 s per 5 million rows)."""
        self._rehash()
        return self.meta["hash"]

    @property
    def is_as_built(self) -> bool:
        """Whether the rows are exactly those :func:`zarrdask.build_table`
        produced (False for a filtered or edited table)."""
        built = self.meta.get("built_rows_hash")
        return built is not None and built == rows_digest(self._frame)

    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        patch = "x".join(str(self.patch_size.get(d, "?")) for d in self.dims)
        return (f"<PatchTable {len(self)} patches of {patch} from {len(self.images)} image(s), "
                f"dims {self.dims}, hash {str(self.meta['hash'])[:12]}>")

    def _repr_html_(self) -> str:
        """Notebook view: counts, geometry, a grid sketch (:func:`zarrdask.plot.table_html`)."""
        from .plot.html import table_html

        return table_html(self)

    def positions(self) -> np.ndarray:
        """``(N, ndims)`` int64 top-lefts in level-0 pixels."""
        return self.frame[position_columns(self.dims)].to_numpy(dtype=np.int64)

    def images_frame(self) -> pd.DataFrame:
        """One row per image, indexed by ``image_id``: ``name`` (path or
        URL), ``reader``, the ``level`` read and its ``mpp`` (µm per pixel).

        Join it to the rows for a path per patch:
        ``table.frame.join(table.images_frame(), on="image_id")``.
        """
        rows = [{"image_id": int(e["image_id"]), "name": e.get("name"), "reader": e.get("reader"),
                 "level": e.get("level"), "mpp": e.get("mpp")} for e in self.images]
        frame = pd.DataFrame(rows, columns=["image_id", "name", "reader", "level", "mpp"])
        return frame.set_index("image_id")

    def equals(self, other: PatchTable) -> bool:
        """Same rows in the same order and the same hash."""
        return self.hash == other.hash and self.frame.equals(other.frame)

    def with_paths(self, path_map: Mapping[str, str] | None) -> PatchTable:
        """This table with the local sources of every modality moved from one
        root to another.

        Parameters
        ----------
        path_map : mapping of str to str, optional
            Old root prefix to new root prefix, e.g.
            ``{"/mnt/cluster/slides": "/data/slides"}``; the longest
            matching prefix (whole path components) wins. URLs are left
            alone. None or empty: the table itself.

        Returns
        -------
        PatchTable
            Same rows and hash, remapped sources.

        Raises
        ------
        TableError
            When a key of ``path_map`` matches no local source of the table
            (a typo would otherwise read the old location).
        """
        if not path_map:
            return self
        meta = remap_paths(self.meta, path_map)
        return PatchTable(self.frame, meta, sources=self.sources)

    # -- persistence ------------------------------------------------------
    def _arrow(self) -> pa.Table:
        table = pa.Table.from_pandas(self.frame, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[META_KEY] = json.dumps(self.meta, default=_json_default).encode()
        return table.replace_schema_metadata(meta)

    def to_parquet(self, path: str | os.PathLike, *, overwrite: bool = True) -> str:
        """Write the table to Parquet, atomically.

        A table of at most 5 million rows and 1,000 images is a single file
        (metadata in its footer); a larger one, or one written where a
        folder table is, becomes a folder: patch rows in part files of whole
        images, one row per image in ``_images.parquet`` and a small
        ``_manifest.json`` written last (``docs/table.md``), so no footer or
        manifest grows with the number of images. pandas and pyarrow read
        the rows from the folder itself, dask.dataframe from
        ``path/current``. Readers see the old table or the new one, never a
        missing or partial one, also while other processes replace the same
        path (see :mod:`zarrdask.table_files`).

        Parameters
        ----------
        path : str or path
            Target file or folder.
        overwrite : bool
            Replace an existing table at ``path``.

        Returns
        -------
        str
            The path written.

        Raises
        ------
        TableError
            When ``path`` exists and ``overwrite`` is False, or is a folder
            that holds something else than a table.
        TableWriteError
            When ``path`` cannot be written (also an ``OSError``).
        """
        path = os.fspath(path)
        self._rehash()  # the frame may have been edited in place since
        if (len(self.frame) <= _DATASET_ROWS and len(self.images) <= _FILE_IMAGES
                and not os.path.isdir(path)):
            write_parquet(self._arrow(), path, part_rows=_DATASET_ROWS, row_group=_ROW_GROUP,
                          overwrite=overwrite)
            return path
        rows = pa.Table.from_pandas(self.frame, preserve_index=False)
        part_rows = min(_PART_ROWS, _DATASET_ROWS)
        write_folder(path, lambda folder: write_layout(folder, rows, self.meta,
                                                       part_rows=part_rows, row_group=_ROW_GROUP),
                     overwrite=overwrite)
        return path

    @classmethod
    def from_parquet(cls, path: str | os.PathLike, *,
                     path_map: Mapping[str, str] | None = None) -> PatchTable:
        """Read a table written by :meth:`to_parquet` (see :func:`read_table`)."""
        return read_table(path, path_map=path_map)


def read_table(path: str | os.PathLike, *,
               path_map: Mapping[str, str] | None = None) -> PatchTable:
    """Load a coordinate table written by :meth:`PatchTable.to_parquet`.

    Parameters
    ----------
    path : str or path
        The Parquet file or dataset folder.
    path_map : mapping of str to str, optional
        Old root prefix to new root prefix of the local sources, for a table
        used where the data is mounted elsewhere, e.g.
        ``{"/mnt/cluster/slides": "/data/slides"}`` (see
        :meth:`PatchTable.with_paths`).

    Returns
    -------
    PatchTable

    Raises
    ------
    TableError
        When ``path`` is missing, is not a readable Parquet table (truncated,
        corrupt, another format, a zarr store), holds no zarrdask metadata,
        or when a ``path_map`` key matches no source.
    """
    path = os.fspath(path)

    def read(location: str) -> tuple[pa.Table, Any]:
        if os.path.isdir(location) and is_layout(location):
            return read_layout(location, path)
        import pyarrow.parquet as pq

        table = pq.read_table(location)
        return table, (table.schema.metadata or {}).get(META_KEY)

    table, meta = read_version(path, read)
    if meta is None:
        raise TableError(
            f"{path} is a Parquet file without zarrdask metadata, not a coordinate table; "
            "build one with zarrdask.build_table"
        )
    if not isinstance(meta, dict):
        try:
            meta = json.loads(meta)
            if not isinstance(meta, dict):
                raise ValueError(f"a JSON {type(meta).__name__}, not an object")
        except ValueError as exc:
            raise TableError(
                f"{path} has unreadable zarrdask metadata ({exc}); rebuild the table with "
                "zarrdask.build_table"
            ) from exc
    try:
        frame = table.to_pandas()
    except (pa.ArrowException, ValueError) as exc:
        raise TableError(f"{path} could not be converted to rows ({exc}); rebuild the table") from exc
    return PatchTable(frame, meta, _parsed=True).with_paths(path_map)


def metadata_table(folder: Any) -> PatchTable:
    """A table with the table-level metadata of a partitioned folder table
    (:class:`zarrdask.table_layout.FolderTable`), no rows and no image
    entries (``images`` is empty: read them one by one with
    :class:`zarrdask.dataset.catalog.FolderCatalog`, or all with
    ``folder.meta``); its ``hash`` is not the folder table's (use
    ``folder.hash``)."""
    frame = pd.DataFrame({c: np.zeros(0, dtype=_DTYPES.get(c, np.float64))
                          for c in folder.manifest["columns"]})
    meta = {k: v for k, v in (folder.manifest.get("meta") or {}).items()
            if k != "per_image_modalities"}
    meta["images"] = []
    return PatchTable(frame, meta, _parsed=True)


def _public_recipe(recipe: Any) -> dict[str, Any] | None:
    if recipe is None:
        return None
    public = recipe.public()
    public["location"] = absolute_location(public.get("location"))
    return public


def source_entry(arr: Any, *, image_id: int | None = None) -> dict[str, Any]:
    """The metadata entry that lets a reader reopen ``arr`` and map positions.

    Parameters
    ----------
    arr : xarray.DataArray
        An image (or label/mask) opened with :func:`zarrdask.open_image`.
    image_id : int, optional
        Stored as ``image_id``.

    Returns
    -------
    dict
        ``open`` (the arguments of ``open_image`` that reopen the *full*
        array: ``source``, ``axes``, ``data_group``, ``level``; secrets
        redacted; a local ``source`` absolute), ``array`` (the stored array's public recipe), ``dims``,
        ``shape`` and ``chunks`` of the full stored array at the read level,
        ``roi`` (``{dim: [start, stop]}`` in read-level pixels),
        ``scale``/``origin`` (physical size and position of read-level pixel
        0 per spatial dim) and ``scale0``/``origin0`` (the same for level 0),
        ``level`` and ``dtype``.
    """
    import dask.array as da

    from .axes import SPATIAL_DIMS
    from .io.location import redact_options
    from .io.recipe import open_facts

    attrs = {**arr.attrs, **open_facts(arr)}
    recipe = attrs.get("recipe")
    open_kwargs = dict(attrs.get("open_kwargs") or {})
    roi = {d: list(v) for d, v in (attrs.get("roi") or {}).items()}
    dims = [str(d) for d in arr.dims]
    full_shape = attrs.get("full_shape") or dict(zip(dims, arr.shape, strict=True))
    shape = {d: int(full_shape[d]) for d in dims}
    chunks = {d: int(c) for d, c in (attrs.get("storage_chunks") or {}).items()}
    if not chunks and isinstance(arr.data, da.Array):
        chunks = {d: int(c) for d, c in zip(dims, arr.data.chunksize, strict=True)}
    scale, origin = {}, {}
    for d in dims:
        if d in SPATIAL_DIMS:
            coord = arr.coords.get(d)
            s = float(attrs.get("scale", {}).get(d, 1.0))
            first = float(coord.values[0]) if coord is not None and coord.size else 0.0
            start = roi.get(d, [0, 0])[0]
            scale[d] = s
            origin[d] = first - start * s
    level0 = attrs.get("level0") or {}
    return {
        "image_id": image_id,
        "name": str(absolute_location(attrs.get("source", "<in-memory>"))),
        "reader": attrs.get("reader", "memory"),
        "open": {
            "source": absolute_location(recipe.location) if recipe is not None else None,
            "axes": open_kwargs.get("axes"),
            "data_group": open_kwargs.get("data_group"),
            "level": attrs.get("level", 0),
            "storage_options": redact_options(recipe.storage_options) if recipe is not None else {},
        },
        "array": _public_recipe(recipe),
        "dims": dims,
        "shape": shape,
        "chunks": chunks,
        "dtype": str(arr.dtype),
        "roi": roi,
        "level": int(attrs.get("level", 0)),
        "scale": scale,
        "origin": origin,
        "scale0": dict(level0.get("scale", scale)),
        "origin0": dict(level0.get("origin", origin)),
    }
