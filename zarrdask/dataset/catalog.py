"""The per-image metadata a :class:`~zarrdask.dataset.PatchDataset` reads:
entries parsed on first use, and what the table-wide checks need without
touching every image.

A table of 100,000 slides has 100,000 entries per modality; parsing them all
costs seconds and about 3 KB of Python objects each, in every process. The
dataset needs them one image at a time (when that image's rows are read),
plus a few facts about the whole table: which kinds of entries a modality
has, the dims, dtype, chunk shape and patch shape of its arrays. Those come
from *layouts*: the distinct combinations of what decides them, each with one
representative image. Images that share a layout need no check of their own.

* :class:`EagerCatalog` wraps entries already in memory (a
  :class:`~zarrdask.table.PatchTable` or a single-file table);
* :class:`FolderCatalog` reads a partitioned table's images table
  (:mod:`zarrdask.table_layout`) file by file and parses an entry when it is
  first asked for; its layouts come from the summary columns (``dims``,
  ``dtype``, ``chunks``, ``shape``, ``source``), so construction does not
  parse the entries. Tables written before those columns existed are parsed
  once, entry by entry, to find their layouts.
* :class:`PerImage` is the lazy, thread-safe, optionally bounded sequence
  the dataset keeps its per-image sources and geometries in.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..io.location import protocol_of
from ..table_layout import (
    entry_column,
    per_image_modalities,
    read_image_summaries,
    read_images_file,
)

__all__ = ["Layout", "LayoutsByModality", "PerImage", "ImageCatalog", "EagerCatalog", "FolderCatalog", "entry_kind",
           "layout_key"]

#: Parsed entries (and per-image sources) a folder catalog keeps per process.
KEEP_IMAGES = 4096


def entry_kind(entry: Any) -> str:
    """``"none"``, ``"weak"`` (a per-image value), ``"array"`` or ``"other"``."""
    if entry is None:
        return "none"
    if isinstance(entry, Mapping) and "weak" in entry:
        return "weak"
    if isinstance(entry, Mapping) and "dims" in entry and "shape" in entry:
        return "array"
    return "other"


def _location(entry: Mapping[str, Any]) -> Any:
    return (entry.get("array") or {}).get("location") or (entry.get("open") or {}).get("source")


def _remote(location: Any) -> bool:
    return isinstance(location, str) and "://" in location and protocol_of(location) != "file"


def layout_key(entry: Any, grid_dims: Sequence[str], image_scale: Mapping[str, Any] | None
               ) -> tuple:
    """What decides an entry's kind, patch shape, dtype and chunk size.

    ``image_scale``: the image's pixel size per grid dim, for modalities
    other than images (their patch size is the image's patch scaled by the
    ratio of pixel sizes); None for the images themselves.
    """
    kind = entry_kind(entry)
    if kind != "array":
        return (kind,)
    try:
        dims = tuple(str(d) for d in entry["dims"])
        shape = entry["shape"]
        other = tuple(int(shape[d]) for d in dims if d not in grid_dims)
    except (KeyError, TypeError):
        return ("array", "malformed", json.dumps(entry, sort_keys=True, default=repr))
    chunks = entry.get("chunks") or {}
    ratio = None
    if image_scale is not None:
        scale = entry.get("scale") or {}
        ratio = tuple(round(float(scale.get(d, 1.0)) / float(image_scale.get(d, 1.0)), 9)
                      for d in grid_dims)
    return ("array", dims, str(entry.get("dtype", "uint8")),
            tuple(int(chunks.get(d) or 0) for d in dims), other, _remote(_location(entry)), ratio)


@dataclass(frozen=True)
class Layout:
    """One distinct layout of a modality's entries.

    Attributes
    ----------
    kind : str
        The kind of the entries (:func:`entry_kind`).
    index : int
        A representative image (the first with this layout).
    count : int
        How many images have it.
    remote : bool
        Whether their arrays are read through fsspec.
    """

    kind: str
    index: int
    count: int
    remote: bool = False


def _layouts(keys: Sequence[tuple], weights: Sequence[tuple[int, int]] | None = None
             ) -> list[Layout]:
    """Layouts from one key per image, or from one key per group of images
    with ``weights`` ``(first image, count)`` per key."""
    first: dict[tuple, int] = {}
    counts: dict[tuple, int] = {}
    pairs = weights if weights is not None else ((i, 1) for i in range(len(keys)))
    for key, (i, count) in zip(keys, pairs, strict=False):
        first[key] = min(first.get(key, i), i)
        counts[key] = counts.get(key, 0) + count
    order = sorted(first, key=first.__getitem__)
    return [Layout(kind=k[0], index=first[k], count=counts[k],
                   remote=bool(k[0] == "array" and len(k) > 5 and k[5])) for k in order]


def _groups(table: Any, keys: list[str]) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
    """The distinct rows of ``table`` over ``keys`` (pyarrow group-by), each
    with its first row and its number of rows, in order of first row."""
    import numpy as np
    import pyarrow as pa

    table = table.select(keys).append_column("_row", pa.array(np.arange(table.num_rows)))
    grouped = table.group_by(keys, use_threads=False).aggregate(
        [("_row", "min"), ("_row", "count")]).sort_by("_row_min")
    rows = grouped.select(keys).to_pylist()
    weights = list(zip(grouped.column("_row_min").to_pylist(),
                       grouped.column("_row_count").to_pylist(), strict=True))
    return rows, weights


class _ForkSafeLock:
    """A lock that a forked child (a DataLoader worker) replaces by a fresh
    one, so a lock held by a thread of the parent at the fork cannot hang it."""

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        if self._pid != os.getpid():
            self._pid, self._lock = os.getpid(), threading.Lock()
        self._lock.acquire()

    def __exit__(self, *exc: Any) -> None:
        self._lock.release()


class PerImage(Sequence):
    """A sequence of per-image values built on first access.

    Parameters
    ----------
    n : int
        Number of images.
    build : callable
        ``build(i)`` gives the value of image ``i`` (picklable: DataLoader
        workers receive it).
    keep : int, optional
        Keep at most this many values (least recently used go first; they
        are built again when asked for). Default: all.
    """

    def __init__(self, n: int, build: Callable[[int], Any], *, keep: int | None = None) -> None:
        self.n = int(n)
        self.build = build
        self.keep = keep
        self._values: OrderedDict[int, Any] = OrderedDict()
        self._lock = _ForkSafeLock()

    def __getstate__(self) -> dict[str, Any]:
        return {"n": self.n, "build": self.build, "keep": self.keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["n"], state["build"], keep=state["keep"])

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: Any) -> Any:  # type: ignore[override]
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self.n))]
        i = int(i)
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"image {i} of {self.n}")
        with self._lock:
            if i in self._values:
                self._values.move_to_end(i)
                return self._values[i]
        value = self.build(i)
        with self._lock:
            self._values[i] = value
            if self.keep is not None and len(self._values) > self.keep:
                self._values.popitem(last=False)
        return value

    def __iter__(self) -> Iterator[Any]:
        return (self[i] for i in range(self.n))

    def built(self) -> list[Any]:
        """The values built so far (and still kept)."""
        with self._lock:
            return list(self._values.values())


class ImageCatalog:
    """Entries of a table's modalities, one per image (see the module doc)."""

    n: int
    names: list[str]
    #: per-image values (entries, sources, geometries) a process keeps;
    #: None: all of them (the entries are in memory anyway)
    keep: int | None = None

    def entry(self, modality: str, index: int) -> Any:
        """The entry of ``modality`` for image ``index`` (None when absent)."""
        raise NotImplementedError

    def layouts(self, modality: str, grid_dims: Sequence[str]) -> list[Layout]:
        """The distinct layouts of ``modality`` over every image."""
        raise NotImplementedError

    def entries(self, modality: str) -> PerImage:
        """The entries of ``modality`` as a lazy sequence."""
        return PerImage(self.n, _EntryOf(self, modality))

    def image_name(self, index: int) -> str:
        entry = self.entry("images", index)
        return str(entry.get("name", "?")) if isinstance(entry, Mapping) else "?"

    def _keys(self, modality: str, grid_dims: Sequence[str]) -> list[tuple]:
        """Layout keys of every image, from parsed entries."""
        keys = []
        for i in range(self.n):
            image_scale = None
            if modality != "images":
                image = self.entry("images", i)
                image_scale = image.get("scale") or {} if isinstance(image, Mapping) else {}
            keys.append(layout_key(self.entry(modality, i), grid_dims, image_scale))
        return keys


