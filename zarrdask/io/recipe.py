"""Recipes: what to reopen, so that readers pickle without open handles.

An :class:`ArrayRecipe` names one stored array (reader, location, key inside
the source, storage options) and opens it on demand. :class:`LazyArray` wraps
a recipe as an array-like for ``dask.array.from_array``: it opens the store at
first use in each process and drops the handle when pickled.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CorruptChunkError
from .location import is_remote, redact_options, remote_error

__all__ = ["ArrayRecipe", "LazyArray", "open_cached", "clear_open_cache", "recipe_of", "register_opener",
           "open_facts", "remember_opened", "OPENED_KEY"]

#: Key of ``DataArray.encoding`` under which :func:`zarrdask.open_image` keeps
#: what it opened (the recipe and facts about the stored array). Not in
#: ``attrs``: attrs must stay writable by xarray's own writers (``to_zarr``,
#: ``to_netcdf``), must never carry storage secrets to disk, and propagate
#: into derived arrays that the recipe no longer describes. xarray drops
#: unknown encoding keys when writing.
OPENED_KEY = "zarrdask_opened"


@dataclass(frozen=True, eq=False)
class ArrayRecipe:
    """How to (re)open one stored array.

    Parameters
    ----------
    reader : {"zarr", "tiff", "openslide", "pil", "memory"}
        The reader that opens it.
    location : str or None
        Local path or URL of the source (None for in-memory objects).
    key : str or None
        The array inside the source: a zarr path, or ``"series/level"`` of a
        TIFF.
    storage_options : mapping
        fsspec options (may hold secrets; never shown by ``repr``).
    obj : object, optional
        The array itself for in-memory sources.
    """

    reader: str
    location: str | None
    key: str | None = None
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    obj: Any = None

    def __repr__(self) -> str:
        opts = redact_options(self.storage_options)
        where = self.location if self.location is not None else f"<{type(self.obj).__name__}>"
        return f"ArrayRecipe({self.reader!r}, {where!r}, key={self.key!r}, storage_options={opts})"

    def __eq__(self, other: object) -> bool:
        """Recipes are equal when they reopen the same array: same reader,
        location, key and storage options, and the same in-memory object
        (equal zarr stores count as the same). A recipe therefore equals its
        own pickled copy, which xarray relies on when it compares attrs."""
        if not isinstance(other, ArrayRecipe):
            return NotImplemented
        if (self.reader, self.location, self.key) != (other.reader, other.location, other.key):
            return False
        if dict(self.storage_options) != dict(other.storage_options):
            return False
        return _same_object(self.obj, other.obj)

    def __hash__(self) -> int:
        return hash((self.reader, self.location, self.key))

    @property
    def display(self) -> str:
        """Human name of the array for messages: location plus key."""
        where = self.location if self.location is not None else f"<in-memory {type(self.obj).__name__}>"
        return where if not self.key else f"{where} [{self.key}]"

    def public(self) -> dict[str, Any]:
        """JSON-able description without secrets (for table metadata)."""
        return {
            "reader": self.reader,
            "location": self.location,
            "key": self.key,
            "storage_options": redact_options(self.storage_options),
        }

    def token(self) -> str:
        """A deterministic name for dask graphs built from this array."""
        import json

        from dask.base import tokenize

        ident = self.location if self.location is not None else id(self.obj)
        options = json.dumps(redact_options(self.storage_options), sort_keys=True, default=repr)
        return tokenize(self.reader, ident, self.key, options)

    def open(self) -> Any:
        """Open the array and return an object with ``shape``, ``dtype`` and
        numpy-style ``__getitem__`` (through the reader registered for
        :attr:`reader`, see :func:`register_opener`)."""
        if self.reader == "memory":
            return self.obj
        opener = _OPENERS.get(self.reader)
        if opener is None:
            raise ValueError(f"unknown reader {self.reader!r} in {self!r}")
        return opener(self)


#: ``reader name -> function(recipe) -> array``, filled by the reader modules
#: (imported with :mod:`zarrdask.io`, the parent package of this module).
_OPENERS: dict[str, Callable[[ArrayRecipe], Any]] = {}


def register_opener(reader: str, opener: Callable[[ArrayRecipe], Any]) -> None:
    """Make :meth:`ArrayRecipe.open` open recipes of ``reader`` with ``opener``
    (each reader module registers its own, so this module imports none)."""
    _OPENERS[reader] = opener


def _is_access_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure to reach storage rather than to decode."""
    if isinstance(exc, OSError | TimeoutError | ConnectionError):
        return True
    module = type(exc).__module__.split(".")[0]
    return module in ("aiohttp", "botocore", "aiobotocore", "s3fs", "fsspec", "requests")


