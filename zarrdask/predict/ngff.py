"""The OME-NGFF 0.5 (zarr v3) image a prediction is written to: the group,
its level-0 array (chunked, compressed, crc32c-checksummed), the multiscales
metadata and the pyramid levels built with dask at the end."""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import partial
from typing import Any

import dask.array as da
import numpy as np
import zarr
import zarr.codecs

from ..io.location import get_filesystem, protocol_of, remote_error
from .errors import PredictionError
from .plan import OutputGeometry

__all__ = ["writable_store", "open_level0", "build_pyramid", "write_multiscales", "codecs",
           "fill_value"]


def writable_store(location: str, storage_options: Mapping[str, Any] | None = None):
    """A writable zarr store for a local path or a URL (through fsspec)."""
    if protocol_of(location) == "file":
        return zarr.storage.LocalStore(location)
    try:
        fs, path = get_filesystem(location, storage_options, asynchronous=True)
    except Exception as exc:
        raise remote_error(location, storage_options, exc) from exc
    if not fs.async_impl:
        from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper

        fs = AsyncFileSystemWrapper(fs)
    return zarr.storage.FsspecStore(fs=fs, path=path, read_only=False)


def codecs() -> dict[str, Any]:
    """The codec chain: little-endian bytes, Blosc-zstd, then a crc32c checksum."""
    return {
        "serializer": zarr.codecs.BytesCodec(endian="little"),
        "compressors": [zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),
                        zarr.codecs.Crc32cCodec()],
    }


def fill_value(dtype: np.dtype) -> Any:
    """What pixels no patch covers read as: NaN for floats, 0 otherwise."""
    return np.nan if np.dtype(dtype).kind == "f" else 0


