"""Blue-noise (Poisson-disc) patch positions over a whole image.

The positions are integer top-lefts such that no two are closer than a radius
``r`` in the box (Chebyshev) metric scaled by the patch size: two top-lefts
``p`` and ``q`` conflict when ``|p_d - q_d| < r_d`` along *every* dim. With
``r = patch`` (the default) no two patch boxes intersect; with
``allow_overlap=True``, ``r = patch / 2``.

Sampling runs on a background grid of cells of side ``r`` (so a cell holds
at most one point and only the ``3**ndim`` neighbouring cells can conflict),
and throws darts in all empty cells of one *phase* at once: cells whose
indices have the same parities are at least two cells apart along some dim,
so candidates of one phase never conflict with each other and are tested in
a single vectorised pass. Phases are visited in a seeded random order, and
the whole sweep is repeated :data:`ATTEMPTS` times (Bridson's ``k``), which
leaves a near-maximal Poisson-disc set. The set depends only on the image
shape, the spec and the seed, never on how the image is split into chunks.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np

from ..errors import GridParameterError
from .geometry import GridSpec

__all__ = ["blue_noise_starts", "ATTEMPTS"]

#: Dart-throwing sweeps over the empty cells (like Bridson's ``k``).
ATTEMPTS = 30


def blue_noise_starts(
    image_shape: Mapping[str, int],
    spec: GridSpec,
    *,
    seed: int,
    allow_overlap: bool = False,
    box_start: Mapping[str, int] | None = None,
    box_stop: Mapping[str, int] | None = None,
) -> np.ndarray:
    """Seeded Poisson-disc patch top-lefts over a whole image.

    Parameters
    ----------
    image_shape : mapping
        Image size per dim of ``spec.dims``.
    spec : GridSpec
        Patch size (the exclusion radius) and ``allow_incomplete``; stride,
        pad and ``min_area`` are not used here.
    seed : int
        Seed of :func:`numpy.random.default_rng`; the same seed gives the
        same positions.
    allow_overlap : bool
        ``False``: no two patch boxes intersect (radius = patch size per
        dim, box metric). ``True``: radius = half the patch size, so patches
        may overlap by up to half their size.
    box_start, box_stop : mapping, optional
        Return only the positions whose top-left lies in
        ``[box_start, box_stop)`` (missing bounds are unbounded). These are
        exactly the positions of the whole-image set that fall in the box.

    Returns
    -------
    numpy.ndarray
        ``(N, len(spec.dims))`` int64 top-lefts in row-major order, all with
        ``0 <= s <= size - patch`` (``0 <= s < size`` when
        ``spec.allow_incomplete``).
    """
    dims = spec.dims
    ndim = len(dims)
    try:
        sizes = np.array([int(image_shape[d]) for d in dims], dtype=np.int64)
    except KeyError as exc:
        raise GridParameterError(
            f"image_shape has no size for dim {exc.args[0]!r}; give one per dim of {dims}") from None
    patch = np.array([spec.patch[d] for d in dims], dtype=np.int64)
    last = sizes - 1 if spec.allow_incomplete else sizes - patch   # largest top-left per dim
    if np.any(sizes <= 0) or np.any(last < 0):
        points = np.empty((0, ndim), dtype=np.int64)
    else:
        points = _poisson_disc(last, patch, 2 if allow_overlap else 1,
                               np.random.default_rng(seed))
    if box_start is not None or box_stop is not None:
        keep = np.ones(len(points), dtype=bool)
        for i, d in enumerate(dims):
            if box_start is not None and d in box_start:
                keep &= points[:, i] >= int(box_start[d])
            if box_stop is not None and d in box_stop:
                keep &= points[:, i] < int(box_stop[d])
        points = points[keep]
    return points


def _poisson_disc(last: np.ndarray, num: np.ndarray, den: int,
                  rng: np.random.Generator) -> np.ndarray:
    """Integer points in ``[0, last]`` (per dim) with no two conflicting.

    Two points conflict when ``den * |p_d - q_d| < num_d`` for every dim
    (radius ``num / den``). Cell ``c`` along a dim holds the integers ``x``
    with ``floor(den * x / num) == c``.
    """
    ndim = len(last)
    n_cells = (den * last) // num + 1
    # Integer range [lo, hi] of each cell, per dim.
    lo_axis, hi_axis, ok_axis = [], [], []
    for d in range(ndim):
        c = np.arange(n_cells[d], dtype=np.int64)
        lo = -((-c * num[d]) // den)                          # ceil(c * num / den)
        hi = np.minimum(-((-(c + 1) * num[d]) // den) - 1, last[d])
        lo_axis.append(lo)
        hi_axis.append(hi)
        ok_axis.append(lo <= hi)

    padded = n_cells + 2                                       # a ring of empty cells
    pstride = np.ones(ndim, dtype=np.int64)
    for d in range(ndim - 2, -1, -1):
        pstride[d] = pstride[d + 1] * padded[d + 1]
    occupied = np.zeros(int(np.prod(padded)), dtype=bool)
    dtype = np.int32 if int(last.max()) < np.iinfo(np.int32).max else np.int64
    coords = np.zeros((occupied.size, ndim), dtype=dtype)
    offsets = [int(np.dot(o, pstride)) for o in itertools.product((-1, 0, 1), repeat=ndim)
               if any(o)]

    # Empty cells per phase: (flat index, lo, hi) of the cells still to fill.
    phases = []
    for parity in itertools.product((0, 1), repeat=ndim):
        idx = [np.flatnonzero(ok_axis[d][parity[d]::2]) * 2 + parity[d] for d in range(ndim)]
        if any(len(i) == 0 for i in idx):
            phases.append(None)
            continue
        mesh = [m.ravel() for m in np.meshgrid(*idx, indexing="ij")]
        flat = sum((mesh[d] + 1) * pstride[d] for d in range(ndim))
        lo = np.stack([lo_axis[d][mesh[d]] for d in range(ndim)], axis=1)
        hi = np.stack([hi_axis[d][mesh[d]] for d in range(ndim)], axis=1)
        phases.append((flat, lo, hi))

    num_row = num.astype(np.int64)[None, :]
    for _ in range(ATTEMPTS):
        for p in rng.permutation(len(phases)):
            if phases[p] is None:
                continue
            flat, lo, hi = phases[p]
            cand = rng.integers(lo, hi, endpoint=True)
            conflict = np.zeros(len(flat), dtype=bool)
            for off in offsets:
                nb = flat + off
                occ = occupied[nb]
                if not occ.any():
                    continue
                sel = np.flatnonzero(occ)
                delta = np.abs(cand[sel] - coords[nb[sel]].astype(np.int64))
                conflict[sel] |= np.all(den * delta < num_row, axis=1)
            accept = ~conflict
            occupied[flat[accept]] = True
            coords[flat[accept]] = cand[accept]
            rest = conflict
            phases[p] = (flat[rest], lo[rest], hi[rest]) if rest.any() else None
        if all(ph is None for ph in phases):
            break

    points = coords[occupied].astype(np.int64)
    order = np.lexsort([points[:, d] for d in range(ndim - 1, -1, -1)])
    return points[order]