_OPEN_CACHE: OrderedDict[tuple, Any] = OrderedDict()
_OPEN_CACHE_SIZE = 128
_OPEN_CACHE_LOCK = threading.Lock()


def open_cached(recipe: ArrayRecipe) -> Any:
    """``recipe.open()``, reusing the array this process already opened.

    Every dask task of an image carries its own unpickled copy of the
    image's :class:`LazyArray`; without this cache each task on a worker
    would reopen the store and read its metadata again. Keyed by process,
    reader, location, key and storage options; in-memory sources are not
    cached (they need no opening). At most 128 arrays are kept, least
    recently used first out; :func:`clear_open_cache` empties it.
    """
    if recipe.location is None:
        return recipe.open()
    options = sorted((str(k), repr(v)) for k, v in dict(recipe.storage_options).items())
    key = (os.getpid(), recipe.reader, recipe.location, recipe.key, tuple(options))
    with _OPEN_CACHE_LOCK:
        if key in _OPEN_CACHE:
            _OPEN_CACHE.move_to_end(key)
            return _OPEN_CACHE[key]
    array = recipe.open()
    with _OPEN_CACHE_LOCK:
        _OPEN_CACHE[key] = array
        while len(_OPEN_CACHE) > _OPEN_CACHE_SIZE:
            _OPEN_CACHE.popitem(last=False)
    return array


def clear_open_cache() -> None:
    """Forget every array opened by :func:`open_cached` (e.g. after a store
    was rewritten with a new shape)."""
    with _OPEN_CACHE_LOCK:
        _OPEN_CACHE.clear()


def _same_object(a: Any, b: Any) -> bool:
    """Whether two in-memory sources of recipes are the same data: the same
    object, or equal zarr stores (stores compare by location)."""
    if a is b:
        return True
    from zarr.abc.store import Store

    if isinstance(a, Store) and isinstance(b, Store):
        return bool(a == b)
    return False


