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
secrets; dims, shape, chunks, read level and its scale relative to level 0),
the label and mask sources, and ``hash``, a content hash of inputs and
parameters.

Tables are written atomically: the file (or dataset folder) appears at its
path only once it is complete.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import TableError

__all__ = ["PatchTable", "read_table", "META_KEY", "SCHEMA_VERSION", "position_columns"]

META_KEY = b"zarrdask"
SCHEMA_VERSION = 1
_DATASET_ROWS = 5_000_000  # above this, write a folder of part files
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


class PatchTable:
    """A coordinate table: patch positions (a ``pandas.DataFrame``) and
    their metadata.

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
                 sources: Sequence[Any] | None = None) -> None:
        self.meta: dict[str, Any] = json.loads(json.dumps(dict(meta), default=_json_default))
        dims = self.dims
        missing = [c for c in ["image_id", *position_columns(dims), "chunk_id", "coverage"]
                   if c not in frame.columns]
        if missing:
            raise TableError(
                f"a coordinate table needs the columns {missing}; build it with "
                "zarrdask.build_table"
            )
        self.frame = frame.astype(
            {c: t for c, t in _DTYPES.items() if c in frame.columns}
        ).reset_index(drop=True)
        self.sources = list(sources) if sources is not None else [None] * len(self.images)

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
    def hash(self) -> str | None:
        """Content hash of the inputs and parameters."""
        return self.meta.get("hash")

    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        patch = "x".join(str(self.patch_size.get(d, "?")) for d in self.dims)
        return (f"<PatchTable {len(self)} patches of {patch} from {len(self.images)} image(s), "
                f"dims {self.dims}, hash {str(self.hash)[:12]}>")

    def _repr_html_(self) -> str:
        """Notebook view: counts, geometry, a grid sketch (:func:`zarrdask.plot.table_html`)."""
        from .plot.html import table_html

        return table_html(self)

    def positions(self) -> np.ndarray:
        """``(N, ndims)`` int64 top-lefts in level-0 pixels."""
        return self.frame[position_columns(self.dims)].to_numpy(dtype=np.int64)

    def equals(self, other: PatchTable) -> bool:
        """Same rows in the same order and the same hash."""
        return self.hash == other.hash and self.frame.equals(other.frame)

    # -- persistence ------------------------------------------------------
    def _arrow(self) -> pa.Table:
        table = pa.Table.from_pandas(self.frame, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[META_KEY] = json.dumps(self.meta, default=_json_default).encode()
        return table.replace_schema_metadata(meta)

    def to_parquet(self, path: str | os.PathLike, *, overwrite: bool = True) -> str:
        """Write the table to Parquet, atomically.

        Tables over 5 million rows become a dataset folder of part files
        (readable by pyarrow, pandas and dask.dataframe); smaller ones a
        single file. Either appears at ``path`` only once fully written.

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
        """
        path = os.fspath(path)
        if os.path.exists(path) and not overwrite:
            raise TableError(f"{path} exists; pass overwrite=True or choose another path")
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
        table = self._arrow()
        try:
            if len(self) > _DATASET_ROWS:
                os.makedirs(tmp)
                for i, start in enumerate(range(0, len(self), _DATASET_ROWS)):
                    part = table.slice(start, _DATASET_ROWS)
                    pq.write_table(part, os.path.join(tmp, f"part-{i:05d}.parquet"),
                                   row_group_size=_ROW_GROUP)
            else:
                pq.write_table(table, tmp, row_group_size=_ROW_GROUP)
            _replace(tmp, path)
        except BaseException:
            _remove(tmp)
            raise
        return path

    @classmethod
    def from_parquet(cls, path: str | os.PathLike) -> PatchTable:
        """Read a table written by :meth:`to_parquet`."""
        return read_table(path)


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


def _replace(tmp: str, path: str) -> None:
    if os.path.isdir(path) or (os.path.exists(path) and os.path.isdir(tmp)):
        old = f"{path}.old-{uuid.uuid4().hex}"
        os.rename(path, old)
        os.rename(tmp, path)
        _remove(old)
    else:
        os.replace(tmp, path)


def read_table(path: str | os.PathLike) -> PatchTable:
    """Load a coordinate table written by :meth:`PatchTable.to_parquet`.

    Parameters
    ----------
    path : str or path
        The Parquet file or dataset folder.

    Returns
    -------
    PatchTable

    Raises
    ------
    TableError
        When ``path`` is missing or holds no zarrdask metadata.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise TableError(
            f"no coordinate table at {path}; build one with zarrdask.build_table(...)"
            ".to_parquet(path) or `zarrdask grid ... --out {path}`"
        )
    table = pq.read_table(path)
    meta = (table.schema.metadata or {}).get(META_KEY)
    if meta is None and os.path.isdir(path):
        parts = sorted(p for p in os.listdir(path) if p.endswith(".parquet"))
        if parts:
            meta = (pq.read_schema(os.path.join(path, parts[0])).metadata or {}).get(META_KEY)
    if meta is None:
        raise TableError(
            f"{path} is a Parquet file without zarrdask metadata, not a coordinate table; "
            "build one with zarrdask.build_table"
        )
    frame = table.to_pandas()
    return PatchTable(frame, json.loads(meta))


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
        redacted), ``array`` (the stored array's public recipe), ``dims``,
        ``shape`` and ``chunks`` of the full stored array at the read level,
        ``roi`` (``{dim: [start, stop]}`` in read-level pixels),
        ``scale``/``origin`` (physical size and position of read-level pixel
        0 per spatial dim) and ``scale0``/``origin0`` (the same for level 0),
        ``level`` and ``dtype``.
    """
    import dask.array as da

    from .axes import SPATIAL_DIMS
    from .io.location import redact_options

    attrs = arr.attrs
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
        "name": str(attrs.get("source", "<in-memory>")),
        "reader": attrs.get("reader", "memory"),
        "open": {
            "source": recipe.location if recipe is not None else None,
            "axes": open_kwargs.get("axes"),
            "data_group": open_kwargs.get("data_group"),
            "level": attrs.get("level", 0),
            "storage_options": redact_options(recipe.storage_options) if recipe is not None else {},
        },
        "array": recipe.public() if recipe is not None else None,
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
