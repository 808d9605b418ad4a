"""zarrdataset's patch samplers, over zarrdask's grid geometry.

:class:`PatchSampler` and :class:`BlueNoisePatchSampler` keep zarrdataset's
parameters and the ``_patch_size``/``_stride``/``_pad`` dicts (keyed by
spatial axis letter) that user code reads. Positions, mask coverage and the
keep rule are those of :mod:`zarrdask.grid.geometry` and
:mod:`zarrdask.grid.bluenoise` (see ``docs/grid.md``), so a
:class:`~zarrdask.ZarrDataset` (which builds its coordinate table with
:func:`zarrdask.grid.build.build_table`) and :meth:`PatchSampler.compute_patches`
give the same patches.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from ..errors import GridParameterError, MaskError
from ..grid.bluenoise import blue_noise_starts
from ..grid.geometry import (
    GridSpec,
    grid_starts_in_box,
    keep_patches,
    normalize_grid_params,
    window_coverage,
)

__all__ = ["PatchSampler", "BlueNoisePatchSampler"]

#: Size given to every axis when the sampler's parameters are resolved
#: before any image is seen (large, so no axis counts as length 1).
_ANY_SIZE = 1 << 40


def _letters_to_dims(letters: Iterable[str]) -> list[str]:
    return [str(a).lower() for a in letters]


def _spec_for(sampler: PatchSampler, image_axes: str, image_shape: Iterable[int]) -> GridSpec:
    """The grid spec of ``sampler`` on an image with ``image_axes`` letters."""
    return normalize_grid_params(
        sampler._patch_arg, sampler._stride_arg, sampler._pad_arg, min_area=sampler._min_area,
        spatial_axes=sampler.spatial_axes,
        allow_incomplete_patches=sampler._allow_incomplete_patches,
        image_dims=_letters_to_dims(image_axes), image_shape=list(image_shape))


def _box(chunk_tlbr: Mapping[str, slice], dims: list[str], letters: dict[str, str],
         sizes: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    start, stop = {}, {}
    for d in dims:
        sel = chunk_tlbr.get(letters[d], slice(None))
        start[d] = 0 if sel.start is None else max(0, int(sel.start))
        stop[d] = sizes[d] if sel.stop is None else min(sizes[d], int(sel.stop))
    return start, stop


def _is_zero(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and value == 0


def _placeholder_axes(patch_size: Any, spatial_axes: str) -> set[str]:
    """Axes whose patch size is 0 (zarrdataset's placeholder)."""
    if _is_zero(patch_size):
        return set(spatial_axes)
    if isinstance(patch_size, Mapping):
        return {str(k) for k, v in patch_size.items() if _is_zero(v)}
    if isinstance(patch_size, list) and len(patch_size) == len(spatial_axes):
        return {ax for ax, v in zip(spatial_axes, patch_size, strict=True) if _is_zero(v)}
    return set()


def _without_placeholders(patch_size: Any) -> Any:
    """``patch_size`` with 0 read as 1, to check the rest of the arguments."""
    if _is_zero(patch_size):
        return 1
    if isinstance(patch_size, Mapping):
        return {k: 1 if _is_zero(v) else v for k, v in patch_size.items()}
    if isinstance(patch_size, list):
        return [1 if _is_zero(v) else v for v in patch_size]
    return patch_size


class PatchSampler:
    """Patch sampling algorithm to retrieve image patches/windows from images.

    If the image used for extracting patches has a mask associated to it,
    only patches whose window the mask covers (see ``min_area``) are
    retrieved.

    Parameters
    ----------
    patch_size : int, iterable of int or dict
        Size in pixels of the patches on each spatial axis: one int for every
        axis, one value per letter of ``spatial_axes``, or a dict keyed by
        axis letter (an axis missing from the dict gets 1).
    stride : int, iterable of int, dict or None
        Step between patch positions; None (or an axis missing from a dict)
        means the patch size.
    pad : int, iterable of int, dict or None
        Pixels added on each side of the patch when it is read.
    min_area : int or float
        Mask coverage of the patch window needed to keep a patch: below 1 a
        fraction of the patch area, from 1 a number of pixels (default 1:
        any coverage).
    spatial_axes : str
        The spatial axes from where patches can be extracted.
    allow_incomplete_patches : bool
        Also place patches that run past the image border (read padded to
        the full patch size).

    Attributes
    ----------
    _patch_size, _stride, _pad : dict
        Per letter of ``spatial_axes`` (as given, e.g. ``"Z"``, ``"Y"``,
        ``"X"``): the resolved patch size, stride and pad.
    _min_area : int or float
    _allow_incomplete_patches : bool
    _max_chunk_size : dict
        Chunk size per spatial axis of the last image given to
        :meth:`compute_chunks` (1 for axes the image lacks).

    Raises
    ------
    zarrdask.errors.GridParameterError
        For sizes below 1, a negative pad, a sequence whose length is not
        ``len(spatial_axes)`` or an unknown axis letter.
    """

    def __init__(self, patch_size: int | Iterable[int] | dict,
                 stride: int | Iterable[int] | dict | None = None,
                 pad: int | Iterable[int] | dict | None = None,
                 min_area: int | float = 1, spatial_axes: str = "ZYX",
                 allow_incomplete_patches: bool = False) -> None:
        if isinstance(patch_size, Iterable) and not isinstance(patch_size, Mapping | str):
            patch_size = list(patch_size)
        if isinstance(stride, Iterable) and not isinstance(stride, Mapping | str):
            stride = list(stride)
        if isinstance(pad, Iterable) and not isinstance(pad, Mapping | str):
            pad = list(pad)
        self._patch_arg = patch_size
        self._stride_arg = stride
        self._pad_arg = pad
        self.spatial_axes = spatial_axes
        self._min_area = min_area
        self._allow_incomplete_patches = bool(allow_incomplete_patches)
        # zarrdataset accepts patch_size=0 (a placeholder) until a grid is computed,
        # where it fails (here: GridParameterError from the grid parameters)
        placeholder = _placeholder_axes(patch_size, spatial_axes)
        spec = normalize_grid_params(
            _without_placeholders(patch_size), stride, pad, min_area=min_area,
            spatial_axes=spatial_axes, allow_incomplete_patches=allow_incomplete_patches,
            image_dims=_letters_to_dims(spatial_axes), image_shape=[_ANY_SIZE] * len(spatial_axes))
        self._patch_size = {ax: 0 if ax in placeholder else spec.patch[ax.lower()]
                            for ax in spatial_axes}
        self._stride = {ax: spec.stride[ax.lower()] for ax in spatial_axes}
        self._pad = {ax: spec.pad[ax.lower()] for ax in spatial_axes}
        self._max_chunk_size = {ax: 0 for ax in spatial_axes}

    def __repr__(self) -> str:
        """String representation of classes derived from PatchSampler."""
        return f"{type(self)} for sampling patches of size {self._patch_size}."

    # -- zarrdataset's coverage helpers (kept for code that builds on them) ----------
    def _compute_corners(self, coordinates: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """Corners of the boxes ``[c, c + scale)``.

        Parameters
        ----------
        coordinates : (N, D) array
            Top-left corners.
        scale : (D,) array
            Box sizes.

        Returns
        -------
        (2**D, N, D) float array
            Corner ``k`` takes, along dim ``d``, the far side when bit ``d``
            of ``k`` is set; far sides are pulled in by a relative ``1e-4``
            so that they still fall inside the box.
        """
        coordinates = np.asarray(coordinates, dtype=np.float64)
        scale = np.asarray(scale, dtype=np.float64).reshape(1, -1)
        dim = coordinates.shape[-1]
        bits = np.array([[(k >> d) & 1 for d in range(dim)] for k in range(2 ** dim)],
                        dtype=np.float64)
        return coordinates[None] + (scale * (1 - 1e-4))[None] * bits[:, None, :]

    def _compute_reference_indices(self, reference_coordinates: np.ndarray,
                                   reference_axes_sizes: np.ndarray
                                   ) -> tuple[list[np.ndarray], list[tuple[int]]]:
        """Cell edges per axis of a set of boxes and each box's cell index.

        Parameters
        ----------
        reference_coordinates : (N, D) array
            Top-lefts of boxes.
        reference_axes_sizes : (D,) array
            Box size per axis.

        Returns
        -------
        reference_per_axis : list of arrays
            Per axis: ``-inf``, the sorted distinct top-lefts, and the end of
            the last box.
        reference_idx : list of tuple of int
            Per box, the index of its cell along each axis.
        """
        coords = np.asarray(reference_coordinates, dtype=np.float64)
        sizes = np.asarray(reference_axes_sizes, dtype=np.float64).reshape(-1)
        per_axis = []
        for d in range(coords.shape[1]):
            values = np.unique(coords[:, d])
            last = values.max() + sizes[d] if values.size else sizes[d]
            per_axis.append(np.concatenate(([-np.inf], values, [last])))
        idx = np.stack([np.searchsorted(per_axis[d], coords[:, d], side="right") - 1
                        for d in range(coords.shape[1])], axis=-1) if coords.size else \
            np.zeros((0, coords.shape[1]), dtype=np.int64)
        return per_axis, [tuple(int(v) for v in row) for row in idx]

    def _compute_overlap(self, corners_coordinates: np.ndarray,
                         reference_per_axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Overlap of boxes (given by corners) with the cells of a reference.

        Parameters
        ----------
        corners_coordinates : (2**D, N, D) array
            From :meth:`_compute_corners`.
        reference_per_axis : list of arrays
            Cell edges from :meth:`_compute_reference_indices`.

        Returns
        -------
        coverage : (2**D, N) array
            ``prod_d |corner - cut|`` per corner, where ``cut`` is the
            larger of the box's top-left and the start of the cell holding
            its far corner: how much of the box lies on each side of that
            cell edge.
        corners_idx : (2**D, N, D) int array
            The cell of each corner.
        """
        corners = np.asarray(corners_coordinates, dtype=np.float64)
        idx = np.stack([np.searchsorted(reference_per_axis[d], corners[..., d], side="right") - 1
                        for d in range(corners.shape[-1])], axis=-1)
        cell_start = np.stack([reference_per_axis[d][idx[..., d]]
                               for d in range(corners.shape[-1])], axis=-1)
        cut = np.maximum(corners[0], cell_start[-1])
        coverage = np.prod(np.abs(corners - cut[None]), axis=-1)
        return coverage, idx

    # -- grid -----------------------------------------------------------------------------
    def _geometry(self, mask: Any, image_size: Mapping[str, int]) -> tuple[
            list[str], dict[str, str], dict[str, int], np.ndarray, list[float]]:
        """Grid dims, their letters and sizes, and the mask over them with its
        scale (mask pixels per image pixel)."""
        letters = {ax.lower(): ax for ax in self.spatial_axes}
        dims = [ax.lower() for ax in self.spatial_axes if ax in image_size]
        sizes = {d: int(image_size[letters[d]]) for d in dims}
        data = np.asarray(mask[slice(None)])
        mask_axes = list(mask.axes)
        if data.ndim != len(mask_axes):
            raise MaskError(
                f"the mask {mask!r} returned an array of {data.ndim} dims for axes "
                f"{''.join(mask_axes)!r}; the mask's axes must describe its array")
        order, scale = [], []
        for d in dims:
            ax = letters[d]
            if ax in mask_axes:
                order.append(mask_axes.index(ax))
                scale.append(float(mask.scale.get(ax, 1.0)))
        other = [i for i in range(data.ndim) if i not in order]
        if other:
            data = np.any(data, axis=tuple(other), keepdims=True) if data.size else data
            data = data.reshape([data.shape[i] for i in range(data.ndim) if i not in other])
            kept = [i for i in range(len(mask_axes)) if i not in other]
            order = [kept.index(i) for i in order]
        data = data.transpose(order) if order else data.reshape(())
        full, k = [], 0
        for d in dims:
            if letters[d] in mask_axes:
                full.append(scale[k])
                k += 1
            else:
                data = np.expand_dims(data, len(full))
                full.append(1.0 / max(1, sizes[d]))
        return dims, letters, sizes, data.astype(bool, copy=False), full

    def _kept(self, starts: np.ndarray, dims: list[str], sizes: dict[str, int], mask: np.ndarray,
              scale: list[float], min_area: float, window: dict[str, int]) -> np.ndarray:
        if not len(starts):
            return starts
        patch = [window[d] for d in dims]
        cov = window_coverage(mask, scale, starts, patch)
        keep = keep_patches(cov, min_area, int(np.prod(patch)))
        return starts[keep]

    def _window(self, sizes: dict[str, int], dims: list[str]) -> dict[str, int]:
        letters = {ax.lower(): ax for ax in self.spatial_axes}
        return {d: (self._patch_size[letters[d]] if sizes[d] > 1 else 1) for d in dims}

    def _compute_grid(self, chunk_tlbr: dict, mask: Any, patch_size: dict, image_size: dict,
                      min_area: float, allow_incomplete_patches: bool = False) -> np.ndarray:
        """Grid positions in a chunk that the mask covers.

        Parameters
        ----------
        chunk_tlbr : dict
            Slice per spatial axis letter: the box (reference pixels, relative
            to the region of interest) whose positions are wanted.
        mask : ImageBase
            The mask, rescaled to the reference image.
        patch_size : dict
            Step between positions per axis letter (zarrdataset passes the
            stride here).
        image_size : dict
            Size of the reference image per axis letter.
        min_area : float
            As ``PatchSampler(min_area=...)``, measured on the patch window.
        allow_incomplete_patches : bool
            Also place positions whose patch runs past the image.

        Returns
        -------
        (N, len(spatial_axes)) int64 array
            Top-lefts relative to the chunk's start, in row-major order
            (0 on axes the image lacks).
        """
        dims, letters, sizes, data, scale = self._geometry(mask, image_size)
        window = self._window(sizes, dims)
        spec = GridSpec(dims=tuple(dims), patch=window,
                        stride={d: (int(patch_size.get(letters[d], 1)) if sizes[d] > 1 else 1)
                                for d in dims},
                        pad={d: 0 for d in dims}, min_area=float(min_area),
                        allow_incomplete=bool(allow_incomplete_patches))
        start, stop = _box(chunk_tlbr, dims, letters, sizes)
        starts = grid_starts_in_box(start, stop, sizes, spec)
        starts = self._kept(starts, dims, sizes, data, scale, min_area, window)
        return self._relative(starts, dims, start)

    def _relative(self, starts: np.ndarray, dims: list[str], start: dict[str, int]) -> np.ndarray:
        out = np.zeros((len(starts), len(self.spatial_axes)), dtype=np.int64)
        for i, d in enumerate(dims):
            j = [a.lower() for a in self.spatial_axes].index(d)
            out[:, j] = starts[:, i] - start[d]
        return out

    def _compute_valid_toplefts(self, chunk_tlbr: dict, mask: Any, patch_size: dict,
                                **kwargs: Any) -> np.ndarray:
        """Top-lefts (relative to the chunk) of the patches to extract; see
        :meth:`_compute_grid` for the arguments."""
        return self._compute_grid(chunk_tlbr, mask, patch_size, **kwargs)

    def _compute_toplefts_slices(self, chunk_tlbr: dict, valid_mask_toplefts: np.ndarray,
                                 patch_size: dict, pad: dict | None = None) -> list[dict]:
        """Slices of each patch: ``[start - pad, start + patch + pad)`` per
        spatial axis letter, with ``start`` the chunk's start plus the
        relative top-left."""
        pad = pad if pad is not None else {ax: 0 for ax in self.spatial_axes}
        offsets = [0 if chunk_tlbr.get(ax, slice(None)).start is None
                   else int(chunk_tlbr[ax].start) for ax in self.spatial_axes]
        out = []
        for row in np.asarray(valid_mask_toplefts, dtype=np.int64).tolist():
            out.append({ax: slice(o + t - pad[ax], o + t + patch_size[ax] + pad[ax])
                        for ax, o, t in zip(self.spatial_axes, offsets, row, strict=True)})
        return out

    def _image_geometry(self, image_collection: Any) -> tuple[Any, Any, dict[str, int],
                                                            dict[str, int]]:
        image = image_collection.collection[image_collection.reference_mode]
        mask = image_collection.collection[image_collection.mask_mode]
        sizes = {ax: int(s) for ax, s in zip(image.axes, image.shape, strict=True)
                 if ax in self.spatial_axes}
        chunks = {ax: int(c) for ax, c in zip(image.axes, image.chunk_size, strict=True)
                  if ax in self.spatial_axes}
        if not sizes:
            raise GridParameterError(
                f"the reference image has axes {image.axes!r}, none of spatial_axes="
                f"{self.spatial_axes!r}; pass spatial_axes with the image's spatial axes")
        return image, mask, sizes, chunks

    def _all_starts(self, sizes: dict[str, int], dims: list[str], spec: GridSpec) -> np.ndarray:
        return grid_starts_in_box({d: 0 for d in dims}, {d: sizes[d] for d in dims},
                                  {d: sizes[d] for d in dims}, spec)

    def compute_chunks(self, image_collection: Any) -> Iterable[dict]:
        """Compute the top-left positions of the chunks in which the image is
        divided before taking patches from them.

        The chunks are the storage chunks of the reference image (relative
        to its region of interest) that hold the top-left of at least one
        patch the mask selects, counting grid patches that would run past the
        border (so, without ``allow_incomplete_patches``, a chunk may hold no
        patch: :meth:`compute_patches` returns none for it, as zarrdataset's).

        Parameters
        ----------
        image_collection : ImageCollection
            The image from where the patches are extracted.

        Returns
        -------
        list of dict
            One dict per chunk, in row-major order: a slice per letter of
            ``spatial_axes`` (``slice(0, 1)`` for axes the image lacks).
        """
        image, mask, sizes, chunks = self._image_geometry(image_collection)
        self._max_chunk_size = {ax: (min(chunks[ax], sizes[ax]) if ax in sizes else 1)
                                for ax in self.spatial_axes}
        dims, letters, dsizes, data, scale = self._geometry(mask, sizes)
        spec = _spec_for(self, "".join(letters[d] for d in dims), [dsizes[d] for d in dims])
        self._on_new_image(dsizes, spec)
        # as zarrdataset, a chunk is listed even when its patches would all cross
        # the border (compute_patches then returns none for it)
        starts = self._candidate_starts(dsizes, dims, replace(spec, allow_incomplete=True))
        starts = self._kept(starts, dims, dsizes, data, scale, self._min_area,
                            {d: spec.patch[d] for d in dims})
        csize = np.array([chunks[letters[d]] for d in dims], dtype=np.int64)
        cells = np.unique(starts // csize, axis=0) if len(starts) else np.zeros((0, len(dims)),
                                                                                  np.int64)
        out = []
        for cell in cells.tolist():
            box = {ax: slice(0, 1) for ax in self.spatial_axes}
            for d, c, size in zip(dims, cell, csize.tolist(), strict=True):
                box[letters[d]] = slice(c * size, (c + 1) * size)
            out.append(box)
        return out

    def _on_new_image(self, sizes: dict[str, int], spec: GridSpec) -> None:
        """Hook: a new reference image is gridded."""

    def _candidate_starts(self, sizes: dict[str, int], dims: list[str], spec: GridSpec) -> np.ndarray:
        return self._all_starts(sizes, dims, spec)

    def compute_patches(self, image_collection: Any, chunk_tlbr: dict) -> Iterable[dict]:
        """The patches whose top-left lies in a chunk, as slices.

        Parameters
        ----------
        image_collection : ImageCollection
            The image.
        chunk_tlbr : dict
            A chunk from :meth:`compute_chunks` (or any box: a slice per
            spatial axis letter, in reference pixels relative to the region
            of interest).

        Returns
        -------
        list of dict
            Per patch, a slice per letter of ``spatial_axes``:
            ``[top-left - pad, top-left + patch + pad)``, in row-major order.
        """
        image, mask, sizes, _chunks = self._image_geometry(image_collection)
        stride = {ax: (self._stride[ax] if sizes.get(ax, 1) > 1 else 1) for ax in self.spatial_axes}
        patch = {ax: (self._patch_size[ax] if sizes.get(ax, 1) > 1 else 1) for ax in self.spatial_axes}
        pad = {ax: (self._pad[ax] if sizes.get(ax, 1) > 1 else 0) for ax in self.spatial_axes}
        valid = self._compute_valid_toplefts(
            chunk_tlbr, mask, stride, image_size=sizes, min_area=self._min_area,
            allow_incomplete_patches=self._allow_incomplete_patches)
        return self._compute_toplefts_slices(chunk_tlbr, valid, patch_size=patch, pad=pad)


class BlueNoisePatchSampler(PatchSampler):
    """Patch sampler that retrieves patches from coordinates sampled using the
    Bridson sampling algorithm, also known as Blue-noise sampling algorithm.

    Positions are Poisson-disc samples over the whole image (see
    :func:`zarrdask.grid.bluenoise.blue_noise_starts`): no two patches
    overlap unless ``allow_overlap``, and only positions whose patch window
    the mask covers are kept.

    Parameters
    ----------
    patch_size : int, iterable or dict
        Size in pixels of the patches extracted.
    resample_positions : bool
        Draw new positions for every image given to :meth:`compute_chunks`
        (and, in a :class:`~zarrdask.ZarrDataset`, for every new iteration
        in the same process) instead of keeping the first ones.
    allow_overlap : bool
        Whether patches may overlap (by up to half their size).
    **kwargs
        The other arguments of :class:`PatchSampler`.

    Attributes
    ----------
    _seed : int
        Seed of the positions, drawn from numpy's global random state when
        the sampler is made (so ``np.random.seed`` makes it reproducible).
    _base_chunk_tls : numpy.ndarray or None
        As in zarrdataset, the positions of one chunk relative to its
        top-left (``(N, len(spatial_axes))``), before the mask: those of the
        chunk given to the last :meth:`compute_patches` (the whole last image
        before any). zarrdataset repeated one chunk's positions in every
        chunk; here they differ from chunk to chunk.
    _image_tls : numpy.ndarray or None
        The positions of the whole last image.
    """

    def __init__(self, patch_size: int | Iterable[int] | dict, resample_positions=False,
                 allow_overlap=False, **kwargs: Any) -> None:
        super().__init__(patch_size, **kwargs)
        self._base_chunk_tls = None
        self._image_tls: np.ndarray | None = None
        self._chunk_box: tuple[dict[str, int], dict[str, int]] | None = None
        self._resample_positions = bool(resample_positions)
        self._allow_overlap = bool(allow_overlap)
        self._seed = int(np.random.randint(0, 2**31 - 1))  # noqa: NPY002 - np.random.seed reproduces it
        self._positions_for: Any = None
        self._image_shape: dict[str, int] | None = None
        self._image_spec: GridSpec | None = None

    def compute_sampling_positions(self, force=False) -> None:
        """Compute the sampling positions using blue-noise sampling.

        The positions cover the last image given to :meth:`compute_chunks`.

        Parameters
        ----------
        force : bool
            Draw new positions (with a new seed) even when some exist.
        """
        if self._image_tls is not None and not force:
            return
        if force and self._image_tls is not None:
            self._seed = int(np.random.randint(0, 2**31 - 1))  # noqa: NPY002 - np.random.seed reproduces it
        if self._image_shape is None or self._image_spec is None:
            return
        spec = self._image_spec
        starts = blue_noise_starts(self._image_shape, spec, seed=self._seed,
                                   allow_overlap=self._allow_overlap)
        self._positions_for = self._positions_key(self._image_shape, spec)
        self._image_tls = self._relative(starts, list(spec.dims), {d: 0 for d in spec.dims})
        self._set_base_chunk()

    def _set_base_chunk(self) -> None:
        """``_base_chunk_tls``: the image's positions in the last chunk box."""
        tls = self._image_tls
        if tls is None or self._chunk_box is None:
            self._base_chunk_tls = tls
            return
        start, stop = self._chunk_box
        cols = [a.lower() for a in self.spatial_axes]
        keep = np.ones(len(tls), dtype=bool)
        offset = np.zeros(len(cols), dtype=np.int64)
        for d in start:
            j = cols.index(d)
            keep &= (tls[:, j] >= start[d]) & (tls[:, j] < stop[d])
            offset[j] = start[d]
        self._base_chunk_tls = tls[keep] - offset

    def _positions_key(self, sizes: dict[str, int], spec: GridSpec) -> tuple:
        """What the positions depend on: image size, grid spec and seed."""
        return tuple(sorted(sizes.items())), spec, self._seed

    def _use_image(self, sizes: dict[str, int], spec: GridSpec) -> None:
        """Make the positions those of an image of ``sizes`` under ``spec``:
        the current ones when they were drawn for it, otherwise new ones
        (same seed)."""
        self._image_shape, self._image_spec = dict(sizes), spec
        if self._positions_key(sizes, spec) != self._positions_for:
            self._image_tls = None
            self._chunk_box = None
            self.compute_sampling_positions()

    def _on_new_image(self, sizes: dict[str, int], spec: GridSpec) -> None:
        self._chunk_box = None
        if self._resample_positions and self._image_tls is not None:
            self._image_shape, self._image_spec = dict(sizes), spec
            self.compute_sampling_positions(force=True)
        else:
            self._use_image(sizes, spec)

    def _candidate_starts(self, sizes: dict[str, int], dims: list[str], spec: GridSpec) -> np.ndarray:
        self.compute_sampling_positions()
        cols = [[a.lower() for a in self.spatial_axes].index(d) for d in dims]
        return np.asarray(self._image_tls, dtype=np.int64)[:, cols]

    def _compute_valid_toplefts(self, chunk_tlbr: dict, mask: Any, patch_size: dict,
                                **kwargs: Any) -> np.ndarray:
        """Blue-noise positions in a chunk whose patch window the mask covers
        (relative to the chunk's start)."""
        image_size = kwargs["image_size"]
        dims, letters, sizes, data, scale = self._geometry(mask, image_size)
        spec = _spec_for(self, "".join(letters[d] for d in dims), [sizes[d] for d in dims])
        self._use_image(sizes, spec)
        starts = self._candidate_starts(sizes, dims, spec)
        start, stop = _box(chunk_tlbr, dims, letters, sizes)
        self._chunk_box = (start, stop)
        self._set_base_chunk()
        lo = np.array([start[d] for d in dims])
        hi = np.array([stop[d] for d in dims])
        starts = starts[np.all((starts >= lo) & (starts < hi), axis=1)]
        starts = self._kept(starts, dims, sizes, data, scale, kwargs.get("min_area", self._min_area),
                            {d: spec.patch[d] for d in dims})
        return self._relative(starts, dims, start)
