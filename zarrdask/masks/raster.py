"""A numpy-indexable raster of polygons, drawn on demand per box with
:func:`skimage.draw.polygon` (the reader behind annotation masks and labels,
see :mod:`zarrdask.masks.annotations`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["AnnotationRaster"]


class AnnotationRaster:
    """A numpy-indexable 2-D raster of polygons, drawn on demand per box.

    Parameters
    ----------
    polygons : list of shapely.Polygon
        In raster index space, where pixel ``(i, j)`` has its centre at
        ``(x=j, y=i)``.
    values : sequence of int
        Label value of each polygon (later ones paint over earlier ones).
    shape : (int, int)
        Raster shape ``(rows, cols)``.
    dtype : numpy dtype
    """

    def __init__(self, polygons: Sequence[Any], values: Sequence[int], shape: tuple[int, int],
                 dtype: Any) -> None:
        self.polygons = list(polygons)
        self.values = np.asarray(values, dtype=np.int64)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = 2
        self._tree = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_tree"] = None
        return state

    def __repr__(self) -> str:
        return f"AnnotationRaster({len(self.polygons)} polygons, shape={self.shape})"

    def _query(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        import shapely

        if self._tree is None:
            self._tree = shapely.STRtree(self.polygons)
        hits = self._tree.query(shapely.box(c0 - 0.5, r0 - 0.5, c1 - 0.5, r1 - 0.5))
        return np.sort(hits)  # file order: later polygons paint over earlier ones

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Rows ``[r0, r1)`` and columns ``[c0, c1)`` (may extend past the
        raster: outside is 0)."""
        from skimage.draw import polygon as fill

        out = np.zeros((max(0, r1 - r0), max(0, c1 - c0)), dtype=self.dtype)
        if out.size == 0 or not self.polygons:
            return out
        rows, cols = self.shape  # outside the raster is background
        r_lo, r_hi, c_lo, c_hi = max(r0, 0), min(r1, rows), max(c0, 0), min(c1, cols)
        for k in self._query(r0, r1, c0, c1):
            poly, value = self.polygons[k], self.values[k]
            minx, miny, maxx, maxy = poly.bounds
            lo_r, hi_r = max(r_lo, math.floor(miny)), min(r_hi, math.ceil(maxy) + 1)
            lo_c, hi_c = max(c_lo, math.floor(minx)), min(c_hi, math.ceil(maxx) + 1)
            if lo_r >= hi_r or lo_c >= hi_c:
                continue
            inside = np.zeros((hi_r - lo_r, hi_c - lo_c), dtype=bool)
            ring = np.asarray(poly.exterior.coords)
            inside[fill(ring[:, 1] - lo_r, ring[:, 0] - lo_c, shape=inside.shape)] = True
            for hole in poly.interiors:
                ring = np.asarray(hole.coords)
                inside[fill(ring[:, 1] - lo_r, ring[:, 0] - lo_c, shape=inside.shape)] = False
            out[lo_r - r0:hi_r - r0, lo_c - c0:hi_c - c0][inside] = value
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (2 - len(key))
        bounds, squeeze = [], []
        for axis, (k, n) in enumerate(zip(key, self.shape, strict=True)):
            if isinstance(k, int | np.integer):
                k = int(k) + n if k < 0 else int(k)
                bounds.append((k, k + 1))
                squeeze.append(axis)
                continue
            start, stop, step = k.indices(n)
            if step != 1:
                raise IndexError("AnnotationRaster reads boxes only (step 1)")
            bounds.append((start, max(start, stop)))
        out = self.read(bounds[0][0], bounds[0][1], bounds[1][0], bounds[1][1])
        return out.squeeze(axis=tuple(squeeze)) if squeeze else out
