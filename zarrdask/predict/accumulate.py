"""Per-chunk accumulation of blended patch predictions.

A process keeps, for each output chunk, each row's weighted contribution to
it. A chunk whose rows have all arrived is combined — always in row order, so
the bytes do not depend on the order, the process or the split in which
patches came — and written whole (chunk-aligned: no two writers ever write
parts of one chunk). What is left at ``close`` (chunks whose rows were split
between processes) is spilled as one fragment file per (chunk, row); the
writer that finds every row of the image accounted for combines them.
Fragments are named by row, so a rerun overwrites rather than adds.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

import numpy as np

from .plan import OutputGeometry
from .windows import blend_window

__all__ = ["ChunkAccumulator", "combine", "encode_fragment", "decode_fragment"]


def combine(contributions: Iterable[tuple[int, tuple[slice, ...], np.ndarray]],
            chunk_shape: tuple[int, ...], *, channels: int, blend: str,
            dtype: np.dtype) -> np.ndarray:
    """One output chunk ``(channels, *chunk_shape)`` from row contributions.

    Parameters
    ----------
    contributions : iterable of (row, slices, array)
        ``array`` is ``(channels + 1, ...)`` (weighted values, then the
        weight) for weighted blends, ``(channels, ...)`` for ``max``;
        ``slices`` place it in the chunk. Combined in increasing row order.
    chunk_shape : tuple of int
    channels : int
    blend : str
    dtype : numpy.dtype
        Output dtype; uncovered pixels get its fill value (NaN or 0).
    """
    from .ngff import fill_value

    dtype = np.dtype(dtype)
    items = sorted(contributions, key=lambda item: item[0])
    if blend == "max":
        acc = np.full((channels, *chunk_shape), -np.inf)
        for _row, slices, arr in items:
            target = acc[(slice(None), *slices)]
            np.maximum(target, arr, out=target)
        covered = np.isfinite(acc[0]) if channels else np.zeros(chunk_shape, bool)
        value = acc
    else:
        acc = np.zeros((channels + 1, *chunk_shape))
        for _row, slices, arr in items:
            acc[(slice(None), *slices)] += arr
        weight = acc[channels]
        covered = weight > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            value = acc[:channels] / np.where(covered, weight, 1.0)
        if dtype.kind in "iu":
            value = np.rint(value)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        value = np.clip(np.nan_to_num(value), info.min, info.max)
    with np.errstate(invalid="ignore"):
        return np.where(covered[None], value, fill_value(dtype)).astype(dtype)


def encode_fragment(slices: tuple[slice, ...], arr: np.ndarray) -> bytes:
    """Bytes of one (chunk, row) contribution: the array and where it sits."""
    buf = io.BytesIO()
    np.savez(buf, a=arr, lo=np.array([s.start for s in slices]), hi=np.array([s.stop for s in slices]))
    return buf.getvalue()


def decode_fragment(data: bytes) -> tuple[tuple[slice, ...], np.ndarray]:
    """Inverse of :func:`encode_fragment`."""
    with np.load(io.BytesIO(data)) as f:
        slices = tuple(slice(int(a), int(b)) for a, b in zip(f["lo"], f["hi"], strict=True))
        return slices, f["a"]


class ChunkAccumulator:
    """The pending chunks of one image in one process.

    Parameters
    ----------
    geo : OutputGeometry
    channels : int
    blend : str
    dtype : numpy.dtype
    """

    def __init__(self, geo: OutputGeometry, *, channels: int, blend: str, dtype: np.dtype) -> None:
        self.geo, self.channels, self.blend, self.dtype = geo, channels, blend, np.dtype(dtype)
        self.expected = geo.expected_rows()
        self.pending: dict[int, dict[int, tuple[tuple[slice, ...], np.ndarray]]] = {}
        self.done: set[int] = set()
        self.rows: set[int] = set()

    def add(self, row: int, lo: np.ndarray, values: np.ndarray) -> list[int]:
        """Record row ``row``'s prediction ``values`` (``(channels, *box)``,
        output pixels, box starting at ``lo``, not clipped).

        Returns
        -------
        list of int
            Chunks that are now complete (pop them with :meth:`finish`).
        """
        geo = self.geo
        self.rows.add(int(row))
        box = values.shape[1:]
        if self.blend == "max":
            contribution = values.astype(np.float64, copy=False)
        else:
            weights = blend_window(box, self.blend)
            contribution = np.concatenate([values * weights, weights[None]], axis=0)
        ready = []
        for chunk in geo.chunks_of_rows(np.array([row]))[0]:
            if chunk in self.done:
                continue  # the row came again (e.g. even_shards): already combined
            cs = geo.chunk_slices(chunk)
            start = [max(s.start, int(a)) for s, a in zip(cs, lo, strict=True)]
            stop = [min(s.stop, int(a) + b) for s, a, b in zip(cs, lo, box, strict=True)]
            src = tuple(slice(a - int(o), b - int(o)) for a, b, o in zip(start, stop, lo, strict=True))
            dst = tuple(slice(a - s.start, b - s.start) for a, b, s in zip(start, stop, cs, strict=True))
            self.pending.setdefault(chunk, {})[int(row)] = (dst, contribution[(slice(None), *src)].copy())
            if len(self.pending[chunk]) == self.expected.get(chunk, -1):
                ready.append(chunk)
        return ready

    def finish(self, chunk: int) -> tuple[tuple[slice, ...], np.ndarray]:
        """Combine a complete chunk; returns its output slices and pixels."""
        rows = self.pending.pop(chunk)
        self.done.add(chunk)
        cs = self.geo.chunk_slices(chunk)
        shape = tuple(s.stop - s.start for s in cs)
        block = combine(((r, sl, a) for r, (sl, a) in rows.items()), shape,
                        channels=self.channels, blend=self.blend, dtype=self.dtype)
        return cs, block

    def leftovers(self) -> Iterable[tuple[int, int, tuple[slice, ...], np.ndarray]]:
        """Every (chunk, row, slices, array) still pending."""
        for chunk, rows in self.pending.items():
            for row, (slices, arr) in rows.items():
                yield chunk, row, slices, arr

    def state(self) -> dict[str, Any]:
        """What this process wrote: its rows and the chunks it combined."""
        return {"rows": np.array(sorted(self.rows), dtype=np.int64),
                "done": np.array(sorted(self.done), dtype=np.int64)}
