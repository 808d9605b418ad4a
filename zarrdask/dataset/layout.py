"""Direct zarr chunk decoding: the array's metadata read by hand, each
chunk's bytes fetched straight from the store and decoded with numcodecs,
bypassing zarr-python's async machinery.

Supported layouts:

* zarr v3: a regular chunk grid, the ``bytes`` codec followed by any of
  ``blosc``, ``zstd``, ``gzip`` and ``crc32c`` (the checksum is verified);
* zarr v2: C order, no filters, any numcodecs compressor (or none).

Anything else is left to zarr-python (:mod:`zarrdask.dataset.chunks`).

A chunk that is absent from the store reads as the fill value only while the
array itself is still there: on a missing chunk the array's metadata
document (``zarr.json`` / ``.zarray``) is looked up again (a ``stat`` for
local stores; for remote ones at the first missing chunk and then at most
every :data:`REMOTE_RECHECK_SECONDS`), and when it is gone the read raises
:class:`~zarrdask.errors.SourceNotFoundError`. Every other failure of a
fetch is a typed error too: :class:`~zarrdask.errors.RemoteAccessError`
(network, endpoint, permission on a remote store) or
:class:`~zarrdask.errors.CorruptChunkError` (local I/O errors, bad bytes,
checksum mismatches).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..errors import (
    CorruptChunkError,
    SourceNotFoundError,
    UnsupportedFormatError,
)
from ..io.location import get_filesystem, protocol_of, remote_error

__all__ = [
    "ArrayGuard",
    "DirectLayout",
    "StoreFetcher",
    "find_array_guard",
    "read_direct_layout",
    "is_transport_error",
    "REMOTE_RECHECK_SECONDS",
]

_V3_BYTES_CODECS = ("blosc", "zstd", "gzip", "crc32c")
_FLOAT_SPECIALS = {"NaN": np.nan, "Infinity": np.inf, "-Infinity": -np.inf}

#: On a remote store, how long a successful "the array is still there" check
#: vouches for later missing chunks.
REMOTE_RECHECK_SECONDS = 5.0

#: Modules whose exceptions are transport failures (network, HTTP, S3 client).
_TRANSPORT_MODULES = ("botocore", "aiobotocore", "aiohttp", "urllib3", "s3fs", "fsspec",
                      "requests", "http.client", "ssl", "socket")


def is_transport_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a failure to
    reach or talk to a store: ``OSError``/``TimeoutError`` or an error of
    botocore, aiohttp, urllib3, s3fs, fsspec."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 10:
        if isinstance(current, OSError | TimeoutError):
            return True
        module = type(current).__module__ or ""
        if any(module == m or module.startswith(m + ".") for m in _TRANSPORT_MODULES):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


class StoreFetcher:
    """Fetches keys of one array folder (metadata and chunks alike).

    Parameters
    ----------
    location : str
        The array folder: a local path or a URL.
    storage_options : mapping, optional
        fsspec options for URLs.

    Notes
    -----
    ``get(key)`` returns the bytes, or None when the key does not exist; any
    other failure raises :class:`~zarrdask.errors.RemoteAccessError` (remote)
    or :class:`~zarrdask.errors.CorruptChunkError` (local I/O error).
    """

    def __init__(self, location: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.location = location
        self.storage_options = dict(storage_options or {})
        self.remote = protocol_of(location) != "file"
        if self.remote:
            self._fs, path = get_filesystem(location, storage_options)
            self._root = path.rstrip("/")
        else:
            self._fs = None
            self._root = os.path.abspath(os.path.expanduser(location))

    def where(self, key: str) -> str:
        """The full path or URL of ``key``."""
        if self.remote:
            return f"{self.location.rstrip('/')}/{key}"
        return os.path.join(self._root, key)

    def get(self, key: str) -> bytes | None:
        """The bytes of ``key``, or None when it does not exist."""
        if not self.remote:
            try:
                with open(os.path.join(self._root, key), "rb") as fh:
                    return fh.read()
            except (FileNotFoundError, NotADirectoryError):
                return None
            except OSError as exc:
                raise CorruptChunkError(
                    f"cannot read {self.where(key)}: {type(exc).__name__}: {exc}; check that "
                    "the volume is mounted and readable by this process"
                ) from exc
        try:
            return self._fs.cat_file(f"{self._root}/{key}")
        except FileNotFoundError:
            return None
        except Exception as exc:
            if not is_transport_error(exc) and not isinstance(exc, PermissionError):
                raise
            raise remote_error(self.where(key), self.storage_options, exc) from exc

    def exists(self, key: str) -> bool:
        """Whether ``key`` exists (a ``stat`` locally, a metadata request
        remotely); transport failures raise as in :meth:`get`."""
        if not self.remote:
            return os.path.isfile(os.path.join(self._root, key))
        try:
            return bool(self._fs.exists(f"{self._root}/{key}"))
        except Exception as exc:
            if not is_transport_error(exc):
                raise
            raise remote_error(self.where(key), self.storage_options, exc) from exc


class ArrayGuard:
    """Tells a chunk that was never written from a store that is gone.

    Parameters
    ----------
    store : StoreFetcher
        The array folder.
    meta_key : str
        Its metadata document (``zarr.json`` or ``.zarray``).

    Notes
    -----
    :meth:`check` looks the metadata document up: every time on a local
    store (a ``stat``), at most every :data:`REMOTE_RECHECK_SECONDS` on a
    remote one (the first call always looks).
    """

    def __init__(self, store: StoreFetcher, meta_key: str) -> None:
        self.store = store
        self.meta_key = meta_key
        self._checked_at: float | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_lock"] = None
        state["_checked_at"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        """Raise :class:`~zarrdask.errors.SourceNotFoundError` when the
        array's metadata is gone (deleted, moved or unmounted store): a
        missing ``key`` is then no fill value."""
        if self.store.remote:
            with self._lock:
                now = time.monotonic()
                if self._checked_at is not None and now - self._checked_at < REMOTE_RECHECK_SECONDS:
                    return
        if not self.store.exists(self.meta_key):
            raise SourceNotFoundError(
                f"chunk {self.store.where(key)} is missing and so is the array's "
                f"{self.meta_key}: the store was deleted, moved or unmounted while it was "
                "read; restore it (or fix the path) and rerun, or rebuild the table"
            )
        if self.store.remote:
            with self._lock:
                self._checked_at = time.monotonic()


class DirectLayout:
    """What is needed to fetch and decode a zarr chunk without zarr-python.

    Parameters
    ----------
    store : StoreFetcher
        Fetches the array folder's keys.
    meta_key : str
        The metadata document (``zarr.json`` or ``.zarray``): while it
        exists, an absent chunk means "never written".
    chunk_key : callable
        Chunk index tuple to store key (relative to the array).
    codecs : list
        numcodecs codecs applied, in order, to decode the stored bytes.
    dtype : numpy.dtype
        Dtype of the decoded bytes (with the stored byte order).
    chunks, shape : tuple of int
        Chunk and array shape.
    fill_value : scalar
        Value of chunks that were never written.
    zarr_format : int
        2 or 3.
    """

    def __init__(self, *, store: StoreFetcher, meta_key: str, chunk_key: Callable[[tuple], str],
                 codecs: list, dtype: np.dtype, chunks: tuple[int, ...], shape: tuple[int, ...],
                 fill_value: Any, zarr_format: int) -> None:
        self.store = store
        self.meta_key = meta_key
        self.chunk_key = chunk_key
        self.codecs = codecs
        self.dtype = dtype
        self.chunks = chunks
        self.shape = shape
        self.fill_value = fill_value
        self.zarr_format = zarr_format
        self.checksummed = any(getattr(c, "codec_id", "") == "crc32c" for c in codecs)
        self.guard = ArrayGuard(store, meta_key)

    def decode(self, idx: tuple[int, ...]) -> np.ndarray:
        """Fetch and decode chunk ``idx``, trimmed to the array's extent."""
        extent = tuple(min(c, s - i * c) for i, c, s in zip(idx, self.chunks, self.shape, strict=True))
        key = self.chunk_key(idx)
        raw = self.store.get(key)
        if raw is None:
            self.guard.check(key)
            return np.full(extent, self.fill_value, dtype=self.dtype.newbyteorder("="))
        for codec in self.codecs:
            raw = codec.decode(raw)
        arr = np.frombuffer(raw, dtype=self.dtype)
        if arr.size != int(np.prod(self.chunks)):
            raise ValueError(f"decoded {arr.size} elements, expected a chunk of {self.chunks}")
        arr = arr.reshape(self.chunks)
        if extent != self.chunks:
            arr = arr[tuple(slice(0, n) for n in extent)]
        if not self.dtype.isnative:
            arr = arr.astype(self.dtype.newbyteorder("="))
        return arr


