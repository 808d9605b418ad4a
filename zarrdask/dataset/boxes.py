"""From table rows to read boxes: pure integer geometry, no I/O.

A row of the coordinate table holds the top-left of a patch in level-0
pixels of its image. Every modality (images, labels, masks, extra ones) is
read for the same *physical* box, each at its own resolution:

* image read-level start ``s = round((origin0 + p * scale0 - origin) / scale)``
  (``p`` the level-0 position, ``origin0/scale0`` the image's level 0,
  ``origin/scale`` its read level); the padded box is
  ``[s - pad, s + patch + pad)``;
* its physical start ``phys = origin + (s - pad) * scale`` and extent
  ``(patch + 2 pad) * scale``;
* modality ``m`` reads ``start_m = round((phys - origin_m) / scale_m)`` and
  ``length_m = round(extent / scale_m)`` (at least 1).

``round`` is round-half-up (``floor(v + 0.5)``) everywhere, so a box never
depends on numpy's banker's rounding. Boxes may run outside the array (pad,
incomplete edge patches); :func:`clip_box` splits them into the part that is
read and the widths that are padded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DatasetError, TableError

__all__ = [
    "Geometry",
    "round_half_up",
    "read_level_starts",
    "modality_boxes",
    "clip_box",
    "chunk_ranges",
    "pad_array",
    "index_map",
    "INDEX_MODES",
    "parse_output_dims",
    "to_output_dims",
]


def round_half_up(values: np.ndarray | float) -> np.ndarray:
    """Round to the nearest integer, halves up, as int64.

    A tiny tolerance absorbs floating-point noise (``31.999999999`` is 32).
    """
    return np.floor(np.asarray(values, dtype=np.float64) + 0.5 + 1e-9).astype(np.int64)


@dataclass(frozen=True)
class Geometry:
    """The geometry of one stored array (one modality of one image).

    Attributes
    ----------
    dims : tuple of str
        Stored dims, in the array's order.
    shape, chunks : tuple of int
        Shape and storage chunk (or shard) shape of the whole stored array.
    grid_axes : tuple of int
        Position in ``dims`` of each grid dim (outermost first).
    valid_start, valid_stop : tuple of int
        The readable region per stored dim: the entry's ROI on grid dims,
        the whole extent elsewhere. Reads outside it are padded.
    scale, origin : tuple of float
        Physical pixel size and position of pixel 0 per grid dim.
    dtype : str
        The stored dtype.
    """

    dims: tuple[str, ...]
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    grid_axes: tuple[int, ...]
    valid_start: tuple[int, ...]
    valid_stop: tuple[int, ...]
    scale: tuple[float, ...]
    origin: tuple[float, ...]
    dtype: str

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any], grid_dims: Sequence[str], *,
                   where: str = "the table") -> Geometry:
        """Geometry of a table metadata entry (see :func:`zarrdask.table.source_entry`).

        Raises
        ------
        TableError
            When the entry lacks a grid dim or its geometry.
        """
        try:
            dims = tuple(str(d) for d in entry["dims"])
            shape = tuple(int(entry["shape"][d]) for d in dims)
            chunk_map = entry.get("chunks") or {}
            chunks = tuple(max(1, int(chunk_map.get(d, shape[i]) or 1)) for i, d in enumerate(dims))
        except (KeyError, TypeError) as exc:
            raise TableError(
                f"{where} has no usable geometry (dims/shape/chunks: {exc}); rebuild the table "
                "with zarrdask.build_table"
            ) from exc
        missing = [d for d in grid_dims if d not in dims]
        if missing:
            raise TableError(
                f"{where} has dims {list(dims)} without the grid dims {missing}; every modality "
                "must hold the grid's spatial dims"
            )
        roi = entry.get("roi") or {}
        start = []
        stop = []
        for i, d in enumerate(dims):
            lo, hi = (roi.get(d) or [0, shape[i]]) if d in grid_dims else (0, shape[i])
            start.append(max(0, int(lo)))
            stop.append(min(shape[i], int(hi)))
        scale = entry.get("scale") or {}
        origin = entry.get("origin") or {}
        return cls(
            dims=dims,
            shape=shape,
            chunks=chunks,
            grid_axes=tuple(dims.index(d) for d in grid_dims),
            valid_start=tuple(start),
            valid_stop=tuple(stop),
            scale=tuple(float(scale.get(d, 1.0)) for d in grid_dims),
            origin=tuple(float(origin.get(d, 0.0)) for d in grid_dims),
            dtype=str(entry.get("dtype", "uint8")),
        )


def read_level_starts(positions: np.ndarray, entry: Mapping[str, Any],
                      grid_dims: Sequence[str]) -> np.ndarray:
    """Read-level top-lefts of rows given in level-0 pixels.

    Parameters
    ----------
    positions : (N, ndims) int array
        Level-0 top-lefts (the table's position columns).
    entry : mapping
        The image's metadata entry (``scale``, ``origin``, ``scale0``, ``origin0``).
    grid_dims : sequence of str
        The grid's spatial dims.

    Returns
    -------
    (N, ndims) int64 array
    """
    positions = np.asarray(positions, dtype=np.int64).reshape(-1, len(grid_dims))
    scale = np.array([float(entry.get("scale", {}).get(d, 1.0)) for d in grid_dims])
    origin = np.array([float(entry.get("origin", {}).get(d, 0.0)) for d in grid_dims])
    scale0 = np.array([float(entry.get("scale0", {}).get(d, s)) for d, s in zip(grid_dims, scale, strict=True)])
    origin0 = np.array([float(entry.get("origin0", {}).get(d, o)) for d, o in zip(grid_dims, origin, strict=True)])
    if np.array_equal(scale, scale0) and np.array_equal(origin, origin0):
        return positions.copy()
    phys = origin0 + positions * scale0
    return round_half_up((phys - origin) / scale)


def modality_boxes(starts: np.ndarray, patch: Sequence[int], pad: Sequence[int], image: Geometry,
                   target: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Padded boxes of rows in the pixels of another modality.

    Parameters
    ----------
    starts : (N, ndims) int array
        Unpadded top-lefts in the image's read-level pixels.
    patch, pad : sequence of int
        Patch size and padding per grid dim, in image read-level pixels.
    image : Geometry
        The image (the reference modality).
    target : Geometry
        The modality read.

    Returns
    -------
    start : (N, ndims) int64 array
        Top-left of the box in ``target`` pixels (may be negative).
    size : (ndims,) int64 array
        Box size in ``target`` pixels (at least 1).
    """
    starts = np.asarray(starts, dtype=np.int64)
    patch_a = np.asarray(patch, dtype=np.int64)
    pad_a = np.asarray(pad, dtype=np.int64)
    padded = starts - pad_a
    length = patch_a + 2 * pad_a
    if target is image or (target.scale == image.scale and target.origin == image.origin):
        return padded, length
    scale = np.asarray(image.scale)
    tscale = np.asarray(target.scale)
    phys = np.asarray(image.origin) + padded * scale
    start = round_half_up((phys - np.asarray(target.origin)) / tscale)
    size = np.maximum(1, round_half_up(length * scale / tscale))
    return start, size


def clip_box(lo: Sequence[int], hi: Sequence[int], valid_lo: Sequence[int],
             valid_hi: Sequence[int]) -> tuple[list[int], list[int], list[tuple[int, int]]] | None:
    """The readable part of a box and the padding around it.

    Returns
    -------
    (read_lo, read_hi, widths) or None
        ``widths`` per dim ``(before, after)``; None when nothing of the box
        is readable.
    """
    read_lo, read_hi, widths = [], [], []
    for a, b, v0, v1 in zip(lo, hi, valid_lo, valid_hi, strict=True):
        r0, r1 = max(a, v0), min(b, v1)
        if r1 <= r0:
            return None
        read_lo.append(r0)
        read_hi.append(r1)
        widths.append((r0 - a, b - r1))
    return read_lo, read_hi, widths


def chunk_ranges(read_lo: Sequence[int], read_hi: Sequence[int],
                 chunks: Sequence[int]) -> list[range]:
    """Chunk indices per dim covering ``[read_lo, read_hi)``."""
    return [range(a // c, (b - 1) // c + 1) for a, b, c in zip(read_lo, read_hi, chunks, strict=True)]


#: Padding modes that map every pixel of the box to a pixel of the readable
#: region (so pads larger than the patch's readable part are still exact).
INDEX_MODES = ("edge", "reflect", "symmetric", "wrap")


def index_map(lo: int, hi: int, valid_lo: int, valid_hi: int, mode: str) -> np.ndarray:
    """Source index of each position of ``[lo, hi)`` under an index padding mode.

    Positions inside ``[valid_lo, valid_hi)`` map to themselves; outside, they
    follow :func:`numpy.pad` applied to the whole readable region with
    ``mode`` (``edge``, ``reflect``, ``symmetric`` or ``wrap``).
    """
    n = valid_hi - valid_lo
    j = np.arange(lo, hi, dtype=np.int64) - valid_lo
    if mode == "edge" or n == 1:
        j = np.clip(j, 0, n - 1)
    elif mode == "reflect":
        period = 2 * (n - 1)
        j = np.mod(j, period)
        j = np.where(j < n, j, period - j)
    elif mode == "symmetric":
        period = 2 * n
        j = np.mod(j, period)
        j = np.where(j < n, j, period - 1 - j)
    elif mode == "wrap":
        j = np.mod(j, n)
    else:
        raise ValueError(f"{mode!r} is not an index padding mode ({', '.join(INDEX_MODES)})")
    return j + valid_lo


#: Padding modes accepted for pads and reads outside the array: zeros
#: (``"constant"``) or a :func:`numpy.pad` mode.
PAD_MODES = ("constant", "edge", "reflect", "symmetric", "wrap", "linear_ramp", "maximum",
             "mean", "median", "minimum")


def pad_array(arr: np.ndarray, widths: Sequence[tuple[int, int]], mode: str) -> np.ndarray:
    """Pad ``arr`` by ``widths`` with zeros (``"constant"``) or a numpy pad mode
    (statistics such as ``mean`` are taken over ``arr``, the part that was read)."""
    if not any(a or b for a, b in widths):
        return arr
    return np.pad(arr, widths, mode=mode)


def parse_output_dims(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``"yxc"`` or ``("y", "x", "c")`` to lower-case dim names."""
    if isinstance(spec, str):
        return tuple(ch.lower() for ch in spec.strip())
    return tuple(str(d).lower() for d in spec)


def to_output_dims(arr: np.ndarray, dims: Sequence[str], target: Sequence[str], *,
                   modality: str = "images") -> np.ndarray:
    """Transpose ``arr`` (with ``dims``) to ``target``, inserting size-1 dims
    for letters it lacks and dropping size-1 dims the target lacks.

    Raises
    ------
    DatasetError
        When a dim of size > 1 is missing from ``target``.
    """
    dims = list(dims)
    drop = [d for d in dims if d not in target]
    big = [d for d in drop if arr.shape[dims.index(d)] != 1]
    if big:
        raise DatasetError(
            f"output_dims[{modality!r}]={''.join(target)!r} leaves out {big}, which have more "
            f"than one element in the {modality} arrays (dims {''.join(dims)!r}); include them"
        )
    if drop:
        arr = arr.reshape([n for n, d in zip(arr.shape, dims, strict=True) if d not in drop])
        dims = [d for d in dims if d not in drop]
    order = [dims.index(d) for d in target if d in dims]
    arr = arr.transpose(order)
    present = [d for d in target if d in dims]
    shape = [arr.shape[present.index(d)] if d in present else 1 for d in target]
    return arr.reshape(shape)