def _level_shape(geo: OutputGeometry, channels: int, k: int) -> tuple[int, ...]:
    shape = [channels]
    for d, s in zip(geo.dims, geo.shape, strict=True):
        shape.append(-(-s // 2**k) if d in ("y", "x") else s)
    return tuple(shape)


_CREATE_RETRIES = 20


def open_level0(location: str, geo: OutputGeometry, *, channels: int, dtype: np.dtype,
                storage_options: Mapping[str, Any] | None) -> zarr.Array:
    """Create the output's group and level-0 array, or open them when a
    previous (or concurrent) writer already made them with the same geometry."""
    store = writable_store(location, storage_options)
    return _require_level(store, geo, location, 0, channels=channels, dtype=dtype)


def _require_level(store: Any, geo: OutputGeometry, location: str, k: int, *, channels: int,
                   dtype: np.dtype) -> zarr.Array:
    """Level ``k`` of the output, created or opened whoever else creates it.

    Writers that start (or finish) together race to create the same arrays:
    whoever loses finds it made by the other (``ContainsArrayError``, or
    metadata that is being written) and opens it instead; an existing array
    of another geometry is a :class:`PredictionError`.
    """
    shape = _level_shape(geo, channels, k)
    chunks = (channels, *geo.chunks)
    last: Exception | None = None
    for attempt in range(_CREATE_RETRIES):
        try:
            arr = _open_or_create(store, geo, location, str(k), shape=shape, chunks=chunks,
                                  channels=channels, dtype=dtype)
            break
        except (zarr.errors.ContainsArrayError, zarr.errors.ContainsGroupError,
                FileExistsError, ValueError, KeyError) as exc:  # another writer is creating it
            if isinstance(exc, PredictionError):
                raise
            last = exc
            time.sleep(0.01 * (attempt + 1))
    else:
        raise PredictionError(
            f"cannot create or open {location}/{k} ({last!r}); check that nothing else writes "
            "there"
        ) from last
    if (tuple(arr.shape), tuple(arr.chunks), np.dtype(arr.dtype)) != (shape, chunks, np.dtype(dtype)):
        raise PredictionError(
            f"{location} already holds an array of shape {arr.shape}, chunks {arr.chunks}, "
            f"dtype {arr.dtype} at {k}, not the shape {shape}, chunks {chunks}, dtype "
            f"{np.dtype(dtype)} this writer makes; remove it or write to another `out`"
        )
    return arr


def _open_or_create(store: Any, geo: OutputGeometry, location: str, name: str, *, shape: tuple,
                    chunks: tuple, channels: int, dtype: np.dtype) -> zarr.Array:
    try:
        return zarr.open_group(store, mode="r+")[name]
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError,
            zarr.errors.NodeTypeValidationError):
        pass
    group = zarr.open_group(store, mode="a", zarr_format=3)
    if "ome" not in group.attrs:
        group.attrs["ome"] = _ome(geo, location, channels, levels=1)
    return group.require_array(name, shape=shape, chunks=chunks, dtype=dtype,
                               fill_value=fill_value(dtype), dimension_names=("c", *geo.dims),
                               **codecs())


def _ome(geo: OutputGeometry, name: str, channels: int, *, levels: int) -> dict[str, Any]:
    axes = [{"name": "c", "type": "channel"}]
    for d, unit in zip(geo.dims, geo.units, strict=True):
        axes.append({"name": d, "type": "space", **({"unit": unit} if unit and unit != "pixel" else {})})
    datasets = []
    for k in range(levels):
        scale = [1.0] + [s * (2**k if d in ("y", "x") else 1)
                         for d, s in zip(geo.dims, geo.scale, strict=True)]
        datasets.append({"path": str(k), "coordinateTransformations": [
            {"type": "scale", "scale": scale},
            {"type": "translation", "translation": [0.0, *geo.translation]},
        ]})
    return {"version": "0.5", "multiscales": [{
        "name": name.rstrip("/").rsplit("/", 1)[-1], "axes": axes, "datasets": datasets,
        "metadata": {"zarrdask": {"prediction": geo.to_dict(), "channels": channels}},
    }]}


def write_multiscales(location: str, geo: OutputGeometry, *, channels: int, levels: int,
                      storage_options: Mapping[str, Any] | None) -> None:
    """Write the group's ``ome`` attributes listing ``levels`` levels."""
    group = zarr.open_group(writable_store(location, storage_options), mode="r+")
    group.attrs["ome"] = _ome(geo, location, channels, levels=levels)


def _reduce(block: np.ndarray, axis: tuple[int, ...] | None = None, *, how: str = "mean",
            integer: bool = False, **_: Any) -> np.ndarray:
    """Mean or max over ``axis`` leaving out NaN (pixels no patch covered);
    all-NaN windows stay NaN. No warnings: dask runs this in threads, where
    ``warnings.catch_warnings`` is not safe."""
    if integer:
        return np.max(block, axis=axis) if how == "max" else np.mean(block, axis=axis)
    valid = np.isfinite(block)
    count = valid.sum(axis=axis)
    if how == "max":
        out = np.where(valid, block, -np.inf).max(axis=axis, initial=-np.inf)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(valid, block, 0.0).sum(axis=axis) / count
    return np.where(count > 0, out, np.nan)


def build_pyramid(location: str, geo: OutputGeometry, *, channels: int, dtype: np.dtype,
                  blend: str, storage_options: Mapping[str, Any] | None,
                  min_side: int | None = None) -> int:
    """Halve y/x level after level with dask until the image fits one chunk.

    ``max`` blending downsamples with the max (masks stay masks), the others
    with the mean; pixels no patch covered (NaN) are left out of the mean.

    Returns
    -------
    int
        The number of levels, level 0 included.
    """
    store = writable_store(location, storage_options)
    group = zarr.open_group(store, mode="r+")
    dtype = np.dtype(dtype)
    integer = dtype.kind != "f"
    spatial = [i + 1 for i, d in enumerate(geo.dims) if d in ("y", "x")]
    side = min_side or max(geo.chunks[i - 1] for i in spatial)
    k = 0
    source = da.from_zarr(group["0"])
    while max(source.shape[i] for i in spatial) > side:
        k += 1
        pad = [(0, (s % 2) if i in spatial else 0) for i, s in enumerate(source.shape)]
        work = source.astype(np.float64)
        if any(p for _, p in pad):
            work = (da.pad(work, pad, mode="edge") if integer
                    else da.pad(work, pad, mode="constant", constant_values=np.nan))
        even = {i: max(2, work.chunksize[i] // 2 * 2) for i in spatial}
        small = da.coarsen(partial(_reduce, how=blend, integer=integer), work.rechunk(even),
                           {i: 2 for i in spatial}, trim_excess=False)
        if integer:
            small = da.rint(small) if blend != "max" else small
        small = small.astype(dtype)
        # writers finishing together build the same levels: the same bytes, whole chunks
        target = _require_level(store, geo, location, k, channels=channels, dtype=dtype)
        da.store(small.rechunk(target.chunks), target, lock=False)
        source = da.from_zarr(target)
    return k + 1