def _join(base: str, *parts: str) -> str:
    parts = tuple(p.strip("/") for p in parts if p)
    if not parts:
        return base
    if protocol_of(base) == "file":
        return os.path.join(base, *parts)
    return "/".join((base.rstrip("/"), *parts))


def _fill(value: Any, dtype: np.dtype) -> Any | None:
    if value is None:
        return 0
    if isinstance(value, str):
        if value in _FLOAT_SPECIALS and dtype.kind == "f":
            return _FLOAT_SPECIALS[value]
        return None
    if isinstance(value, bool | int | float):
        return value
    return None


def _v2_chunk_key(sep: str) -> Callable[[tuple], str]:
    """Chunk keys of zarr v2 (and of zarr v3's ``v2`` key encoding)."""

    def chunk_key(idx: tuple) -> str:
        return sep.join(map(str, idx)) if idx else "0"

    return chunk_key


def _v3_decoder(name: str) -> Any:
    import numcodecs

    if name == "crc32c":
        return numcodecs.CRC32C()
    return {"blosc": numcodecs.Blosc, "zstd": numcodecs.Zstd, "gzip": numcodecs.GZip}[name]()


def _v3_layout(meta: dict, store: StoreFetcher) -> DirectLayout | str:
    if meta.get("node_type") != "array":
        return "not an array"
    grid = meta.get("chunk_grid") or {}
    if grid.get("name") != "regular":
        return f"chunk grid {grid.get('name')!r}"
    chunks = tuple(int(c) for c in grid["configuration"]["chunk_shape"])
    try:
        dtype = np.dtype(str(meta.get("data_type")))
    except TypeError:
        return f"data type {meta.get('data_type')!r}"
    if dtype.kind not in "biuf":
        return f"data type {dtype}"
    codecs = list(meta.get("codecs") or [])
    if not codecs or codecs[0].get("name") != "bytes":
        return f"codecs {[c.get('name') for c in codecs]}"
    endian = (codecs[0].get("configuration") or {}).get("endian") or "little"
    dtype = dtype.newbyteorder("<" if endian == "little" else ">") if dtype.itemsize > 1 else dtype
    decoders = []
    for codec in codecs[1:]:
        name = codec.get("name")
        if name not in _V3_BYTES_CODECS:
            return f"codec {name!r}"
        try:
            decoders.append(_v3_decoder(name))
        except (ImportError, AttributeError, RuntimeError, ValueError) as exc:  # no crc32c backend
            return f"codec {name!r} ({exc})"
    decoders.reverse()
    encoding = meta.get("chunk_key_encoding") or {"name": "default"}
    sep = (encoding.get("configuration") or {}).get("separator")
    if encoding.get("name") == "default":
        sep = sep or "/"

        def chunk_key(idx: tuple) -> str:
            return sep.join(("c", *map(str, idx)))
    elif encoding.get("name") == "v2":
        chunk_key = _v2_chunk_key(sep or ".")
    else:
        return f"chunk key encoding {encoding.get('name')!r}"
    fill = _fill(meta.get("fill_value"), dtype)
    if fill is None:
        return f"fill value {meta.get('fill_value')!r}"
    return DirectLayout(store=store, meta_key="zarr.json", chunk_key=chunk_key, codecs=decoders,
                        dtype=dtype, chunks=chunks, shape=tuple(int(s) for s in meta["shape"]),
                        fill_value=fill, zarr_format=3)


