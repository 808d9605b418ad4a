"""Reading storage chunks: one stored array, a byte-bounded LRU cache and a
small thread pool.

:class:`ArraySource` names one stored array and decodes one storage chunk at
a time. For zarr v2/v3 arrays whose layout is simple enough it decodes
chunks directly (:mod:`zarrdask.dataset.layout`: metadata read by hand,
bytes fetched from the store, numcodecs, crc32c checksums verified).
Local tiled TIFF levels whose storage chunks are their tiles decode each
tile straight from its bytes with tifffile
(:mod:`zarrdask.dataset.tiff_tiles`). Anything else (sharding, transposes,
filters, other TIFF layouts, in-memory
zarr arrays) falls back to zarr-python's own read of the chunk's region
(``array[chunk slices]``); numpy arrays are sliced, dask arrays computed one
chunk at a time.

:class:`ChunkFetcher` decodes each chunk once while it stays in its LRU
cache (bounded in bytes), shares in-flight decodes between the patches that
need them and prefetches chunks on a thread pool. Decoded chunks are
read-only; patches are assembled into fresh arrays.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import product
from typing import Any

import numpy as np

from ..errors import (
    CorruptChunkError,
    RemoteAccessError,
    SourceNotFoundError,
    TableError,
    UnsupportedFormatError,
)
from ..io.location import protocol_of, remote_error
from .boxes import INDEX_MODES, chunk_ranges, clip_box, index_map, pad_array
from .layout import DirectLayout, find_array_guard, is_transport_error, read_direct_layout

__all__ = ["ArraySource", "ChunkCache", "ChunkFetcher", "DirectLayout", "read_direct_layout"]

_TYPED_READ_ERRORS = (SourceNotFoundError, RemoteAccessError, CorruptChunkError,
                      UnsupportedFormatError)


# -- one stored array ------------------------------------------------------------

class ArraySource:
    """One stored array, opened lazily in the process that reads it.

    Parameters
    ----------
    name : str
        Shown in error messages (source and key).
    shape, chunks : tuple of int
        Shape and chunk shape recorded in the table.
    dtype : str or numpy.dtype
        Recorded dtype.
    recipe : ArrayRecipe, optional
        How to open the array (zarr, tiff, pil); None for in-memory objects.
    obj : object, optional
        An in-memory array (numpy, dask, zarr) to read from.
    direct : bool
        Try the direct zarr decode path.

    Notes
    -----
    Pickles without open handles. ``remote`` tells whether reads go through
    fsspec (prefetched on threads by :class:`ChunkFetcher`).
    """

    def __init__(self, *, name: str, shape: Sequence[int], chunks: Sequence[int], dtype: Any,
                 recipe: Any = None, obj: Any = None, direct: bool = True) -> None:
        self.name = name
        self.shape = tuple(int(s) for s in shape)
        self.chunks = tuple(int(c) for c in chunks)
        self.dtype = np.dtype(dtype)
        self.recipe = recipe
        self.obj = obj
        self.direct = direct
        location = getattr(recipe, "location", None) if obj is None else None
        #: reads go through fsspec (a network store): worth prefetching on threads
        self.remote = isinstance(location, str) and protocol_of(location) != "file"
        self._reader: Callable[[tuple], np.ndarray] | None = None
        self._lock = threading.Lock()
        self.mode: str | None = None
        self.fallback_reason: str | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_reader"] = None
        state["_lock"] = None
        state["mode"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ArraySource({self.name!r}, shape={self.shape}, chunks={self.chunks}, mode={self.mode})"

    @property
    def chunk_grid(self) -> tuple[int, ...]:
        """Number of chunks along each dim."""
        return tuple(-(-n // c) for n, c in zip(self.shape, self.chunks, strict=True))

    def reset(self) -> None:
        """Forget the opened handles (after a fork: reopen in this process)."""
        self._reader = None
        self._lock = threading.Lock()
        self.mode = None

    # -- opening --
    def open(self) -> None:
        """Open the array in this process (idempotent, thread-safe)."""
        if self._reader is not None:
            return
        with self._lock:
            if self._reader is None:
                self._reader = self._make_reader()

    def _make_reader(self) -> Callable[[tuple], np.ndarray]:
        try:
            return self._open_reader()
        except _TYPED_READ_ERRORS as exc:
            raise type(exc)(f"cannot open {self.name}: {exc}") from exc
        except Exception as exc:
            location = getattr(self.recipe, "location", None)
            if self.remote and is_transport_error(exc):
                raise remote_error(location, self._options(), exc) from exc
            raise

    def _options(self) -> dict:
        return dict(getattr(self.recipe, "storage_options", None) or {})

    def _open_reader(self) -> Callable[[tuple], np.ndarray]:
        recipe = self.recipe
        zarr_at = (self.obj is None and recipe is not None and recipe.reader == "zarr"
                   and recipe.location is not None)
        if zarr_at and self.direct:
            layout = read_direct_layout(recipe.location, recipe.key, recipe.storage_options)
            if isinstance(layout, DirectLayout):
                self._check(layout.shape, layout.chunks)
                self.mode = "direct"
                return layout.decode
            self.fallback_reason = layout
        if self.obj is None and recipe is not None and recipe.reader == "tiff" and self.direct:
            from .tiff_tiles import tiff_tile_reader

            tiles = tiff_tile_reader(recipe, self.shape, self.chunks)
            if callable(tiles):
                self.mode = "tiff-direct"
                return tiles
            self.fallback_reason = tiles
        if self.obj is not None:
            array = self.obj
            self.mode = "memory"
        elif recipe is not None:
            try:
                array = recipe.open()
            except FileNotFoundError as exc:
                raise SourceNotFoundError(
                    f"cannot reopen {self.name} listed in the coordinate table: {exc}; the "
                    "table points to a moved or deleted source, rebuild it or fix the path"
                ) from exc
            self.mode = "zarr" if recipe.reader in ("zarr", "tiff") else recipe.reader
        else:
            raise TableError(f"{self.name} has neither a recipe nor an in-memory object")
        self._check(tuple(int(s) for s in array.shape), None)
        import dask.array as da

        if isinstance(array, da.Array):
            def read(idx: tuple) -> np.ndarray:
                return np.asarray(array[self._slices(idx)].compute(scheduler="sync"))
            return read
        # zarr-python reads absent chunks (and shards) as the fill value too:
        # make sure the array is still there after each read
        guard = find_array_guard(recipe.location, recipe.key, recipe.storage_options) \
            if zarr_at else None

        def read_checked(idx: tuple) -> np.ndarray:
            out = np.asarray(array[self._slices(idx)])
            if guard is not None:
                guard.check(f"chunk {idx}")
            return out
        return read_checked

    def _check(self, shape: tuple[int, ...], chunks: tuple[int, ...] | None) -> None:
        if shape != self.shape:
            raise TableError(
                f"{self.name} now has shape {shape} but the coordinate table recorded "
                f"{self.shape}; the source changed since the table was built, rebuild the table"
            )
        if chunks is not None and chunks != self.chunks:
            # The table's chunk grid drives grouping; use the stored one for reads.
            self.chunks = chunks

    def _slices(self, idx: tuple) -> tuple[slice, ...]:
        return tuple(slice(i * c, min((i + 1) * c, s))
                     for i, c, s in zip(idx, self.chunks, self.shape, strict=True))

    def decode_chunk(self, idx: tuple[int, ...]) -> np.ndarray:
        """Decode storage chunk ``idx`` (trimmed at the array's edges).

        Raises
        ------
        CorruptChunkError
            When the stored bytes cannot be decoded.
        """
        self.open()
        try:
            arr = self._reader(idx)
        except (TableError, MemoryError):
            raise
        except _TYPED_READ_ERRORS as exc:
            raise type(exc)(f"reading chunk {idx} of {self.name}: {exc}") from exc
        except Exception as exc:
            if self.remote and is_transport_error(exc):
                raise RemoteAccessError(
                    f"reading chunk {idx} of {self.name}: "
                    f"{remote_error(self.recipe.location, self._options(), exc)}"
                ) from exc
            raise CorruptChunkError(
                f"cannot decode chunk {idx} of {self.name}: {type(exc).__name__}: {exc}; the "
                "stored chunk is damaged (or fails its checksum) or was written with a codec "
                "that is not installed; rewrite that chunk or install the codec"
            ) from exc
        if arr.flags.writeable and self.mode != "memory":
            arr.flags.writeable = False
        return arr


# -- cache ---------------------------------------------------------------------------

class ChunkCache:
    """A thread-safe LRU cache of decoded chunks bounded in bytes.

    Parameters
    ----------
    max_bytes : int
        Capacity; a chunk larger than the capacity is never kept.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._items: OrderedDict[Any, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Any) -> bool:
        return key in self._items

    def get(self, key: Any) -> np.ndarray | None:
        """The cached chunk (now most recently used) or None."""
        with self._lock:
            arr = self._items.get(key)
            if arr is not None:
                self._items.move_to_end(key)
            return arr

    def put(self, key: Any, arr: np.ndarray) -> None:
        """Insert a chunk, evicting the least recently used ones to fit."""
        size = int(arr.nbytes)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.nbytes -= int(old.nbytes)
            while self._items and self.nbytes + size > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self.nbytes -= int(evicted.nbytes)
            self._items[key] = arr
            self.nbytes += size

    def pop(self, key: Any) -> None:
        """Drop one chunk if cached."""
        with self._lock:
            arr = self._items.pop(key, None)
            if arr is not None:
                self.nbytes -= int(arr.nbytes)

    def clear(self) -> None:
        """Drop every chunk."""
        with self._lock:
            self._items.clear()
            self.nbytes = 0


# -- fetching and assembling ---------------------------------------------------------

class ChunkFetcher:
    """Decode chunks once, share them between patches, assemble patches.

    Parameters
    ----------
    cache_bytes : int
        Capacity of the decoded-chunk cache.
    threads : int
        Threads that fetch and decode chunks of remote sources ahead of use
        (0: decode on demand in the calling thread). Chunks of local and
        in-memory sources are always decoded on demand: with one DataLoader
        worker per core, extra decoding threads only compete for the same
        cores (measured slower).

    Attributes
    ----------
    decoded : int
        Number of chunks decoded so far (for tests and benchmarks).
    """

    def __init__(self, *, cache_bytes: int, threads: int) -> None:
        self.cache = ChunkCache(cache_bytes)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="zarrdask-read") if threads > 0 else None
        self._inflight: dict[Any, Future] = {}
        self._lock = threading.Lock()
        self.decoded = 0

    def close(self) -> None:
        """Stop the thread pool and drop the cache."""
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None
        self.cache.clear()

    def _load(self, key: Any, source: ArraySource, idx: tuple[int, ...]) -> np.ndarray:
        try:
            arr = source.decode_chunk(idx)
        except BaseException:
            with self._lock:
                self._inflight.pop(key, None)
            raise
        with self._lock:  # cached and no longer in flight, atomically
            self.cache.put(key, arr)
            self.decoded += 1
            self._inflight.pop(key, None)
        return arr

    def release(self, uid: Any, idx: tuple[int, ...]) -> None:
        """Drop a chunk from the cache (no reader needs it any more)."""
        self.cache.pop((uid, idx))

    def prefetch(self, uid: Any, source: ArraySource, idx: tuple[int, ...]) -> bool:
        """Start fetching and decoding a remote chunk in the background
        unless it is cached or already on its way; True when started."""
        if self.pool is None or not source.remote:
            return False
        key = (uid, idx)
        with self._lock:
            if key in self._inflight or key in self.cache:
                return False
            self._inflight[key] = self.pool.submit(self._load, key, source, idx)
        return True

    def decode_unless_pending(self, uid: Any, source: ArraySource, idx: tuple[int, ...]) -> bool:
        """Decode a chunk in this thread now, unless it is cached or another
        thread is already decoding it (then return at once, without waiting):
        threads that need the same chunks spread their decodes instead of
        waiting for each other in turn.

        Returns
        -------
        bool
            False when another thread is decoding the chunk (reading it now
            would wait), True when it is cached or was decoded here.
        """
        key = (uid, idx)
        if key in self.cache:
            return True
        with self._lock:
            if key in self._inflight:
                return False
            if key in self.cache:
                return True
            mine: Future = Future()
            self._inflight[key] = mine
        self._decode_owned(mine, key, source, idx)
        return True

    def _decode_owned(self, mine: Future, key: Any, source: ArraySource,
                      idx: tuple[int, ...]) -> np.ndarray:
        """Decode a chunk this thread registered as in flight (``mine``), and
        hand the result, or the error, to the threads waiting for it."""
        try:
            arr = self._load(key, source, idx)
        except BaseException as exc:
            mine.set_exception(exc)
            raise
        mine.set_result(arr)
        return arr

    def get(self, uid: Any, source: ArraySource, idx: tuple[int, ...]) -> np.ndarray:
        """The decoded chunk: from the cache, from a decode in flight (on the
        prefetch threads or another reading thread), or decoded now; a chunk
        several threads need at once is decoded once."""
        key = (uid, idx)
        arr = self.cache.get(key)
        if arr is not None:
            return arr
        mine: Future | None = None
        with self._lock:
            arr = self.cache.get(key)
            future = self._inflight.get(key) if arr is None else None
            if arr is None and future is None:  # decode it here; other threads wait for it
                mine = Future()
                self._inflight[key] = mine
        if arr is not None:
            return arr
        if future is not None:
            return future.result()
        assert mine is not None
        return self._decode_owned(mine, key, source, idx)

    def read_in_chunk(self, uid: Any, source: ArraySource, lo: Sequence[int], hi: Sequence[int],
                      idx: tuple[int, ...]) -> np.ndarray:
        """A fresh copy of ``[lo, hi)``, a box that lies inside chunk ``idx``
        (the common case: no assembly, no padding)."""
        chunk = self.get(uid, source, idx)
        local = tuple(slice(a - i * c, b - i * c)
                      for a, b, i, c in zip(lo, hi, idx, source.chunks, strict=True))
        return np.array(chunk[local], copy=True)

    def read(self, uid: Any, source: ArraySource, lo: Sequence[int], hi: Sequence[int], *,
             valid_lo: Sequence[int], valid_hi: Sequence[int], padding_mode: str = "constant"
             ) -> np.ndarray:
        """A fresh array holding ``[lo, hi)`` of the source, padded where the
        box leaves ``[valid_lo, valid_hi)``.

        Parameters
        ----------
        uid : hashable
            Identifies the source in the cache.
        source : ArraySource
        lo, hi : sequence of int
            Box over every stored dim (may leave the array).
        valid_lo, valid_hi : sequence of int
            The readable region.
        padding_mode : str
            ``"constant"`` (zeros), an index mode (``"edge"``, ``"reflect"``,
            ``"symmetric"``, ``"wrap"``: the pixels numpy's pad of the whole
            readable region would give) or another :func:`numpy.pad` mode
            (applied to the part of the box that is read).
        """
        shape = tuple(int(b - a) for a, b in zip(lo, hi, strict=True))
        clipped = clip_box(lo, hi, valid_lo, valid_hi)
        mirrored = _mirror_maps(lo, hi, valid_lo, valid_hi, padding_mode, clipped)
        if mirrored is not None:
            maps, r_lo, r_hi = mirrored
            region = self._region(uid, source, r_lo, r_hi, origin=r_lo,
                                  shape=tuple(b - a for a, b in zip(r_lo, r_hi, strict=True)))
            return region[np.ix_(*[m - a for m, a in zip(maps, r_lo, strict=True)])]
        if clipped is None:
            return np.zeros(shape, dtype=source.dtype)
        read_lo, read_hi, widths = clipped
        if padding_mode == "constant" or not any(a or b for a, b in widths):
            return self._region(uid, source, read_lo, read_hi, origin=lo, shape=shape)
        inner = self._region(uid, source, read_lo, read_hi, origin=read_lo,
                             shape=tuple(b - a for a, b in zip(read_lo, read_hi, strict=True)))
        return pad_array(inner, widths, padding_mode)

    def _region(self, uid: Any, source: ArraySource, read_lo: Sequence[int], read_hi: Sequence[int],
                *, origin: Sequence[int], shape: tuple[int, ...]) -> np.ndarray:
        """A fresh array of ``shape`` (zeros) holding ``[read_lo, read_hi)``
        placed at ``read_lo - origin``."""
        ranges = chunk_ranges(read_lo, read_hi, source.chunks)
        chunks = source.chunks
        exact = all(a == o for a, o in zip(read_lo, origin, strict=True)) and \
            tuple(b - a for a, b in zip(read_lo, read_hi, strict=True)) == shape
        if exact and all(len(r) == 1 for r in ranges):
            return self.read_in_chunk(uid, source, read_lo, read_hi, tuple(r.start for r in ranges))
        out = (np.empty if exact else np.zeros)(shape, dtype=source.dtype)
        for idx in product(*ranges):
            chunk = self.get(uid, source, idx)
            src, dst = [], []
            for a, b, i, c, o in zip(read_lo, read_hi, idx, chunks, origin, strict=True):
                c0 = i * c
                s0, s1 = max(a, c0), min(b, c0 + c)
                src.append(slice(s0 - c0, s1 - c0))
                dst.append(slice(s0 - o, s1 - o))
            out[tuple(dst)] = chunk[tuple(src)]
        return out


