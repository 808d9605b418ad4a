"""Where predictions go: the output pixel grid of each image, the table's
rows in it, and which output chunks each row touches.

Everything here is integer arithmetic on the coordinate table; nothing reads
pixels. Positions are read-level pixels of the input image (what the dataset
yields as ``batch["position"]``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..dataset.boxes import read_level_starts, round_half_up
from ..table import PatchTable, position_columns
from .errors import PredictionError

__all__ = ["OutputGeometry", "plan_outputs", "output_names", "DEFAULT_CHUNK"]

DEFAULT_CHUNK = 512  # output chunk side (per spatial dim) when none is given


@dataclass
class OutputGeometry:
    """The output pixel grid of one image.

    Attributes
    ----------
    image_id : int
    dims : tuple of str
        Spatial dims of the grid, outermost first (the output adds ``c`` before them).
    per_patch : bool
        One value per patch (``level="patch"``): row ``r`` is output pixel
        ``round((start - offset) / stride)``.
    factor : tuple of int
        Read-level pixels per output pixel (the stride for ``per_patch``).
    offset : tuple of int
        Read-level pixel where output pixel 0 starts (``per_patch``: where
        the lattice of patch starts begins).
    box : tuple of int
        Size of a row's box in output pixels (``patch / factor``; 1 for ``per_patch``).
    shape, chunks : tuple of int
        Output array shape and chunks over ``dims``.
    scale, translation : tuple of float
        Physical size of an output pixel and position of the edge of output
        pixel 0 (the input's physical space).
    units : tuple of str or None
    starts : numpy.ndarray
        ``(R, ndims)`` distinct read-level starts of the image's table rows,
        sorted; a row's id is its index here.
    """

    image_id: int
    dims: tuple[str, ...]
    per_patch: bool
    factor: tuple[int, ...]
    offset: tuple[int, ...]
    box: tuple[int, ...]
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    scale: tuple[float, ...]
    translation: tuple[float, ...]
    units: tuple[str | None, ...]
    starts: np.ndarray
    keys: np.ndarray

    @property
    def chunk_grid(self) -> tuple[int, ...]:
        """Number of output chunks per dim."""
        return tuple(-(-s // c) for s, c in zip(self.shape, self.chunks, strict=True))

    @property
    def starts_span(self) -> tuple[int, ...]:
        """Bounds of the row starts per dim (for linear row keys)."""
        return tuple(int(v) for v in self.starts.max(axis=0) + 1) if len(self.starts) else (1,)

    def row_ids(self, starts: np.ndarray, *, where: str) -> np.ndarray:
        """Row ids of read-level ``starts`` (``(B, ndims)``); an unknown start is an error."""
        starts = np.asarray(starts, dtype=np.int64).reshape(-1, len(self.dims))
        span = np.asarray(self.starts_span)
        inside = np.all((starts >= 0) & (starts < span), axis=1)
        ids = np.full(len(starts), -1, dtype=np.int64)
        if inside.any():
            keys = _linear(starts[inside], self.starts_span)
            found = np.searchsorted(self.keys, keys)
            found = np.clip(found, 0, max(len(self.keys) - 1, 0))
            hit = self.keys[found] == keys if len(self.keys) else np.zeros(len(keys), bool)
            ids[np.flatnonzero(inside)[hit]] = found[hit]
        if (ids < 0).any():
            bad = starts[ids < 0][0].tolist()
            raise PredictionError(
                f"{where}: position start {dict(zip(self.dims, bad, strict=True))} of image "
                f"{self.image_id} is not a row of the writer's table; write the positions the "
                "dataset of that same table yields (batch['position'], read-level pixels)"
            )
        return ids

    def boxes(self, row_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Output-pixel boxes ``[lo, hi)`` of rows, *not* clipped to the array."""
        starts = self.starts[np.asarray(row_ids, dtype=np.int64)]
        lo = (starts - np.asarray(self.offset)) // np.asarray(self.factor)
        if self.per_patch:
            lo = round_half_up((starts - np.asarray(self.offset)) / np.asarray(self.factor))
        return lo, lo + np.asarray(self.box)

    def chunks_of_rows(self, row_ids: np.ndarray) -> list[list[int]]:
        """For each row, the linear indices of the output chunks its clipped box touches."""
        lo, hi = self.boxes(row_ids)
        shape = np.asarray(self.shape)
        chunks = np.asarray(self.chunks)
        lo = np.clip(lo, 0, shape)
        hi = np.clip(hi, 0, shape)
        out = []
        for a, b in zip(lo.tolist(), hi.tolist(), strict=True):
            if any(x >= y for x, y in zip(a, b, strict=True)):
                out.append([])
                continue
            ranges = [range(x // c, (y - 1) // c + 1) for x, y, c in zip(a, b, chunks.tolist(), strict=True)]
            idx = np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, len(ranges))
            out.append(np.ravel_multi_index(tuple(idx.T), self.chunk_grid).tolist())
        return out

    def expected_rows(self) -> dict[int, int]:
        """Number of rows touching each output chunk (linear index)."""
        counts: dict[int, int] = {}
        for chunks in self.chunks_of_rows(np.arange(len(self.starts))):
            for c in chunks:
                counts[c] = counts.get(c, 0) + 1
        return counts

    def chunk_slices(self, chunk: int) -> tuple[slice, ...]:
        """Output-array slices (spatial dims) of a chunk."""
        idx = np.unravel_index(chunk, self.chunk_grid)
        return tuple(slice(int(i) * c, min((int(i) + 1) * c, s))
                     for i, c, s in zip(idx, self.chunks, self.shape, strict=True))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (without the rows), stored with the output."""
        return {"dims": list(self.dims), "per_patch": self.per_patch, "factor": list(self.factor),
                "offset": list(self.offset), "shape": list(self.shape), "chunks": list(self.chunks),
                "scale": list(self.scale), "translation": list(self.translation)}


def _linear(starts: np.ndarray, span: Sequence[int]) -> np.ndarray:
    return np.ravel_multi_index(tuple(np.asarray(starts, dtype=np.int64).T), tuple(span))


def _per_dim(value: Any, dims: Sequence[str], name: str) -> tuple[int, ...]:
    if isinstance(value, Mapping):
        missing = [d for d in dims if d not in value]
        if missing:
            raise PredictionError(f"{name}={dict(value)} lacks the dims {missing}")
        return tuple(int(value[d]) for d in dims)
    if isinstance(value, int | np.integer):
        return (int(value),) * len(dims)
    values = tuple(int(v) for v in value)
    if len(values) != len(dims):
        raise PredictionError(f"{name}={value!r} needs one value per grid dim {list(dims)}")
    return values


def _units(entry: Mapping[str, Any], dims: Sequence[str], storage_options: Any) -> tuple:
    """Physical units of the input (from its coordinates), or None per dim when unknown."""
    try:
        from ..io import open_image

        kwargs = {k: v for k, v in dict(entry.get("open") or {}).items()
                  if k in ("source", "axes", "data_group", "level") and v is not None}
        if "source" not in kwargs:
            return (None,) * len(dims)
        arr = open_image(**kwargs, storage_options=storage_options)
        return tuple((arr.coords[d].attrs.get("units") if d in arr.coords else None) or None
                     for d in dims)
    except Exception:  # units are a nicety: an input that cannot be reopened here has none
        return (None,) * len(dims)


def plan_outputs(table: PatchTable, *, level: int | str | None,
                 chunks: int | Sequence[int] | Mapping[str, int] | None,
                 storage_options: Mapping[str, Any] | None) -> dict[int, OutputGeometry]:
    """The output grid of every image that has rows in ``table``.

    Parameters
    ----------
    table : PatchTable
    level : int, "patch" or None
        ``None``/int ``k``: one output pixel per ``2**k`` read-level pixels;
        ``"patch"``: one value per patch on the grid's stride lattice.
    chunks : int, sequence or mapping, optional
        Output chunk side per dim (default 512, or the array when smaller).
    storage_options : mapping, optional
        To reopen inputs for their physical units.

    Returns
    -------
    dict
        ``image_id -> OutputGeometry``.
    """
    dims = tuple(table.dims)
    grid = table.grid
    patch = _per_dim(grid.get("patch", {}), dims, "the table's patch size")
    stride = _per_dim(grid.get("stride") or grid.get("patch", {}), dims, "the table's stride")
    if level == "patch":
        factor = stride
    elif level is None or (isinstance(level, int | np.integer) and not isinstance(level, bool)
                           and level >= 0):
        factor = (2 ** int(level or 0),) * len(dims)
        bad = [d for d, p, f in zip(dims, patch, factor, strict=True) if p % f]
        if bad:
            raise PredictionError(
                f"level={level} means {factor[0]} read-level pixels per output pixel, which does "
                f"not divide the patch size {dict(zip(dims, patch, strict=True))}; choose a "
                "smaller level"
            )
    else:
        raise PredictionError(
            f"level={level!r} is not an output level; pass None (the table's read level), an "
            "int k >= 0 (2**k read-level pixels per output pixel) or 'patch' (one value per patch)"
        )
    frame = table.frame
    images = table.images
    out: dict[int, OutputGeometry] = {}
    for image_id in np.unique(frame["image_id"].to_numpy()).tolist():
        entry = images[image_id]
        rows = frame.loc[frame["image_id"] == image_id, position_columns(dims)].to_numpy(np.int64)
        starts = np.unique(read_level_starts(rows, entry, dims), axis=0)
        shape_in = np.array([int(entry["shape"][d]) for d in dims])
        residues = np.unique(starts % np.asarray(factor), axis=0)
        if len(residues) > 1 and level != "patch":
            raise PredictionError(
                f"image {image_id}: the patch starts do not fall on one lattice of "
                f"{factor[0]} pixels, so level={level} cannot place them on whole output "
                "pixels; choose a level whose factor divides the grid's stride"
            )
        offset = tuple(int(v) for v in (starts.min(axis=0) % np.asarray(factor)))
        if level == "patch":
            box = (1,) * len(dims)
            shape = tuple(int(v) for v in (shape_in - np.asarray(offset) - 1) // np.asarray(factor) + 1)
            shape = tuple(max(s, int(m) + 1) for s, m in zip(
                shape, round_half_up((starts - np.asarray(offset)) / np.asarray(factor)).max(axis=0),
                strict=True))
            edge = np.asarray(offset) + (np.asarray(patch) - np.asarray(factor)) / 2.0
        else:
            box = tuple(p // f for p, f in zip(patch, factor, strict=True))
            shape = tuple(int(v) for v in -(-(shape_in - np.asarray(offset)) // np.asarray(factor)))
            edge = np.asarray(offset, dtype=float)
        side = (_per_dim(chunks, dims, "chunks") if chunks is not None
                else (DEFAULT_CHUNK,) * len(dims))
        chunk_shape = tuple(max(1, min(c, s)) for c, s in zip(side, shape, strict=True))
        scale_in = np.array([float(entry.get("scale", {}).get(d, 1.0)) for d in dims])
        origin_in = np.array([float(entry.get("origin", {}).get(d, 0.0)) for d in dims])
        keys = _linear(starts, tuple(int(v) for v in starts.max(axis=0) + 1))
        out[image_id] = OutputGeometry(
            image_id=image_id, dims=dims, per_patch=level == "patch", factor=factor,
            offset=offset, box=box, shape=shape, chunks=chunk_shape,
            scale=tuple(float(v) for v in scale_in * np.asarray(factor)),
            translation=tuple(float(v) for v in origin_in + edge * scale_in),
            units=_units(entry, dims, storage_options), starts=starts, keys=keys,
        )
    return out


_SUFFIXES = re.compile(r"(\.ome)?\.(zarr|tiff?|png|jpe?g|svs|ndpi|bmp)$", re.IGNORECASE)


def output_names(table: PatchTable, image_ids: Sequence[int]) -> dict[int, str]:
    """A file name per image: the input's stem + ``.ome.zarr`` (``-<id>`` added
    when two inputs share a stem, or for in-memory inputs)."""
    stems = {}
    for i in image_ids:
        name = str(table.images[i].get("name") or "")
        stem = _SUFFIXES.sub("", os.path.basename(name.rstrip("/"))) if "<" not in name else ""
        stems[i] = re.sub(r"[^A-Za-z0-9._-]", "_", stem) or "image"
    counts: dict[str, int] = {}
    for s in stems.values():
        counts[s] = counts.get(s, 0) + 1
    return {i: (f"{s}-{i}" if counts[s] > 1 or s == "image" else s) + ".ome.zarr"
            for i, s in stems.items()}