class LayoutsByModality(Mapping):
    """``{modality: its layouts}`` (:meth:`ImageCatalog.layouts`), each
    found when first asked for: finding the layouts of a modality of
    per-image arrays in a table without summary columns parses its entries,
    worth doing only for the modalities that are read or chosen from."""

    def __init__(self, catalog: ImageCatalog, grid_dims: Sequence[str]) -> None:
        self.catalog, self.grid_dims = catalog, list(grid_dims)
        self._found: dict[str, list[Layout]] = {}

    def __getitem__(self, modality: str) -> list[Layout]:
        if modality not in self.catalog.names:
            raise KeyError(modality)
        if modality not in self._found:
            self._found[modality] = self.catalog.layouts(modality, self.grid_dims)
        return self._found[modality]

    def __iter__(self) -> Iterator[str]:
        return iter(self.catalog.names)

    def __len__(self) -> int:
        return len(self.catalog.names)


class _EntryOf:
    """``catalog.entry(modality, i)`` as a picklable callable of ``i``."""

    def __init__(self, catalog: ImageCatalog, modality: str) -> None:
        self.catalog, self.modality = catalog, modality

    def __call__(self, index: int) -> Any:
        return self.catalog.entry(self.modality, index)


class EagerCatalog(ImageCatalog):
    """A catalog over entries already in memory.

    Parameters
    ----------
    entries : mapping
        ``{modality: one entry per image}`` (see
        :func:`zarrdask.dataset.sources.modality_entries`).
    """

    def __init__(self, entries: Mapping[str, list[Any]]) -> None:
        self._entries = {str(k): list(v) for k, v in entries.items()}
        self.names = list(self._entries)
        self.n = len(self._entries.get("images", []))

    def entry(self, modality: str, index: int) -> Any:
        return self._entries[modality][index]

    def entries(self, modality: str) -> PerImage:
        values = self._entries[modality]
        return PerImage(self.n, values.__getitem__)

    def layouts(self, modality: str, grid_dims: Sequence[str]) -> list[Layout]:
        return _layouts(self._keys(modality, grid_dims))