def box_chunks(source: ArraySource, lo: Sequence[int], hi: Sequence[int], valid_lo: Sequence[int],
               valid_hi: Sequence[int], padding_mode: str = "constant") -> list[tuple[int, ...]]:
    """Chunk indices a box reads (none when it lies outside the readable
    region and the padding mode does not mirror it)."""
    clipped = clip_box(lo, hi, valid_lo, valid_hi)
    mirrored = _mirror_maps(lo, hi, valid_lo, valid_hi, padding_mode, clipped)
    if mirrored is not None:
        return list(product(*chunk_ranges(mirrored[1], mirrored[2], source.chunks)))
    if clipped is None:
        return []
    return list(product(*chunk_ranges(clipped[0], clipped[1], source.chunks)))


def _mirror_maps(lo: Sequence[int], hi: Sequence[int], valid_lo: Sequence[int],
                 valid_hi: Sequence[int], padding_mode: str, clipped: Any
                 ) -> tuple[list[np.ndarray], list[int], list[int]] | None:
    """For a box that an index padding mode mirrors (it leaves the readable
    region), the source index of each position per dim and the region
    ``[r_lo, r_hi)`` they span; None when the box is read as it is
    (``clipped``: :func:`clip_box` of the box)."""
    if padding_mode not in INDEX_MODES or (
            clipped is not None and not any(a or b for a, b in clipped[2])):
        return None
    maps = [index_map(a, b, v0, v1, padding_mode)
            for a, b, v0, v1 in zip(lo, hi, valid_lo, valid_hi, strict=True)]
    return maps, [int(m.min()) for m in maps], [int(m.max()) + 1 for m in maps]