def _v2_layout(meta: dict, store: StoreFetcher) -> DirectLayout | str:
    if meta.get("order", "C") != "C":
        return "F order"
    if meta.get("filters"):
        return "filters"
    if not isinstance(meta.get("dtype"), str):
        return "structured dtype"
    dtype = np.dtype(meta["dtype"])
    if dtype.kind not in "biuf":
        return f"data type {dtype}"
    decoders = []
    if meta.get("compressor"):
        import numcodecs

        try:
            decoders.append(numcodecs.get_codec(dict(meta["compressor"])))
        except (ValueError, KeyError, TypeError):
            return f"compressor {meta['compressor'].get('id')!r}"
    chunk_key = _v2_chunk_key(meta.get("dimension_separator") or ".")
    fill = _fill(meta.get("fill_value"), dtype)
    if fill is None:
        return f"fill value {meta.get('fill_value')!r}"
    return DirectLayout(store=store, meta_key=".zarray", chunk_key=chunk_key, codecs=decoders,
                        dtype=dtype, chunks=tuple(int(c) for c in meta["chunks"]),
                        shape=tuple(int(s) for s in meta["shape"]), fill_value=fill, zarr_format=2)


def _parse(raw: bytes, where: str) -> dict:
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise UnsupportedFormatError(
            f"{where} is not valid JSON ({exc}); the array's metadata is damaged: rewrite the "
            "array or restore the file"
        ) from exc
    if not isinstance(meta, dict):
        raise UnsupportedFormatError(f"{where} holds {type(meta).__name__}, not a JSON object; "
                                     "rewrite the array or restore the file")
    return meta


def read_direct_layout(location: str, key: str | None,
                       storage_options: Mapping[str, Any] | None = None) -> DirectLayout | str:
    """The direct layout of the zarr array at ``location``/``key``.

    Returns
    -------
    DirectLayout or str
        The layout, or the reason why chunks must go through zarr-python.

    Raises
    ------
    RemoteAccessError
        When a remote store cannot be reached.
    UnsupportedFormatError
        When the metadata document is not JSON.
    """
    store = StoreFetcher(_join(location, key or ""), storage_options)
    for meta_key, layout in (("zarr.json", _v3_layout), (".zarray", _v2_layout)):
        raw = store.get(meta_key)
        if raw is not None:
            return layout(_parse(raw, store.where(meta_key)), store)
    return "no zarr.json or .zarray beside the array"


def find_array_guard(location: str, key: str | None,
                     storage_options: Mapping[str, Any] | None = None) -> ArrayGuard | None:
    """The :class:`ArrayGuard` of the zarr array at ``location``/``key``
    (None when it has no metadata document there)."""
    store = StoreFetcher(_join(location, key or ""), storage_options)
    for meta_key in ("zarr.json", ".zarray"):
        if store.exists(meta_key):
            return ArrayGuard(store, meta_key)
    return None