def _chunk_names(array: Any, key: tuple, chunks: tuple[int, ...] | None) -> str:
    """Names of the storage chunks a selection touches (for error messages)."""
    if not chunks:
        return "?"
    starts = []
    for sel, size in zip(key, chunks, strict=False):
        if isinstance(sel, slice):
            lo = sel.start or 0
            hi = (sel.stop - 1) if sel.stop is not None else lo
            starts.append(range(lo // size, hi // size + 1))
        else:
            starts.append(range(int(sel) // size, int(sel) // size + 1))
    encode = None
    meta = getattr(array, "metadata", None)
    if meta is not None and hasattr(meta, "encode_chunk_key"):
        encode = meta.encode_chunk_key
    first = tuple(r.start for r in starts)
    last = tuple(r.stop - 1 for r in starts)
    if encode is not None:
        a, b = encode(first), encode(last)
    else:
        a, b = ".".join(map(str, first)), ".".join(map(str, last))
    return a if a == b else f"{a} .. {b}"


class LazyArray:
    """Array-like over an :class:`ArrayRecipe`, opened lazily per process.

    Parameters
    ----------
    recipe : ArrayRecipe
        What to open.
    shape, dtype, chunks
        Known from the metadata read when the image was opened, so nothing is
        read again until data is asked for.
    """

    def __init__(self, recipe: ArrayRecipe, shape: tuple[int, ...], dtype: Any,
                 chunks: tuple[int, ...] | None = None) -> None:
        self.recipe = recipe
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.chunks = chunks
        self.ndim = len(self.shape)
        self._array: Any = None
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LazyArray({self.recipe!r}, shape={self.shape}, dtype={self.dtype})"

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_array"] = None
        state["_lock"] = None
        state["_pid"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.shape[0]

    def attach(self, array: Any) -> None:
        """Use ``array`` (already opened from the recipe) in this process."""
        self._array = array
        self._pid = os.getpid()

    @property
    def array(self) -> Any:
        """The opened array (opened at first access in each process: a
        handle inherited through ``fork`` is never reused)."""
        if self._array is None or self._pid != os.getpid():
            with self._lock:
                if self._array is None or self._pid != os.getpid():
                    self._array = open_cached(self.recipe)
                    self._pid = os.getpid()
        return self._array

    def __getitem__(self, key: Any) -> np.ndarray:
        array = self.array
        try:
            return np.asarray(array[key])
        except (IndexError, KeyError, TypeError, MemoryError):
            raise
        except Exception as exc:  # codec failures come in many types
            names = _chunk_names(array, key if isinstance(key, tuple) else (key,), self.chunks)
            if _is_access_failure(exc) and is_remote(self.recipe.location):
                error = remote_error(self.recipe.location, self.recipe.storage_options, exc)
                raise type(error)(
                    f"reading chunk {names} of {self.recipe.display}: {error}"
                ) from exc
            raise CorruptChunkError(
                f"cannot decode chunk {names} of {self.recipe.display}: "
                f"{type(exc).__name__}: {exc}; the stored chunk is damaged or was written "
                "with a codec that is not installed; rewrite that chunk or install the codec"
            ) from exc


def remember_opened(arr: Any, recipe: ArrayRecipe, **facts: Any) -> Any:
    """Record on ``arr`` (a dask-backed DataArray) that it is ``recipe``'s
    array as opened, with ``facts`` (``open_kwargs``, ``full_shape``,
    ``storage_chunks``, ``level0``, ``roi``, ``scale``, ``units``).

    The record names the dask array, shape and dims of ``arr``: it describes
    ``arr`` only while those are unchanged (see :func:`recipe_of`). Returns
    ``arr``.
    """
    record = {
        "recipe": recipe,
        "name": getattr(arr.data, "name", None),
        "shape": tuple(int(n) for n in arr.shape),
        "dims": tuple(str(d) for d in arr.dims),
        "facts": dict(facts),
    }
    # a new dict: xarray may share the encoding dict with the array sliced from
    arr.encoding = {**arr.encoding, OPENED_KEY: record}
    return arr


def _record(arr: Any, *, derived: bool = False) -> dict | None:
    """The open record of ``arr`` when it still describes it."""
    encoding = getattr(arr, "encoding", None)
    record = encoding.get(OPENED_KEY) if isinstance(encoding, Mapping) else None
    if not isinstance(record, Mapping) or record.get("name") is None:
        return None
    data = getattr(arr, "data", None)
    name = getattr(data, "name", None)
    if not isinstance(name, str) or not hasattr(data, "__dask_graph__"):
        return None  # computed, or wrapped in something else
    if derived:
        # arr was computed from the opened array (xarray carries encoding
        # through isel, transpose, chunk): the opened array's layer is in
        # its graph
        return record if record["name"] in data.__dask_graph__().layers else None
    if name != record["name"] or tuple(int(n) for n in arr.shape) != record["shape"]:
        return None
    if tuple(str(d) for d in arr.dims) != record["dims"]:
        return None
    return record


def recipe_of(arr: Any, *, derived: bool = False) -> ArrayRecipe | None:
    """The recipe of the stored array that ``arr`` is, as opened.

    Parameters
    ----------
    arr : xarray.DataArray
        Usually from :func:`zarrdask.open_image`.
    derived : bool
        Also return the recipe of the array ``arr`` was computed from (a
        slice, transpose or rechunk of it: xarray carries the record through
        those; arithmetic, reductions and ``where`` drop it). The caller must
        then check that ``arr`` still holds the stored values.

    Returns
    -------
    ArrayRecipe or None
        None for arrays that were not opened from storage, were computed, or
        are no longer the opened array (another dask array, shape or dims).
    """
    record = _record(arr, derived=derived)
    return record["recipe"] if record is not None else None


def open_facts(arr: Any, *, derived: bool = False) -> dict[str, Any]:
    """What :func:`zarrdask.open_image` knew about ``arr``'s stored array.

    Parameters
    ----------
    arr : xarray.DataArray
    derived : bool
        As in :func:`recipe_of` (the facts then describe the array ``arr``
        was sliced from, not ``arr``).

    Returns
    -------
    dict
        ``recipe``, ``open_kwargs`` (``axes``, ``data_group``, ``roi``,
        ``level``), ``full_shape`` and ``storage_chunks`` (``{dim: int}`` of
        the stored array at the read level), ``level0`` (``{"scale": {dim:
        float}, "origin": {dim: float}}`` of level 0), ``roi`` (``{dim:
        [start, stop]}``, only when opened with one), ``scale`` and ``units``
        (``{dim: ...}`` of the spatial dims); empty when the record does not
        describe ``arr`` (see :func:`recipe_of`).
    """
    record = _record(arr, derived=derived)
    if record is None:
        return {}
    return {"recipe": record["recipe"], **record["facts"]}
