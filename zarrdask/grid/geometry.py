"""Pure patch-grid geometry: positions, counts, mask coverage, chunk ids.

Everything here is plain numpy and integer arithmetic, independent of dask
and xarray, so that it can be tested alone and called from any task. The
formulas are written out in ``docs/grid.md``.

Conventions
-----------
* A patch is the half-open box ``[s, s + patch)`` along every spatial dim,
  where ``s`` is its top-left corner in image pixels.
* ``dims`` are lower-case dim names, outermost first (``("y", "x")`` or
  ``("z", "y", "x")``); arrays of positions have one column per dim, in
  that order.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import GridParameterError, MaskError

__all__ = [
    "GridSpec",
    "normalize_grid_params",
    "axis_starts",
    "count_positions",
    "grid_starts_in_box",
    "chunk_ids",
    "window_coverage",
    "keep_patches",
    "order_rows",
]

#: Tolerance (in image pixels, or mask pixels for window edges) used where
#: floating-point arithmetic meets an integer decision.
EPS = 1e-9

#: Axis names that are known but never gridded unless listed in
#: ``spatial_axes``; dict keys with these letters are ignored, any other
#: letter is an error.
_KNOWN_AXES = frozenset("tczyxs")

#: Windows processed per block in :func:`window_coverage` (bounds the
#: temporary memory to about ``4**ndim * _BLOCK * 8`` bytes).
_BLOCK = 1 << 15


# -- parameters ---------------------------------------------------------------

@dataclass(frozen=True)
class GridSpec:
    """Normalised patch-grid parameters of one kind of image.

    Parameters
    ----------
    dims : tuple of str
        Spatial dims the grid runs over, outermost first, e.g. ``("y", "x")``.
    patch : dict
        Patch size in pixels per dim (every dim of ``dims``).
    stride : dict
        Step between consecutive patch positions per dim.
    pad : dict
        Padding added around each patch at read time per dim (not used by
        the geometry, recorded for the reader).
    min_area : float
        Mask-coverage threshold (see :func:`keep_patches`).
    allow_incomplete : bool
        Whether patches running past the image border are placed.
    """

    dims: tuple[str, ...]
    patch: dict[str, int]
    stride: dict[str, int]
    pad: dict[str, int]
    min_area: float
    allow_incomplete: bool

    def __post_init__(self) -> None:
        dims = tuple(str(d) for d in self.dims)
        object.__setattr__(self, "dims", dims)
        if not dims:
            raise GridParameterError("GridSpec.dims is empty; a grid needs at least one spatial dim")
        if len(set(dims)) != len(dims):
            raise GridParameterError(f"GridSpec.dims={dims} repeats a dim; list each dim once")
        for name, low in (("patch", 1), ("stride", 1), ("pad", 0)):
            values = getattr(self, name)
            missing = [d for d in dims if d not in values]
            if missing:
                raise GridParameterError(
                    f"GridSpec.{name} has no value for dims {missing}; give one per dim of {dims}")
            clean = {d: _as_int(values[d], f"{name}[{d!r}]") for d in dims}
            bad = {d: v for d, v in clean.items() if v < low}
            if bad:
                raise GridParameterError(f"GridSpec.{name}={bad} must be >= {low} for every dim")
            object.__setattr__(self, name, clean)
        min_area = float(self.min_area)
        if not math.isfinite(min_area) or min_area < 0:
            raise GridParameterError(
                f"min_area={self.min_area!r} must be a finite number >= 0 "
                "(a fraction below 1, or a number of pixels from 1)")
        object.__setattr__(self, "min_area", min_area)
        object.__setattr__(self, "allow_incomplete", bool(self.allow_incomplete))

    def __hash__(self) -> int:
        return hash((self.dims, *(tuple(getattr(self, n)[d] for d in self.dims)
                                  for n in ("patch", "stride", "pad")),
                     self.min_area, self.allow_incomplete))

    @property
    def patch_area(self) -> int:
        """Number of pixels of one patch (product of the patch sizes)."""
        return math.prod(self.patch[d] for d in self.dims)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able representation (inverse of :meth:`from_dict`).

        Returns
        -------
        dict
            ``{"dims": [...], "patch": {...}, "stride": {...}, "pad": {...},
            "min_area": float, "allow_incomplete": bool}``.
        """
        return {
            "dims": list(self.dims),
            "patch": {d: int(self.patch[d]) for d in self.dims},
            "stride": {d: int(self.stride[d]) for d in self.dims},
            "pad": {d: int(self.pad[d]) for d in self.dims},
            "min_area": float(self.min_area),
            "allow_incomplete": bool(self.allow_incomplete),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GridSpec:
        """Rebuild a spec from :meth:`to_dict` output.

        Parameters
        ----------
        d : mapping
            As returned by :meth:`to_dict` (e.g. after a JSON round trip).

        Returns
        -------
        GridSpec
        """
        try:
            return cls(
                dims=tuple(d["dims"]),
                patch=dict(d["patch"]),
                stride=dict(d["stride"]),
                pad=dict(d["pad"]),
                min_area=d["min_area"],
                allow_incomplete=d["allow_incomplete"],
            )
        except KeyError as exc:
            raise GridParameterError(
                f"grid spec {dict(d)!r} lacks the key {exc.args[0]!r}; "
                "pass the output of GridSpec.to_dict()") from None


def _as_int(value: Any, name: str) -> int:
    """An integral value as ``int``, or a :class:`GridParameterError`."""
    if isinstance(value, bool | np.bool_):
        raise GridParameterError(f"{name}={value!r} is a bool; pass an integer number of pixels")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    raise GridParameterError(f"{name}={value!r} is not an integer; pass a whole number of pixels")


def _per_axis(value: Any, name: str, axes: Sequence[str]) -> dict[str, int]:
    """Expand an int / sequence / dict parameter to ``{axis: int}`` (lower-case
    axis letters of ``spatial_axes``); dict keys outside ``axes`` are dropped
    when they are known axis names and rejected otherwise."""
    if isinstance(value, Mapping):
        out = {}
        for key, v in value.items():
            if not isinstance(key, str) or len(key) != 1:
                raise GridParameterError(
                    f"{name} has the key {key!r}; dict keys must be single axis letters "
                    f"such as {', '.join(repr(a.upper()) for a in axes)}")
            k = key.lower()
            if k in axes:
                out[k] = _as_int(v, f"{name}[{key!r}]")
            elif k not in _KNOWN_AXES:
                raise GridParameterError(
                    f"{name} has the unknown axis {key!r}; use letters of "
                    f"spatial_axes={''.join(axes).upper()!r}")
        return out
    if isinstance(value, str | bytes):
        raise GridParameterError(
            f"{name}={value!r} is a string; pass an int, a sequence of ints or a dict")
    if isinstance(value, numbers.Number):
        return {ax: _as_int(value, name) for ax in axes}
    if isinstance(value, Sequence | np.ndarray):
        values = list(value)
        if len(values) != len(axes):
            raise GridParameterError(
                f"{name}={tuple(values)} has {len(values)} value(s) but "
                f"spatial_axes={''.join(axes).upper()!r} has {len(axes)}; give one value "
                f"per spatial axis, in that order, or a dict keyed by axis letter")
        return {ax: _as_int(v, f"{name}[{ax.upper()!r}]") for ax, v in zip(axes, values, strict=True)}
    raise GridParameterError(
        f"{name}={value!r} has type {type(value).__name__}; pass an int, a sequence of ints "
        "(one per spatial axis) or a dict keyed by axis letter")


def normalize_grid_params(
    patch_size: int | Sequence[int] | Mapping[str, int],
    stride: int | Sequence[int] | Mapping[str, int] | None = None,
    pad: int | Sequence[int] | Mapping[str, int] | None = None,
    *,
    min_area: float = 1,
    spatial_axes: str = "ZYX",
    allow_incomplete_patches: bool = False,
    image_dims: Sequence[str],
    image_shape: Sequence[int],
) -> GridSpec:
    """Normalise zarrdataset-style ``PatchSampler`` parameters for one image.

    Parameters
    ----------
    patch_size : int, sequence of int or dict
        Patch size in pixels: one int for every spatial axis, a sequence with
        one value per letter of ``spatial_axes`` (in that order), or a dict
        keyed by axis letter (either case). A dict that omits an axis gives
        patch 1 there (zarrdataset's rule).
    stride : int, sequence of int, dict or None
        Step between patch positions; ``None`` (or an axis missing from a
        dict) means the patch size of that axis.
    pad : int, sequence of int, dict or None
        Padding around each patch at read time; ``None`` means 0.
    min_area : float
        Mask-coverage threshold, see :func:`keep_patches`.
    spatial_axes : str
        Axes patches may span (``"ZYX"`` by default); only those present in
        ``image_dims`` are used.
    allow_incomplete_patches : bool
        Also place patches that run past the image border.
    image_dims : sequence of str
        Dim names of the image (``("c", "y", "x")``...).
    image_shape : sequence of int
        Shape of the image, aligned with ``image_dims``.

    Returns
    -------
    GridSpec
        ``dims`` are the used spatial dims in image order. A used dim of
        size 1 gets patch 1, stride 1 and pad 0, whatever was passed (so a
        2-D image stored with a ``z`` of size 1 gets 2-D patches).

    Raises
    ------
    GridParameterError
        For a patch size or stride below 1, a negative pad, a sequence whose
        length differs from ``spatial_axes``, an unknown axis letter in a
        dict, a negative ``min_area``, or no spatial axis in the image.
    """
    if not isinstance(spatial_axes, str) or not spatial_axes.isalpha():
        raise GridParameterError(
            f"spatial_axes={spatial_axes!r} must be a string of axis letters such as 'ZYX' or 'YX'")
    axes = [a.lower() for a in spatial_axes]
    if len(set(axes)) != len(axes):
        raise GridParameterError(
            f"spatial_axes={spatial_axes!r} repeats an axis; list each axis once, e.g. 'ZYX'")
    image_dims = [str(d).lower() for d in image_dims]
    image_shape = [int(s) for s in image_shape]
    if len(image_dims) != len(image_shape):
        raise GridParameterError(
            f"image_dims={image_dims} and image_shape={image_shape} differ in length; "
            "pass one name per array dim")
    try:
        min_area_f = float(min_area)
    except (TypeError, ValueError):
        raise GridParameterError(
            f"min_area={min_area!r} is not a number; pass a fraction below 1 or a pixel count") from None
    if not math.isfinite(min_area_f) or min_area_f < 0:
        raise GridParameterError(
            f"min_area={min_area!r} must be >= 0: a fraction of the patch area below 1 "
            "(e.g. 0.25) or a number of covered pixels from 1 (default 1)")

    patch = _per_axis(patch_size, "patch_size", axes)
    strides = {} if stride is None else _per_axis(stride, "stride", axes)
    pads = {} if pad is None else _per_axis(pad, "pad", axes)
    for name, values, low, fix in (
        ("patch_size", patch, 1, "use a patch size of at least 1 pixel"),
        ("stride", strides, 1, "use a stride of at least 1 pixel (or None for the patch size)"),
        ("pad", pads, 0, "use a pad of 0 or more pixels"),
    ):
        bad = {a.upper(): v for a, v in values.items() if v < low}
        if bad:
            raise GridParameterError(f"{name} must be >= {low} on every axis, got {bad}; {fix}")

    sizes = dict(zip(image_dims, image_shape, strict=True))
    dims = tuple(d for d in image_dims if d in axes)
    if not dims:
        raise GridParameterError(
            f"none of spatial_axes={spatial_axes!r} is a dim of the image {tuple(image_dims)}; "
            "pass spatial_axes with the image's spatial axes (e.g. 'YX')")
    out_patch, out_stride, out_pad = {}, {}, {}
    for d in dims:
        if sizes[d] <= 1:
            out_patch[d], out_stride[d], out_pad[d] = 1, 1, 0
            continue
        out_patch[d] = patch.get(d, 1)
        out_stride[d] = strides.get(d, out_patch[d])
        out_pad[d] = pads.get(d, 0)
    return GridSpec(dims=dims, patch=out_patch, stride=out_stride, pad=out_pad,
                    min_area=min_area_f, allow_incomplete=bool(allow_incomplete_patches))


# -- positions ------------------------------------------------------------------

def _check_axis(size: int, patch: int, stride: int) -> tuple[int, int, int]:
    size, patch, stride = int(size), int(patch), int(stride)
    if size < 0:
        raise GridParameterError(f"axis size {size} is negative")
    if patch < 1:
        raise GridParameterError(f"patch={patch} must be >= 1")
    if stride < 1:
        raise GridParameterError(f"stride={stride} must be >= 1")
    return size, patch, stride


def count_positions(size: int, patch: int, stride: int, *, allow_incomplete: bool) -> int:
    """Number of patch positions along one axis (closed form).

    Parameters
    ----------
    size, patch, stride : int
        Axis length, patch size and stride in pixels.
    allow_incomplete : bool
        Count the positions whose patch runs past the border too.

    Returns
    -------
    int
        ``floor((size - patch) / stride) + 1`` if ``size >= patch`` else 0;
        with ``allow_incomplete``: ``ceil(size / stride)`` (every multiple of
        ``stride`` below ``size``).
    """
    size, patch, stride = _check_axis(size, patch, stride)
    if allow_incomplete:
        return -(-size // stride)
    return (size - patch) // stride + 1 if size >= patch else 0


def axis_starts(size: int, patch: int, stride: int, *, allow_incomplete: bool) -> np.ndarray:
    """Patch start positions along one axis.

    Parameters
    ----------
    size, patch, stride : int
        Axis length, patch size and stride in pixels.
    allow_incomplete : bool
        Also return the starts below ``size`` whose patch runs past the border.

    Returns
    -------
    numpy.ndarray
        int64 starts ``0, stride, 2*stride, ...``: those with
        ``s + patch <= size``, or every one with ``s < size`` when
        ``allow_incomplete``.
    """
    n = count_positions(size, patch, stride, allow_incomplete=allow_incomplete)
    return np.arange(n, dtype=np.int64) * int(stride)


def _as_dim_map(values: Mapping[str, int] | Sequence[int], dims: Sequence[str],
                name: str) -> list[int]:
    if isinstance(values, Mapping):
        missing = [d for d in dims if d not in values]
        if missing:
            raise GridParameterError(f"{name} has no value for dims {missing}; give one per dim of "
                                     f"{tuple(dims)}")
        return [int(values[d]) for d in dims]
    values = list(values)
    if len(values) != len(dims):
        raise GridParameterError(f"{name}={values} needs one value per dim of {tuple(dims)}")
    return [int(v) for v in values]


def grid_starts_in_box(
    box_start: Mapping[str, int],
    box_stop: Mapping[str, int],
    image_shape: Mapping[str, int],
    spec: GridSpec,
) -> np.ndarray:
    """Top-lefts of the grid patches whose top-left lies in a box.

    Parameters
    ----------
    box_start, box_stop : mapping
        Half-open box ``[box_start, box_stop)`` per dim of ``spec.dims``
        (typically one storage chunk or a run of chunks).
    image_shape : mapping
        Size of the image per dim.
    spec : GridSpec
        Grid parameters.

    Returns
    -------
    numpy.ndarray
        ``(N, len(spec.dims))`` int64 top-lefts in row-major order. Only
        the positions inside the box are generated (cost proportional to N).
    """
    dims = spec.dims
    lo = _as_dim_map(box_start, dims, "box_start")
    hi = _as_dim_map(box_stop, dims, "box_stop")
    shape = _as_dim_map(image_shape, dims, "image_shape")
    axes = []
    for d, a, b, size in zip(dims, lo, hi, shape, strict=True):
        stride = spec.stride[d]
        n = count_positions(size, spec.patch[d], stride, allow_incomplete=spec.allow_incomplete)
        first = max(0, -(-a // stride))          # ceil(a / stride)
        last = min(n, max(0, -(-b // stride)))   # ceil(b / stride), exclusive
        axes.append(np.arange(first, max(first, last), dtype=np.int64) * stride)
    if any(len(a) == 0 for a in axes):
        return np.empty((0, len(dims)), dtype=np.int64)
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1).astype(np.int64, copy=False)


def chunk_ids(starts: np.ndarray, chunk_shape: Sequence[int], image_shape: Sequence[int]) -> np.ndarray:
    """Row-major index of the storage chunk holding each top-left.

    Parameters
    ----------
    starts : numpy.ndarray
        ``(N, ndim)`` top-lefts in image pixels (``0 <= start < image_shape``).
    chunk_shape : sequence of int
        Storage chunk shape over the same dims.
    image_shape : sequence of int
        Image shape over the same dims.

    Returns
    -------
    numpy.ndarray
        int64 ``chunk_id`` per row: the C-order index of the chunk in the
        chunk grid ``ceil(image_shape / chunk_shape)``.
    """
    starts = np.asarray(starts, dtype=np.int64)
    chunk = np.asarray(chunk_shape, dtype=np.int64)
    shape = np.asarray(image_shape, dtype=np.int64)
    if starts.ndim != 2 or starts.shape[1] != chunk.size or chunk.size != shape.size:
        raise GridParameterError(
            f"starts of shape {starts.shape}, chunk_shape {tuple(chunk)} and image_shape "
            f"{tuple(shape)} disagree on the number of dims")
    if np.any(chunk < 1):
        raise GridParameterError(f"chunk_shape={tuple(chunk)} must be >= 1 along every dim")
    if len(starts) and (np.any(starts < 0) or np.any(starts >= shape)):
        raise GridParameterError(
            f"some top-lefts lie outside the image of shape {tuple(shape)}; "
            "chunk ids are defined for positions inside the image only")
    n_chunks = -(-shape // chunk)
    ids = np.zeros(len(starts), dtype=np.int64)
    for i in range(chunk.size):
        ids = ids * n_chunks[i] + starts[:, i] // chunk[i]
    return ids


def order_rows(chunk_id: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Permutation putting rows in chunk-major, then row-major order.

    Parameters
    ----------
    chunk_id : numpy.ndarray
        ``(N,)`` chunk ids.
    starts : numpy.ndarray
        ``(N, ndim)`` top-lefts (outermost dim first).

    Returns
    -------
    numpy.ndarray
        int64 indices ``order`` such that ``chunk_id[order]`` ascends and,
        within a chunk, ``starts[order]`` ascends lexicographically.
    """
    chunk_id = np.asarray(chunk_id)
    starts = np.asarray(starts)
    if starts.ndim != 2 or len(starts) != len(chunk_id):
        raise GridParameterError(
            f"chunk_id of length {len(chunk_id)} and starts of shape {starts.shape} do not match")
    keys = [starts[:, i] for i in range(starts.shape[1] - 1, -1, -1)] + [chunk_id]
    return np.lexsort(keys).astype(np.int64)


# -- mask coverage --------------------------------------------------------------

def _summed_area_table(mask: np.ndarray) -> np.ndarray:
    """``S`` of shape ``mask.shape + 1`` with ``S[i] = mask[:i0, :i1, ...].sum()``."""
    dtype = np.int32 if mask.size < np.iinfo(np.int32).max else np.int64
    sat = np.zeros(tuple(s + 1 for s in mask.shape), dtype=dtype)
    inner = mask
    for axis in range(mask.ndim):
        inner = np.cumsum(inner, axis=axis, dtype=dtype)
    sat[tuple(slice(1, None) for _ in range(mask.ndim))] = inner
    return sat


def _snap(x: np.ndarray) -> np.ndarray:
    """Round values within ``EPS`` (relative) of an integer to that integer,
    so that window edges meant to fall on mask-pixel edges do."""
    r = np.rint(x)
    return np.where(np.abs(x - r) <= EPS * np.maximum(1.0, np.abs(x)), r, x)


def window_coverage(
    mask: np.ndarray,
    scale: Sequence[float],
    starts: np.ndarray,
    patch: Sequence[int],
    *,
    mask_origin: Sequence[float] | None = None,
) -> np.ndarray:
    """Exact fraction of each patch window covered by a boolean mask.

    Parameters
    ----------
    mask : numpy.ndarray
        Boolean mask with one axis per spatial dim (same order as the
        columns of ``starts``).
    scale : sequence of float
        Mask pixels per image pixel along each dim (e.g. ``1/16``, ``0.37``).
    starts : numpy.ndarray
        ``(N, ndim)`` top-lefts of the windows in image pixels.
    patch : sequence of int
        Window size in image pixels per dim.
    mask_origin : sequence of float, optional
        Image-pixel position of mask pixel 0 along each dim (default 0), for
        a mask of a sub-region.

    Returns
    -------
    numpy.ndarray
        float64 coverage in ``[0, 1]`` per window: the integral of the mask
        (as a piecewise-constant function, edge mask pixels counted by their
        overlap) over the window, divided by the window volume. Parts of a
        window outside the mask count as uncovered. Exactly 0 when no True
        mask pixel meets the window, exactly 1 when the window lies inside
        the mask and every mask pixel it meets is True.

    Notes
    -----
    With ``S`` the summed-area table, ``F(x) = integral of the mask over
    [0, x)`` is the multilinear interpolation of ``S`` at integer nodes. The
    window integral is evaluated as ``sum_k w_k * B_k`` over the (up to
    ``3**ndim``) sub-boxes of whole mask pixels the window meets (first,
    inner, last along each dim), where ``B_k`` is the exact integer count of
    True pixels of a sub-box (differences of ``S``) and ``w_k`` the product
    of the per-dim overlap lengths; this is the same interpolation, arranged
    so that no large float is subtracted.
    """
    mask = np.asarray(mask)
    if mask.dtype != bool:
        mask = mask.astype(bool)
    ndim = mask.ndim
    starts = np.asarray(starts)
    if starts.ndim == 1 and starts.size == 0:
        starts = starts.reshape(0, ndim)
    if starts.ndim != 2 or starts.shape[1] != ndim:
        raise MaskError(
            f"starts of shape {starts.shape} do not match the {ndim}-D mask; pass one column "
            "per mask dim (same order)")
    scale_a = np.asarray(scale, dtype=np.float64).reshape(-1)
    patch_a = np.asarray(patch, dtype=np.float64).reshape(-1)
    origin_a = (np.zeros(ndim) if mask_origin is None
                else np.asarray(mask_origin, dtype=np.float64).reshape(-1))
    for name, arr in (("scale", scale_a), ("patch", patch_a), ("mask_origin", origin_a)):
        if arr.size != ndim:
            raise MaskError(f"{name} has {arr.size} value(s) for a {ndim}-D mask; give one per dim")
        if not np.all(np.isfinite(arr)):
            raise MaskError(f"{name}={arr.tolist()} must be finite")
    if np.any(scale_a <= 0):
        raise MaskError(f"scale={scale_a.tolist()} must be > 0 (mask pixels per image pixel)")
    if np.any(patch_a < 1):
        raise MaskError(f"patch={patch_a.tolist()} must be >= 1 along every dim")
    n = len(starts)
    out = np.zeros(n, dtype=np.float64)
    if n == 0 or mask.size == 0 or not mask.any():
        return out
    starts_f = starts.astype(np.float64)
    a_all = _snap((starts_f - origin_a) * scale_a)          # window edges in mask pixels
    b_all = _snap((starts_f + patch_a - origin_a) * scale_a)
    extent = np.asarray(mask.shape, dtype=np.float64)
    inside = np.all((a_all >= 0) & (b_all <= extent), axis=1)
    # Only the part of the mask the windows reach is summed (a task gridding a
    # few chunks of a slide does not pay for the whole mask).
    lo = np.clip(np.floor(a_all.min(axis=0)), 0, extent).astype(np.int64)
    hi = np.clip(np.ceil(b_all.max(axis=0)), 0, extent).astype(np.int64)
    if np.any(hi <= lo):
        return out
    sub = mask[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))]
    if not sub.any():
        return out
    sat = _summed_area_table(sub)
    volume = float(np.prod(patch_a * scale_a))
    for first in range(0, n, _BLOCK):
        block = slice(first, first + _BLOCK)
        out[block] = _coverage_block(sat, a_all[block] - lo, b_all[block] - lo,
                                     inside[block], volume)
    return out


def _coverage_block(sat: np.ndarray, a_raw: np.ndarray, b_raw: np.ndarray,
                    inside: np.ndarray, volume: float) -> np.ndarray:
    """Coverage of a block of windows ``[a_raw, b_raw)`` (mask pixels, relative to
    the summed-area table ``sat`` of shape ``mask.shape + 1``); see
    :func:`window_coverage`."""
    n, ndim = a_raw.shape
    extent = np.asarray(sat.shape, dtype=np.float64) - 1
    a = np.clip(a_raw, 0.0, extent)
    b = np.clip(b_raw, 0.0, extent)
    b = np.maximum(a, b)
    # Node positions (4 per dim) and piece weights (3 per dim): the window
    # [a, b) meets mask pixels ia .. ib-1; piece 0 is pixel ia, piece 1 the
    # whole pixels ia+1 .. ib-2, piece 2 pixel ib-1 (pieces may be empty).
    ia = np.floor(a)
    ib = np.ceil(b)
    empty = b <= a
    ib = np.where(empty, ia, ib)
    n1 = np.minimum(ia + 1, ib)
    n2 = np.maximum(n1, ib - 1)
    nodes = np.stack([ia, n1, n2, ib], axis=-1).astype(np.int64)      # (n, ndim, 4)
    w0 = np.where(empty, 0.0, np.minimum(ia + 1, b) - a)
    w2 = np.where(ib - 1 > ia, b - (ib - 1), 0.0)
    weights = np.stack([w0, np.ones_like(w0), w2], axis=-1)          # (n, ndim, 3)

    # Gather S at the 4**ndim node combinations, then take integer differences
    # along every dim: box counts of the 3**ndim pieces, exact.
    strides = np.array(sat.strides, dtype=np.int64) // sat.itemsize
    flat = np.zeros((n,) + (4,) * ndim, dtype=np.int64)
    for d in range(ndim):
        shape = [n] + [1] * ndim
        shape[1 + d] = 4
        flat = flat + (nodes[:, d, :] * strides[d]).reshape(shape)
    boxes = sat.ravel()[flat]
    for d in range(ndim):
        boxes = np.diff(boxes, axis=1 + d)                            # (n, 3, ..., 3)
    weight = np.ones((n,) + (3,) * ndim, dtype=np.float64)
    for d in range(ndim):
        shape = [n] + [1] * ndim
        shape[1 + d] = 3
        weight = weight * weights[:, d, :].reshape(shape)
    axes = tuple(range(1, ndim + 1))
    integral = np.sum(boxes * weight, axis=axes)
    cov = np.clip(integral / volume, 0.0, 1.0)
    # Exact extremes from integer counts.
    touched = boxes.sum(axis=axes, dtype=np.int64)
    cells = np.prod(ib - ia, axis=1)
    cov[touched == 0] = 0.0
    cov[inside & (touched == cells) & (cells > 0)] = 1.0
    return cov


# -- keep rule --------------------------------------------------------------------

def keep_patches(coverage: np.ndarray, min_area: float, patch_area: int) -> np.ndarray:
    """Which patches the mask selects.

    Parameters
    ----------
    coverage : numpy.ndarray
        Fraction of each patch window covered by the mask (see
        :func:`window_coverage`).
    min_area : float
        Below 1: a fraction of the patch area; keep when ``coverage > 0`` and
        ``coverage * patch_area >= min_area * patch_area - 1e-9``. From 1: a
        number of image pixels, where a pixel counts when the mask covers any
        part of it; the covered pixels are
        ``max(1, ceil(coverage * patch_area - 1e-9))`` when ``coverage > 0``
        (else 0) and the patch is kept when that is ``>= min_area``. The
        default ``min_area=1`` therefore keeps exactly the patches with
        ``coverage > 0``.
    patch_area : int
        Pixels per patch (product of the patch sizes).

    Returns
    -------
    numpy.ndarray
        bool per patch.
    """
    min_area = float(min_area)
    if not math.isfinite(min_area) or min_area < 0:
        raise GridParameterError(f"min_area={min_area!r} must be a finite number >= 0")
    if patch_area < 1:
        raise GridParameterError(f"patch_area={patch_area!r} must be >= 1")
    cov = np.asarray(coverage, dtype=np.float64)
    positive = cov > 0
    if min_area < 1:
        return positive & (cov * patch_area >= min_area * patch_area - EPS)
    pixels = np.where(positive, np.maximum(1.0, np.ceil(cov * patch_area - EPS)), 0.0)
    return pixels >= min_area

