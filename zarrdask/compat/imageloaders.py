"""zarrdataset's image loaders: :class:`ImageBase`, :class:`ImageLoader`,
:class:`ImageCollection` (and :func:`image2array`, from
:mod:`zarrdask.compat._sources`).

An image is addressed in its *target* axes (``axes``): reads take slices (or
a dict of slices keyed by axis letter) in the pixels of a *reference* image
(see :meth:`ImageBase.rescale`), scale them by :attr:`ImageBase.scale`, read
that region of the stored array inside its region of interest, pad what
falls outside with zeros, and rearrange the axes. The pixels come from the
readers of :mod:`zarrdask.io` (zarr v2/v3, TIFF, Pillow, in-memory arrays,
local or remote).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from ..axes import map_axes_order
from ..dataset.boxes import PAD_MODES, clip_box, pad_array
from ..errors import AxesError, DatasetError, RoiError
from ..io.image2array import image2array as _io_image2array
from ._sources import check_data_group, effective_data_group, image2array
from ._stage import AxesStage, check_axes, dropped_axes, new_axes, parse_roi_arg

try:
    import tifffile  # noqa: F401 - only whether it is installed
except ImportError:  # as zarrdataset: TIFF reading is off without tifffile
    TIFFFILE_SUPPORT = False
else:
    TIFFFILE_SUPPORT = True

__all__ = ["ImageBase", "ImageLoader", "ImageCollection", "image2array", "TIFFFILE_SUPPORT"]



def _chunks_of(arr: Any) -> tuple[int, ...]:
    chunks = getattr(arr, "chunks", None)
    if isinstance(chunks, tuple) and len(chunks) == len(arr.shape) and all(
            isinstance(c, int | np.integer) for c in chunks):
        return tuple(max(1, int(c)) for c in chunks)
    return tuple(max(1, int(s)) for s in arr.shape)


def _bounds(sel: Any, size: int, scale: float) -> tuple[int, int]:
    """Scaled ``[start, stop)`` of one axis selection (slice, int or None)."""
    if sel is None:
        return 0, size
    if isinstance(sel, slice):
        if sel.step not in (None, 1):
            raise DatasetError(f"slice {sel!r} has a step; reads take contiguous boxes")
        if sel.start is None and sel.stop is None:
            return 0, size
        start = 0 if sel.start is None else math.floor(sel.start * scale + 1e-9)
        stop = size if sel.stop is None else math.ceil(sel.stop * scale - 1e-9)
        return int(start), int(max(stop, start))
    if isinstance(sel, int | np.integer):
        return math.floor(int(sel) * scale + 1e-9), math.ceil((int(sel) + 1) * scale - 1e-9)
    raise DatasetError(
        f"cannot read with the index {sel!r}; use slices, ints or a dict of them keyed by axis "
        "letter"
    )


class ImageBase:
    """An image addressed in its target axes and rescaled to a reference.

    The base class holds an all-True boolean array: it is the default mask
    of an :class:`ImageCollection` (one pixel per chunk of the reference
    image).

    Parameters
    ----------
    shape : iterable of int
        Shape of the array.
    chunk_size : iterable of int, optional
        Its chunk shape (default: ``shape``).
    source_axes : str
        One letter per axis.
    mode : str
        The modality this image plays (``"images"``, ``"masks"``...).

    Attributes
    ----------
    arr : array-like
        The stored array (zarr array, numpy array...).
    source_axes, axes : str
        Stored axes and the axes reads are returned in.
    roi : list of slice
        Region of interest per source axis: the image as far as reads are
        concerned (reads past it are padded).
    permute_order : list of int
        Transposition from source axes (after dropping) to ``axes``.
    """

    arr: Any = None
    spatial_axes = "ZYX"
    source_axes: Any = None
    axes: Any = None
    mode = ""
    permute_order: Any = None
    _padding_mode = "constant"
    _store: Any = None
    _new_axes: Any = ""
    _drop_axes: Any = ""
    _scale: Any = None
    _shape: Any = None
    _spatial_reference_shape: Any = None
    _spatial_reference_axes: Any = None
    _chunk_size: Any = None
    _cached_coords: Any = None
    _cache: Any = None
    _image_func: Any = None
    _stage: Any = None
    _generated: Any = None
    #: The ``chunk_size`` an ImageBase was made with (loaders take their array's).
    _declared_chunks: Any = None

    def __init__(self, shape: Iterable[int], chunk_size: Iterable[int] | None = None,
                 source_axes: str = "", mode: str = "") -> None:
        shape = [int(s) for s in shape]
        chunk_size = shape if chunk_size is None else [int(c) for c in chunk_size]
        source_axes = "".join(source_axes)
        if len(chunk_size) != len(shape):
            raise AxesError(
                f"ImageBase(shape={tuple(shape)}) got chunk_size={tuple(chunk_size)}; give one "
                "chunk length per dim"
            )
        if len(source_axes) != len(shape):
            raise AxesError(
                f"ImageBase(shape={tuple(shape)}) got source_axes={source_axes!r}; give one axis "
                "letter per dim"
            )
        self.source_axes = source_axes
        self.axes = source_axes
        self.permute_order = list(range(len(source_axes)))
        self.arr = np.ones(shape, dtype=bool)
        self.roi = [slice(0, None)] * len(source_axes)
        self.mode = mode
        self._chunk_size = chunk_size
        self._declared_chunks = tuple(max(1, c) for c in chunk_size)
        self._drop_axes = ""
        self._new_axes = ""
        self._stage = AxesStage(list(source_axes), source_axes)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(mode={self.mode!r}, axes={self.axes!r}, "
                f"shape={tuple(self.shape)})")

    # -- reading --------------------------------------------------------------------
    def _source_array(self) -> tuple[Any, str, list[tuple[int, int]]]:
        """The array reads come from, its axes and its valid region per axis.

        For an image with an ``image_func`` this is the generated array (in
        the function's ``axes``); otherwise the stored array inside its ROI.
        """
        if self._image_func is not None:
            gen = self._generated_array()
            return gen, self.axes, [(0, int(s)) for s in gen.shape]
        return self.arr, self.source_axes, self._valid_roi()

    def _generated_array(self) -> np.ndarray:
        if self._generated is None:
            whole = self._stage(self._cache_chunk(tuple(
                slice(a, b) for a, b in self._valid_roi())))
            result = np.asarray(self._image_func(whole))
            expected = len(self.axes)
            if result.ndim != expected:
                raise AxesError(
                    f"image_func {self._image_func!r} returned an array of shape {result.shape} "
                    f"but declares axes={self.axes!r} ({expected} axes); make its .axes match "
                    "what it returns"
                )
            self._generated = result
        return self._generated

    def _valid_roi(self) -> list[tuple[int, int]]:
        """``[start, stop)`` of the region of interest per stored axis."""
        out = []
        for r, s in zip(self.roi, self.arr.shape, strict=True):
            start = 0 if r.start is None else int(r.start)
            stop = int(s) if r.stop is None else min(int(r.stop), int(s))
            out.append((start, stop))
        return out

    def _iscached(self, coords: tuple[slice, ...]) -> bool:
        """Whether the region ``coords`` (slices of the stored array) lies
        inside the cached region."""
        if self._cached_coords is None:
            return False
        return all(c.start <= s.start and s.stop <= c.stop
                   for s, c in zip(coords, self._cached_coords, strict=True))

    def _cache_chunk(self, index: tuple[slice, ...]) -> np.ndarray:
        """Read a region of the stored array (``self.arr``) as a new array.

        Parameters
        ----------
        index : tuple of slice
            One slice per stored axis, in stored pixels; it may extend past
            the region of interest (or start below 0).

        Returns
        -------
        numpy.ndarray
            A fresh array of the full requested size: the part inside the
            region of interest comes from the storage chunks that hold it
            (kept in a cache of whole chunks for the next read); the rest is
            padded with zeros (or ``_padding_mode``). The cache only ever
            holds stored values, so padding never leaks into later reads.
        """
        valid = self._valid_roi()
        lo = [0 if s.start is None else int(s.start) for s in index]
        hi = [v[1] if s.stop is None else int(s.stop) for s, v in zip(index, valid, strict=True)]
        return _read_padded(lambda need: self._read_cached(need, valid), lo, hi, valid,
                            self.arr.dtype, self._padding_mode)

    def _read_cached(self, need: tuple[slice, ...], valid: list[tuple[int, int]]) -> np.ndarray:
        """The region ``need`` (inside ``valid``) of the stored array, from
        the cache of whole storage chunks (reloaded when it lacks ``need``)."""
        if not self._iscached(need):
            chunks = _chunks_of(self.arr)
            region = tuple(
                slice(max(v[0], (s.start // c) * c), min(v[1], -(-s.stop // c) * c))
                for s, c, v in zip(need, chunks, valid, strict=True))
            self._cache = np.asarray(self.arr[region])
            self._cached_coords = region
        return self._cache[tuple(slice(s.start - c.start, s.stop - c.start)
                                 for s, c in zip(need, self._cached_coords, strict=True))]

    def __getitem__(self, index: slice | tuple | dict) -> np.ndarray:
        """Read a region given in the reference image's pixels.

        Parameters
        ----------
        index : slice, tuple of slices or dict
            A slice (for every reference axis), one slice per reference
            spatial axis (:meth:`rescale`'s ``spatial_reference_axes``, or
            this image's ``axes`` before rescaling), or a dict keyed by axis
            letter. Axes not named are read whole.

        Returns
        -------
        numpy.ndarray
            A new array in ``axes`` order; parts outside the region of
            interest are zeros (or ``_padding_mode``).
        """
        reference_axes = (self._spatial_reference_axes if self._spatial_reference_axes is not None
                          else self.axes)
        if isinstance(index, slice):
            index = [index] * len(reference_axes)
        if not isinstance(index, Mapping):
            if not isinstance(index, list | tuple):
                index = [index]
            index = dict(zip(reference_axes, index, strict=False))
        scale = self.scale
        shape = self.shape
        target = {ax: _bounds(index.get(ax), int(s), float(scale.get(ax, 1.0)))
                  for ax, s in zip(self.axes, shape, strict=True)}
        array, axes, valid = self._source_array()
        if self._image_func is not None:
            return _read_padded(array.__getitem__, [target[ax][0] for ax in axes],
                                [target[ax][1] for ax in axes], valid, array.dtype,
                                self._padding_mode)
        key = []
        for ax, (v0, v1) in zip(axes, valid, strict=True):
            if ax in target:
                a, b = target[ax]
                key.append(slice(v0 + a, v0 + b))
            else:
                key.append(slice(v0, v1))
        return self._stage(self._cache_chunk(tuple(key)))

    # -- geometry ---------------------------------------------------------------------
    def _compute_shapes(self) -> None:
        """Shape and chunk size in ``axes`` (ROI lengths; 1 for new axes)."""
        if self._shape is not None:
            return
        if self._image_func is not None:
            gen = self._generated_array()
            self._shape = [int(s) for s in gen.shape]
            self._chunk_size = list(self._shape)
        else:
            valid = self._valid_roi()
            chunks = self._declared_chunks or _chunks_of(self.arr)
            self._shape, self._chunk_size = [], []
            for a in self.axes:
                if a in self.source_axes:
                    i = self.source_axes.index(a)
                    length = valid[i][1] - valid[i][0]
                    self._shape.append(length)
                    self._chunk_size.append(min(chunks[i], max(1, int(self.arr.shape[i]))))
                else:
                    self._shape.append(1)
                    self._chunk_size.append(1)
        if self._spatial_reference_axes is None:
            self._spatial_reference_axes = [a for a in self.axes if a in self.spatial_axes]
        if self._spatial_reference_shape is None:
            self._spatial_reference_shape = [s for s, a in zip(self._shape, self.axes, strict=True)
                                             if a in self.spatial_axes]

    def rescale(self, spatial_reference_shape: Iterable[int] | None = None,
                spatial_reference_axes: str | None = None) -> None:
        """Rescale this image using the `spatial_reference_shape` as reference.

        Afterwards :attr:`scale` is ``shape / reference shape`` on each axis
        of ``spatial_reference_axes`` (1 elsewhere), and reads take slices in
        the reference's pixels.

        Parameters
        ----------
        spatial_reference_shape : iterable of int, optional
            Reference image shape used to match extracted regions from this
            image (e.g., when calling ``__getitem__``).
        spatial_reference_axes : str, optional
            Rescale only these axes from the image, keeping the rest unscaled.
        """
        if (self._scale is not None and spatial_reference_shape is None
                and spatial_reference_axes is None):
            return
        if spatial_reference_shape is not None:
            self._spatial_reference_shape = [int(s) for s in spatial_reference_shape]
        if spatial_reference_axes is not None:
            self._spatial_reference_axes = list(spatial_reference_axes)
        self._compute_shapes()
        ref_axes = list(self._spatial_reference_axes)
        ref_shape = list(self._spatial_reference_shape)
        if len(ref_axes) != len(ref_shape):
            raise AxesError(
                f"rescale got {len(ref_shape)} reference sizes for the reference axes "
                f"{''.join(ref_axes)!r}; give one size per axis"
            )
        self._scale = {}
        for ax, s in zip(self.axes, self.shape, strict=True):
            if ax in ref_axes:
                self._scale[ax] = s / ref_shape[ref_axes.index(ax)]
            else:
                self._scale[ax] = 1.0

    @property
    def shape(self) -> Iterable[int]:
        """Shape in ``axes`` (the ROI's size; generated arrays: their own)."""
        self._compute_shapes()
        return self._shape

    @property
    def chunk_size(self) -> Iterable[int]:
        """Storage chunk shape in ``axes``."""
        self._compute_shapes()
        return self._chunk_size

    @property
    def scale(self) -> dict:
        """This image's pixels per reference pixel, per axis of ``axes``."""
        self.rescale()
        return self._scale


def _read_padded(read: Callable[[tuple[slice, ...]], Any], lo: list[int], hi: list[int],
                 valid: list[tuple[int, int]], dtype: Any, padding_mode: str) -> np.ndarray:
    """The box ``[lo, hi)`` of an array whose readable region is ``valid``,
    as a new array: ``read`` gives the part inside, the rest is padded with
    zeros (or ``padding_mode``)."""
    clipped = clip_box(lo, hi, [v[0] for v in valid], [v[1] for v in valid])
    if clipped is None:
        return np.zeros(tuple(max(0, b - a) for a, b in zip(lo, hi, strict=True)), dtype=dtype)
    read_lo, read_hi, widths = clipped
    data = np.array(read(tuple(slice(a, b) for a, b in zip(read_lo, read_hi, strict=True))),
                    copy=True)
    return pad_array(data, widths, padding_mode if padding_mode in PAD_MODES else "constant")


class ImageLoader(ImageBase):
    """Image lazy loader class.

    Opens a zarr store (v2 or v3, OME-NGFF or plain, local or remote), a
    TIFF, an image Pillow reads, or an in-memory numpy/zarr array, and reads
    regions of it on demand.

    Parameters
    ----------
    filename : str or array-like
        Path/URL (``s3://``, ``http(s)://`` too) or an array/zarr object.
    source_axes : str
        Stored axes, one letter per dim (e.g. ``"TCZYX"``).
    data_group : str, optional
        The array inside the source (zarr path such as ``"0"``, TIFF
        ``"series/level"``).
    axes : str, optional
        Axes reads are returned in (permuting, dropping length-1 axes,
        inserting new length-1 axes); default ``source_axes``.
    roi : str, slice or iterable of slice, optional
        Region of interest in source axes (``"(0,0,0):(1,-1,-1)"``).
    image_func : callable, optional
        Applied once to the whole region of interest (in ``axes``); reads
        then come from its result, addressed in ``image_func.axes``
        (e.g. a :class:`~zarrdask.WSITissueMaskGenerator`).
    zarr_store : object, optional
        Ignored: zarr 3 picks the store from the location.
    spatial_axes : str
        Axes that are matched with the reference image.
    mode : str
        The modality this image plays.

    Raises
    ------
    zarrdask.errors.AxesError
        When ``source_axes`` does not fit the array or ``axes`` drops an
        axis longer than 1.
    zarrdask.errors.RoiError
        For a malformed region of interest.
    """

    def __init__(self, filename: str, source_axes: str, data_group: str | None = None,
                 axes: str | None = None, roi: str | slice | Iterable[slice] | None = None,
                 image_func: Callable | None = None, zarr_store: Any = None,
                 spatial_axes: str = "ZYX", mode: str = "") -> None:
        self.mode = mode
        self.spatial_axes = spatial_axes
        name = filename if isinstance(filename, str) else f"<{type(filename).__name__}>"
        source_axes = check_axes(source_axes, "source_axes", name)
        roi_slices = parse_roi_arg(roi, source_axes, name)
        data_group = effective_data_group(filename, data_group, what=f"ImageLoader {mode!r}")
        check_data_group(data_group, filename)
        self.arr, self._store = _io_image2array(filename, data_group=data_group,
                                                zarr_store=zarr_store)
        if len(self.arr.shape) != len(source_axes):
            raise AxesError(
                f"source_axes={source_axes!r} has {len(source_axes)} letters but {name} "
                f"(data_group={data_group!r}) has {len(self.arr.shape)} dims, shape "
                f"{tuple(self.arr.shape)}; pass one letter per stored dim"
            )
        for r, s, ax in zip(roi_slices, self.arr.shape, source_axes, strict=True):
            if r.start < 0 or r.start >= s or (r.stop is not None and not r.start < r.stop <= s):
                raise RoiError(
                    f"roi {r!r} on axis {ax!r} of {name} lies outside its extent [0, {s}); pass "
                    "a start >= 0 and a length that stays inside (or -1 for 'to the end')"
                )
        self.roi_slices = roi_slices
        self.roi = roi_slices
        self.source_axes = source_axes
        self.axes = source_axes
        self._drop_axes = ""
        self._new_axes = ""
        if axes is not None and axes != source_axes:
            axes = check_axes(axes, "axes", name)
            self._drop_axes = dropped_axes(source_axes, axes)
            for a in self._drop_axes:
                i = source_axes.index(a)
                r = roi_slices[i]
                length = (self.arr.shape[i] if r.stop is None else r.stop) - r.start
                if length > 1:
                    raise AxesError(
                        f"cannot drop axis {a!r} (from source_axes={source_axes!r}) of {name}: "
                        f"it has {length} elements and axes={axes!r} leaves it out; select one "
                        f"index of it with a roi, or keep {a!r} in axes"
                    )
            self.permute_order = map_axes_order(source_axes, axes)
            self._new_axes = new_axes(source_axes, axes)
            self.axes = axes
        else:
            self.permute_order = list(range(len(source_axes)))
        self._stage = AxesStage(list(source_axes), self.axes, source=name)
        self._image_func = image_func
        if image_func is not None:
            func_axes = getattr(image_func, "axes", None)
            if func_axes is None:
                raise AxesError(
                    f"image_func {image_func!r} for {name} has no .axes attribute; give it the "
                    "axes of the array it returns (as MaskGenerator subclasses do)"
                )
            self.axes = check_axes(func_axes, "image_func.axes", name)

    def __del__(self) -> None:
        """Close the connection to the image file (TIFF stores)."""
        store = getattr(self, "_store", None)
        if store is not None and hasattr(store, "close"):
            try:
                store.close()
            except Exception:  # noqa: BLE001 - closing at interpreter exit may fail
                pass


class ImageCollection:
    """A class to contain a collection of inputs from different modalities.

    This is used to match images with their respective labels and masks: the
    first modality is the reference, and every other one is rescaled so that
    its region of interest spans the reference's.

    Parameters
    ----------
    collection_args : dict
        Modality name to the keyword arguments of :class:`ImageLoader`
        (``filename``, ``source_axes``, ``data_group``, ``axes``, ``roi``,
        ``image_func``, ``zarr_store``).
    spatial_axes : str
        Spatial axes of the dataset, which are used to match different
        modalities using as reference these axes from the first one.

    Attributes
    ----------
    reference_mode : str
    mask_mode : str
        The first modality whose name contains ``"mask"``; a generated
        all-True ``"masks"`` :class:`ImageBase` (one pixel per chunk of the
        reference) when there is none.
    collection : dict of str to ImageBase
    """

    def __init__(self, collection_args: dict, spatial_axes: str = "ZYX") -> None:
        if not collection_args:
            raise DatasetError("ImageCollection needs at least one modality in collection_args")
        self.reference_mode = list(collection_args.keys())[0]
        self.spatial_axes = spatial_axes
        self.collection = {
            mode: ImageLoader(spatial_axes=spatial_axes, mode=mode, **dict(args))
            for mode, args in collection_args.items()
        }
        self._generate_mask()
        self.reset_scales()

    def __repr__(self) -> str:
        return (f"ImageCollection(reference={self.reference_mode!r}, "
                f"modalities={list(self.collection)})")

    def _generate_mask(self) -> None:
        """Pick the mask modality, or add an all-True one."""
        mask_modes = [k for k in self.collection if "mask" in k]
        if mask_modes:
            self.mask_mode = mask_modes[0]
            return
        ref = self.collection[self.reference_mode]
        axes = [a for a in ref.axes if a in self.spatial_axes]
        shape = [math.ceil(s / c) for s, c, a in zip(ref.shape, ref.chunk_size, ref.axes, strict=True)
                 if a in axes]
        self.collection["masks"] = ImageBase(shape=shape, chunk_size=shape,
                                             source_axes="".join(axes), mode="masks")
        self.mask_mode = "masks"

    def reset_scales(self) -> None:
        """Reset the scales between data modalities to match the reference
        modality's shape on the `spatial_axes` only."""
        ref = self.collection[self.reference_mode]
        axes = [a for a in ref.axes if a in self.spatial_axes]
        shape = [ref.shape[ref.axes.index(a)] if a in ref.source_axes or ref._image_func is not None
                 else 1 for a in axes]
        for img in self.collection.values():
            img.rescale(shape, axes)

    def __getitem__(self, index: Any) -> dict[str, np.ndarray]:
        """Read the same region (reference pixels) from every modality."""
        return {mode: img[index] for mode, img in self.collection.items()}