class FolderCatalog(ImageCatalog):
    """A catalog over the images table of a partitioned folder table, read
    file by file and parsed entry by entry on demand.

    Parameters
    ----------
    folder : FolderTable
        The open table.
    remap : callable, optional
        Applied to every parsed entry (``path_map``).
    keep : int
        Parsed entries kept per process.
    """

    def __init__(self, folder: Any, *, remap: Callable[[Any], Any] | None = None,
                 keep: int = KEEP_IMAGES) -> None:
        self.folder = folder
        self.remap = remap
        self.keep = keep
        self.n = folder.num_images
        self.names = per_image_modalities(folder.manifest)
        #: modalities with one entry for the whole table (not per image)
        self.constants = {name: value for name, value in
                          ((folder.manifest.get("meta") or {}).get("modalities") or {}).items()
                          if name not in self.names}
        self.names += list(self.constants)
        self._per_file = int(folder.manifest.get("images_per_file") or max(self.n, 1))
        self._init_caches()

    def _init_caches(self) -> None:
        self._lock = _ForkSafeLock()
        self._files: OrderedDict[int, dict[str, list[Any]]] = OrderedDict()
        self._parsed: OrderedDict[tuple[str, int], Any] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_files", "_parsed")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_caches()

    def _texts(self, k: int) -> dict[str, list[Any]]:
        """The entry texts of images file ``k`` (the last two files are kept)."""
        with self._lock:
            if k in self._files:
                self._files.move_to_end(k)
                return self._files[k]
        columns = [entry_column(m) for m in self.names if m not in self.constants]
        texts = read_images_file(self.folder.version, k, columns)
        with self._lock:
            self._files[k] = texts
            while len(self._files) > 2:
                self._files.popitem(last=False)
        return texts

    def entry(self, modality: str, index: int) -> Any:
        if modality in self.constants:
            return self.constants[modality]
        if modality not in self.names:
            raise KeyError(modality)
        key = (modality, int(index))
        with self._lock:
            if key in self._parsed:
                self._parsed.move_to_end(key)
                return self._parsed[key]
        k, row = divmod(int(index), self._per_file)
        text = self._texts(k)[entry_column(modality)][row]
        value = None if text is None else json.loads(text)
        if self.remap is not None and value is not None:
            value = self.remap(value)
        with self._lock:
            self._parsed[key] = value
            while len(self._parsed) > self.keep:
                self._parsed.popitem(last=False)
        return value

    def layouts(self, modality: str, grid_dims: Sequence[str]) -> list[Layout]:
        if modality in self.constants:
            return _layouts([(entry_kind(self.constants[modality]),)], [(0, self.n)])
        if modality == "images":
            table = read_image_summaries(self.folder.version,
                                         ["dims", "dtype", "chunks", "shape", "source"])
            if table is None:  # written before these columns: parse every entry
                return _layouts(self._keys(modality, grid_dims))
            return _image_layouts(table, grid_dims)
        column = entry_column(modality)
        table = read_image_summaries(self.folder.version, [column])
        if table is None:
            return _layouts([("none",)], [(0, self.n)])
        rows, weights = _groups(table, [column])
        kinds = [(entry_kind(None if r[column] is None else json.loads(r[column])),) for r in rows]
        if all(k != ("array",) for k in kinds):
            return _layouts(kinds, weights)
        return _layouts(self._keys(modality, grid_dims))


def _image_layouts(table: Any, grid_dims: Sequence[str]) -> list[Layout]:
    """Layouts of the images modality from the images table's summary
    columns, grouped by pyarrow: dims, dtype, chunks, the sizes of dims
    besides the grid's (read from the ``shape`` texts by a regex) and the
    URL scheme of the source. No entry is parsed."""
    import pyarrow.compute as pc

    dims_of = {t: tuple(str(d) for d in json.loads(t or "[]"))
               for t in pc.unique(table.column("dims")).to_pylist()}
    other = sorted({d for dims in dims_of.values() for d in dims if d not in grid_dims})
    shape = table.column("shape").combine_chunks()
    keys = ["dims", "dtype", "chunks", "_scheme"]
    scheme = pc.extract_regex(table.column("source").combine_chunks(),
                              r"^(?P<s>[A-Za-z][A-Za-z0-9+.-]+)://")
    table = table.append_column("_scheme", pc.struct_field(scheme, [0]))
    for k, d in enumerate(other):
        size = pc.extract_regex(shape, re.escape(json.dumps(d)) + r":\s*(?P<n>-?\d+)")
        table = table.append_column(f"_size{k}", pc.struct_field(size, [0]))
        keys.append(f"_size{k}")
    rows, weights = _groups(table, keys)
    out = []
    for r in rows:
        dims = dims_of[r["dims"]]
        chunk_map = json.loads(r["chunks"] or "{}") or {}
        sizes = {d: r[f"_size{k}"] for k, d in enumerate(other)}
        extra = [sizes[d] for d in dims if d not in grid_dims]
        out.append(("array", dims, str(r["dtype"] or "uint8"),
                    tuple(int(chunk_map.get(d) or 0) for d in dims),
                    tuple(int(v) if v is not None else -1 for v in extra),
                    _remote(f"{r['_scheme']}://x" if r["_scheme"] else None), None))
    return _layouts(out, weights)
