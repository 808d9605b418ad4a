"""zarrdataset's ``ZarrDataset`` as a thin layer over zarrdask's engine.

A :class:`ZarrDataset` keeps zarrdataset's construction API (dataset specs,
:meth:`~ZarrDataset.add_modality`, :meth:`~ZarrDataset.add_transform`, a
:class:`~zarrdask.PatchSampler`) and output layout, but underneath:

1. the images of the reference modality (the first one added) are opened
   with :func:`zarrdask.open_image`, and their masks (the first modality
   whose name holds ``"mask"``, possibly made by an ``image_loader_func``)
   become boolean DataArrays spanning each image's region of interest;
2. the patch grid is one coordinate table,
   :func:`zarrdask.grid.build.build_table` (grid or blue noise, mask
   coverage measured on the patch window);
3. every other modality is recorded in the table's metadata so that its
   region of interest spans the reference's (zarrdataset's alignment by
   shape ratio), and a :class:`~zarrdask.PatchDataset` streams the patches:
   direct chunk decoding, a chunk cache, and each patch read exactly once
   per epoch across DataLoader workers and DDP ranks, with or without a
   ``worker_init_fn``.

Each sample then goes through per-modality axes stages (ROI on non-spatial
axes, ``source_axes`` to ``axes``), the specs' and
:meth:`~ZarrDataset.add_transform` transforms, and comes out as zarrdataset
lays it out: ``[worker_id], [positions], modality arrays...`` (a bare array
when that list has one element).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import random
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import reduce
from typing import TYPE_CHECKING, Any

import dask.array as dsa
import numpy as np
import xarray as xr
import zarr

from ..axes import SPATIAL_DIMS, dims_from_axes
from ..dataset.boxes import read_level_starts
from ..errors import AxesError, DatasetError, ZarrdaskError
from ..io import open_image
from ..io.recipe import LazyArray, recipe_of
from ..roi import parse_metadata
from ..table import PatchTable, position_columns, source_entry
from ._sources import effective_data_group
from ._stage import AxesStage, check_axes, parse_roi_arg
from .samplers import BlueNoisePatchSampler, PatchSampler
from .specs import _as_list

if TYPE_CHECKING:
    from ._patch_reader import CompatPatchDataset

try:
    import torch
    import torch.utils.data

    _DatasetBase: type = torch.utils.data.IterableDataset
except ImportError:  # as zarrdataset: without torch, ZarrDataset is a plain object
    torch = None
    _DatasetBase = object

try:
    from tqdm import tqdm
except ImportError:  # as zarrdataset: without tqdm, no progress bars

    class tqdm:  # noqa: N801 - zarrdataset's name for the progress bar
        """Stands in for ``tqdm.tqdm`` when tqdm is not installed: no bar."""

        def __init__(self, iterable: Iterable | None = None, *args: Any, **kwargs: Any) -> None:
            self.iterable = iterable

        def __iter__(self) -> Iterator[Any]:
            return iter(self.iterable or ())

        def update(self, n: int = 1) -> None:
            """Do nothing."""

        def close(self) -> None:
            """Do nothing."""

#: Whether torch (the DataLoader base class and the patch reader) is installed.
TORCH_SUPPORT = torch is not None
#: Whether tqdm (the progress bar of ``progress_bar=True``) is installed.
TQDM_SUPPORT = not (isinstance(tqdm, type) and tqdm.__module__ == __name__)

__all__ = ["ZarrDataset", "zarrdataset_worker_init_fn", "chained_zarrdataset_worker_init_fn",
           "TORCH_SUPPORT", "TQDM_SUPPORT"]

_REF = "images"
_SPEC_KEYS = ("modality", "filenames", "source_axes", "axes", "data_group", "roi",
              "image_loader_func", "zarr_store", "transforms", "add_to_output")


# -- picklable pieces of the per-sample pipeline --------------------------------------

class _Then:
    """``second(first(x))``."""

    def __init__(self, first: Callable, second: Callable) -> None:
        self.first = first
        self.second = second

    def __call__(self, arr: Any) -> Any:
        return self.second(self.first(arr))


class _WeakValue:
    """The per-image value of a modality without spatial axes, in its dtype
    (the table stores it as JSON)."""

    def __init__(self, dtype: Any) -> None:
        self.dtype = np.dtype(dtype) if dtype is not None else None

    def __call__(self, value: Any) -> np.ndarray:
        return np.array(value, dtype=self.dtype)


class _TransformChain:
    """zarrdataset's transform semantics: callables applied in turn to the
    arrays of ``n`` modalities; a single result counts as a 1-tuple."""

    def __init__(self, funcs: list[Callable], n: int) -> None:
        self.funcs = list(funcs)
        self.n = n

    def __repr__(self) -> str:
        return f"{[f for f in self.funcs]}"

    def __call__(self, *arrays: Any) -> Any:
        res: Any = arrays
        for func in self.funcs:
            res = func(*res)
            if not isinstance(res, tuple | list):
                res = (res,)
        return res[0] if self.n == 1 else tuple(res)


class _InsertAxes:
    """An array-like with ``n`` leading length-1 axes before ``base``'s."""

    def __init__(self, base: Any, n: int) -> None:
        self.base = base
        self.n = n
        self.shape = (1,) * n + tuple(int(s) for s in base.shape)
        self.dtype = np.dtype(base.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key: tuple) -> np.ndarray:
        res = self.base[tuple(key)[self.n:]]
        if hasattr(res, "compute"):
            res = res.compute(scheduler="sync")
        return np.asarray(res).reshape((1,) * self.n + np.shape(res))


@contextlib.contextmanager
def _fresh_dask_pool() -> Iterator[None]:
    """Run dask's threaded scheduler on a pool made here (a pool inherited
    through ``fork`` by a DataLoader worker has no threads)."""
    import dask

    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool, \
            dask.config.set(pool=pool):
        yield


def _compute(arr: xr.DataArray) -> np.ndarray:
    data = arr.data
    if hasattr(data, "compute"):
        data = data.compute(scheduler="sync")
    return np.asarray(data)


def _roi_select(entry: dict, grid_dims: list[str]) -> dict[int, slice]:
    """The ROI of a table entry on the dims outside the grid, keyed by
    position in ``entry["dims"]``: the ``select`` of its :class:`AxesStage`."""
    return {i: slice(*entry["roi"][d]) for i, d in enumerate(entry["dims"])
            if d not in grid_dims and d in entry["roi"]}


def _torch_distributed() -> tuple[int, int] | None:
    if torch is None:
        return None
    from ..dataset.patch_dataset import _torch_distributed as found

    return found()


def _worker_info() -> Any:
    return None if torch is None else torch.utils.data.get_worker_info()


def _describe(filename: Any) -> str:
    if isinstance(filename, str | os.PathLike):
        return os.fspath(filename)
    return f"<in-memory {type(filename).__name__}>"


class ZarrDataset(_DatasetBase):
    """A Zarr-based dataset class capable of handling large volumes of image
    data stored in OME-NGFF Zarr format (and TIFF, Pillow formats, numpy).

    This class matches the coordinates of the different image modalities to
    those of the reference modality (the first one added), so labels and
    masks are retrieved from the same regions: every modality's region of
    interest spans the reference's, so labels and masks need not share the
    images' size.

    Parameters
    ----------
    dataset_specs : dict or iterable of dict, optional
        Specifications (see :class:`~zarrdask.DatasetSpecs`): each one is
        passed to :meth:`add_modality`.
    patch_sampler : PatchSampler, optional
        The patch sampling algorithm; without one, each sample is one whole
        image (its region of interest).
    shuffle : bool
        Read the patches in a random order (seeded, different every epoch;
        see :meth:`set_epoch`).
    progress_bar : bool
        Show a progress bar while the grid is computed (``tqdm``).
    return_positions : bool
        Also return, for each sample, an int64 array with one ``[start,
        stop)`` row per axis of the reference modality's ``axes`` (relative to
        its region of interest, pad included; ``[0, -1]`` for non-spatial
        axes).
    return_worker_id : bool
        Also return the id of the DataLoader worker that read the sample.
    draw_same_chunk : bool
        With ``shuffle``: read all patches of a storage chunk before moving
        to another (one chunk decoded at a time); otherwise patches of up to
        16 chunks are interleaved.

    Notes
    -----
    The seed of the shuffle is drawn from Python's ``random`` module when the
    dataset is made (and the blue-noise seed from numpy's when the sampler
    is made), so ``random.seed``/``np.random.seed`` beforehand make a run
    reproducible. Inside DataLoader workers (without DDP) the order also
    follows the DataLoader's per-epoch base seed (``torch.manual_seed``).
    """

    def __init__(self, dataset_specs: Iterable[dict] | None = None,
                 patch_sampler: PatchSampler | None = None, shuffle: bool = False,
                 progress_bar: bool = False, return_positions: bool = False,
                 return_worker_id: bool = False, draw_same_chunk: bool = False) -> None:
        super().__init__()
        if patch_sampler is not None and not isinstance(patch_sampler, PatchSampler):
            raise DatasetError(
                f"patch_sampler={patch_sampler!r} is a {type(patch_sampler).__name__}; pass a "
                "zarrdask.PatchSampler or zarrdask.BlueNoisePatchSampler (or None for whole "
                "images)"
            )
        if patch_sampler is not None:
            _warn_overrides(patch_sampler)
        self._worker_sel = slice(None)
        self._worker_id = 0
        self._num_workers = 1
        self._shuffle = bool(shuffle)
        self._progress_bar = bool(progress_bar)
        self._return_positions = bool(return_positions)
        self._return_worker_id = bool(return_worker_id)
        self._draw_same_chunk = bool(draw_same_chunk)
        self._patch_sampler = patch_sampler
        self._transforms: list[tuple[tuple[str, ...], list[Callable]]] = []
        self._output_order: list[str] = []
        self._collections: dict[str, list[dict]] = {}
        self._zarr_store: dict[str, Any] = {}
        self._image_loader_func: dict[str, Callable | None] = {}
        self._arr_lists: list[dict] = []
        self._toplefts: list[np.ndarray] = []
        self._ref_mod: str | None = None
        self._initialized = False
        self._seed = random.getrandbits(31)
        self._epoch: int | None = None
        self._iterations = 0
        self._whole_datasets_per_worker = False
        self._datasets: list[tuple[int, CompatPatchDataset]] = []
        self._positions_info: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._internal: dict[str, str] = {}
        self._table: PatchTable | None = None
        self._built_seed: int | None = None
        self._curr_collection: Any = None
        self._captured_dist: tuple[int, int] | None = None
        #: ``_whole`` results of the running ``_initialize``, by id of the image's meta
        #: (a mask modality that is also read is loaded once).
        self._wholes: dict[int, tuple[np.ndarray, str]] = {}
        if dataset_specs is not None:
            if isinstance(dataset_specs, Mapping):
                dataset_specs = [dataset_specs]
            for specs in dataset_specs:
                if not isinstance(specs, Mapping):
                    raise DatasetError(
                        f"dataset_specs holds a {type(specs).__name__}; each spec must be a dict "
                        "(e.g. zarrdask.ImagesDatasetSpecs(...))"
                    )
                unknown = sorted(set(specs) - set(_SPEC_KEYS))
                if unknown:
                    raise DatasetError(
                        f"the spec for modality {specs.get('modality')!r} has the keys {unknown}, "
                        f"which add_modality does not take; use only {list(_SPEC_KEYS)} "
                        "(a single transform goes in 'transforms' as [((modality,), fn)])"
                    )
                self.add_modality(**specs)

    # -- building up ----------------------------------------------------------------------
    def add_transform(self, modalities: str | Iterable[str], transform: Callable) -> None:
        """Add a pre-processing transform pipeline to the dataset, applied to
        the arrays from modalities specified with `modalities`. This will be
        performed after any other pre-processing transforms already registered.

        Parameters
        ----------
        modalities : str or iterable of str
            The modalities on which this transform is applied (e.g.
            ``"images"``, or ``("images", "labels")`` for both).
        transform : callable or list of callables
            Receives as many arrays as ``modalities`` names and returns as
            many (a list is applied in turn).
        """
        key = (modalities,) if isinstance(modalities, str) else tuple(modalities)
        if not key or not all(isinstance(m, str) for m in key):
            raise DatasetError(
                f"add_transform got modalities={modalities!r}; pass a modality name or a tuple "
                "of names such as ('images', 'labels')"
            )
        self._transforms.append((key, _as_list(transform)))
        self._initialized = False

    def add_modality(self, modality: str,
                     filenames: str | Iterable[str] | zarr.Group | Iterable[zarr.Group]
                     | zarr.Array | Iterable[zarr.Array] | np.ndarray | Iterable[np.ndarray],
                     source_axes: str, axes: str | None = None,
                     data_group: str | int | None = None,
                     roi: str | slice | Iterable[slice] | None = None,
                     image_loader_func: Callable | None = None, zarr_store: Any = None,
                     transforms: Mapping | None = None, add_to_output: bool = True) -> None:
        """Add a new modality to the dataset.

        Parameters
        ----------
        modality : str
            The name of the new modality (``"images"``, ``"labels"``,
            ``"masks"``...). The first modality added is the reference; the
            first whose name contains ``"mask"`` selects where patches are
            taken.
        filenames : str, zarr.Group, zarr.Array, numpy.ndarray, or a list or tuple of them
            One source per image (paths may carry zarrdataset's
            ``"file.zarr;group;SRC:DST;roi"`` metadata).
        source_axes : str
            The original array axes ordering.
        axes : str, optional
            The axes ordering samples come in (permuting, dropping length-1
            axes, inserting new axes); default ``source_axes``.
        data_group : str or int, optional
            The group for zarr images, or key for TIFF files.
        roi : str, slice or iterable of slice, optional
            Region of interest (a list of strings: several regions per file).
        image_loader_func : callable, optional
            For the reference modality: applied to every patch after reading.
            For the others: applied once to the whole region of interest (in
            ``axes``); its result (in ``image_loader_func.axes``) spans the
            reference image, e.g. a mask generator.
        zarr_store : object, optional
            Accepted for compatibility and ignored: zarr 3 picks the store
            from the location.
        transforms : mapping or iterable of (key, transform) pairs, optional
            Transforms to register (:meth:`add_transform`), e.g. the
            ``"transforms"`` list of a dataset spec.
        add_to_output : bool
            Whether this modality is part of each sample.
        """
        if not isinstance(modality, str) or not modality:
            raise DatasetError(f"modality={modality!r} must be a non-empty string such as 'images'")
        if source_axes is None or (isinstance(source_axes, str | list | tuple) and not source_axes):
            source_axes = ""  # as zarrdataset: checked when the images are opened
        else:
            source_axes = check_axes(source_axes, "source_axes", f"modality {modality!r}")
        if axes is not None:
            axes = check_axes(axes, "axes", f"modality {modality!r}")
        if self._ref_mod is None:
            self._ref_mod = modality
        files = list(filenames) if isinstance(filenames, list | tuple) else [filenames]
        if not files:
            raise DatasetError(f"filenames for modality {modality!r} is empty; pass at least one")
        if isinstance(roi, list | tuple) and roi and all(isinstance(r, slice) for r in roi):
            rois: list = [tuple(roi)]
        elif isinstance(roi, list | tuple) and roi:
            rois = list(roi)
        else:
            rois = [roi]
        what = f"modality {modality!r}"
        self._collections[modality] = reduce(
            lambda acc, fn: acc + parse_metadata(
                fn, source_axes, effective_data_group(fn, data_group, what=what), axes, rois),
            files, [])
        if transforms is not None:
            items = transforms.items() if isinstance(transforms, Mapping) else transforms
            for t_key, t_fn in items:
                self.add_transform(t_key, t_fn)
        if add_to_output and modality not in self._output_order:
            self._output_order.append(modality)
        self._zarr_store[modality] = zarr_store
        self._image_loader_func[modality] = image_loader_func
        self._initialized = False

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the shuffle (as ``DistributedSampler.set_epoch``).

        Without it, the order changes with every iteration in the same
        process and, in DataLoader workers, with the DataLoader's base seed.
        """
        self._epoch = int(epoch)

    def __repr__(self) -> str:
        """ZarrDataset string representation."""
        transforms = "\n"
        for inputs, funcs in self._transforms:
            for func in funcs:
                transforms += f"\t{inputs}: {func}\n"
        text = (f"ZarrDataset (PyTorch support:{TORCH_SUPPORT}, tqdm support :{TQDM_SUPPORT})\n"
                f"Modalities: {','.join(self._collections.keys())}\n"
                f"Transforms order: {transforms}\n"
                f"Using {self._ref_mod} modality as reference.")
        if self._patch_sampler is not None:
            text += f"\nUsing {self._patch_sampler}"
        return text

    # -- initialisation: open, mask, grid ------------------------------------------------------
    def _image_metas(self) -> list[dict[str, dict]]:
        modes = list(self._collections)
        return [dict(zip(modes, items, strict=True))
                for items in zip(*self._collections.values(), strict=False)]

    def _open(self, modality: str, meta: dict, index: int) -> xr.DataArray:
        name = _describe(meta["filename"])
        if not meta["source_axes"]:
            raise AxesError(
                f"modality {modality!r}, image {index} ({name}) has no source_axes; pass "
                "source_axes= naming the stored axes, one letter each (e.g. 'CYX' or 'TCZYX')"
            )
        roi = parse_roi_arg(meta["roi"], meta["source_axes"], name)
        roi_arg = tuple(roi) if any(r != slice(0, None) for r in roi) else None
        group = meta["data_group"]
        group = None if isinstance(group, str) and not group else group
        try:
            return open_image(meta["filename"], axes=meta["source_axes"], data_group=group,
                              roi=roi_arg)
        except ZarrdaskError as exc:
            raise type(exc)(f"modality {modality!r}, image {index} ({name}): {exc}") from exc

    def _target_axes(self, meta: dict) -> str:
        return meta["axes"] or meta["source_axes"]

    def _check_dropped(self, modality: str, meta: dict, arr: xr.DataArray) -> None:
        target = self._target_axes(meta)
        for letter, dim in zip(meta["source_axes"], arr.dims, strict=True):
            if letter not in target and arr.sizes[dim] != 1:
                raise AxesError(
                    f"modality {modality!r} ({_describe(meta['filename'])}): axes={target!r} "
                    f"drops axis {letter!r} of source_axes={meta['source_axes']!r}, which has "
                    f"{arr.sizes[dim]} elements in the region of interest; select one index "
                    f"with roi=..., or keep {letter!r} in axes"
                )

    def _whole(self, modality: str, meta: dict, index: int) -> tuple[np.ndarray, str]:
        """The whole region of interest of one image of a modality, in its
        target axes (after ``image_loader_func`` when there is one); loaded
        once per :meth:`_initialize`."""
        if id(meta) not in self._wholes:
            self._wholes[id(meta)] = self._load_whole(modality, meta, index)
        return self._wholes[id(meta)]

    def _load_whole(self, modality: str, meta: dict, index: int) -> tuple[np.ndarray, str]:
        arr = self._open(modality, meta, index)
        self._check_dropped(modality, meta, arr)
        target = self._target_axes(meta)
        data = AxesStage(list(meta["source_axes"]), target,
                         source=_describe(meta["filename"]))(_compute(arr))
        func = self._image_loader_func.get(modality)
        if func is None:
            return data, target
        letters = getattr(func, "axes", None)
        result = np.asarray(func(data))
        if letters is None:
            if result.ndim != len(target):
                raise AxesError(
                    f"image_loader_func {func!r} of modality {modality!r} has no .axes and "
                    f"returned {result.ndim} dims for axes={target!r}; give it an .axes "
                    "attribute naming the axes it returns"
                )
            letters = target
        letters = check_axes(letters, "image_loader_func.axes", f"modality {modality!r}")
        if result.ndim != len(letters):
            raise AxesError(
                f"image_loader_func {func!r} of modality {modality!r} returned shape "
                f"{result.shape} but declares axes={letters!r}; make them agree"
            )
        return result, letters

    def _mask(self, modality: str, meta: dict, index: int, ref: xr.DataArray) -> xr.DataArray:
        """The mask of one image as a boolean DataArray spanning the
        reference image's region of interest."""
        from ..masks.align import physical_box, spanning_dataarray

        data, letters = self._whole(modality, meta, index)
        flags = data if data.dtype == bool else data != 0
        sdims = [d for d in ref.dims if d in SPATIAL_DIMS]
        mdims = list(dims_from_axes(letters))
        reduce_axes = tuple(i for i, d in enumerate(mdims) if d not in sdims)
        if reduce_axes:
            flags = np.any(flags, axis=reduce_axes)
            mdims = [d for d in mdims if d in sdims]
        for d in sdims:
            if d not in mdims:
                flags = flags[None]
                mdims.insert(0, d)
        flags = np.transpose(flags, [mdims.index(d) for d in sdims])
        if flags.size == 0:
            raise DatasetError(
                f"the mask of image {index} (modality {modality!r}, "
                f"{_describe(meta['filename'])}) is empty; check its roi and axes"
            )
        box = {d: physical_box(ref, d) for d in sdims}
        return spanning_dataarray(dsa.from_array(np.ascontiguousarray(flags)), sdims, ref, box,
                                  name="mask", attrs={"source": f"{modality} of image {index}"})

    def _grid_axes(self, refs: list[xr.DataArray]) -> str:
        sampler = self._patch_sampler
        axes = sampler.spatial_axes
        extra = []
        for ref in refs:
            for d in ref.dims:
                if (d in SPATIAL_DIMS and ref.sizes[d] == 1 and d.upper() not in axes.upper()
                        and d.upper() not in extra):
                    extra.append(d.upper())
        return axes + "".join(extra)

    def _build(self, refs: list[xr.DataArray], masks: list | None, seed: int) -> list[PatchTable]:
        from ..grid.build import build_table

        sampler = self._patch_sampler
        with _fresh_dask_pool():
            if sampler is not None:
                return [build_table(
                    refs, patch_size=dict(sampler._patch_size), stride=dict(sampler._stride),
                    pad=dict(sampler._pad), min_area=sampler._min_area, masks=masks,
                    allow_incomplete_patches=sampler._allow_incomplete_patches,
                    sampler="blue-noise" if isinstance(sampler, BlueNoisePatchSampler) else "grid",
                    seed=seed, spatial_axes=self._grid_axes(refs),
                    allow_overlap=bool(getattr(sampler, "_allow_overlap", False)),
                    progress=self._progress_bar and TQDM_SUPPORT)]
            tables = []
            for ref in refs:
                dims = [d for d in ref.dims if d in SPATIAL_DIMS]
                if not dims:
                    raise DatasetError(
                        f"the image {ref.attrs.get('source')} has no spatial axis (dims "
                        f"{tuple(ref.dims)}); name its Z/Y/X axes in source_axes"
                    )
                tables.append(build_table(
                    [ref], patch_size={d.upper(): int(ref.sizes[d]) for d in dims},
                    spatial_axes="".join(d.upper() for d in dims),
                    progress=self._progress_bar and TQDM_SUPPORT))
            return tables

    def _initialize(self, force=False) -> None:
        """Open the images, compute the masks and the coordinate table, and
        set up the patch reader (once; again with ``force``)."""
        if self._ref_mod is None:
            raise DatasetError(
                "No image modalities have been added to the dataset; use add_modality(...) (or "
                "pass dataset_specs) to add at least one before iterating"
            )
        seed = self._blue_noise_seed()
        if self._initialized and not force and seed == self._built_seed:
            return
        metas = self._image_metas()
        if not metas:
            raise DatasetError("the dataset has no images: every modality needs filenames")
        for key, _ in self._transforms:
            missing = [m for m in key if m not in self._collections]
            if missing:
                raise DatasetError(
                    f"a transform is registered for {key} but the dataset has no modality "
                    f"{missing}; add it with add_modality(...) or fix the transform's key"
                )
        ref_mod = self._ref_mod
        self._wholes = {}
        refs = []
        for i, meta in enumerate(metas):
            ref = self._open(ref_mod, meta[ref_mod], i)
            self._check_dropped(ref_mod, meta[ref_mod], ref)
            refs.append(ref)
        mask_mod = next((m for m in self._collections if "mask" in m), None)
        masks = None
        if mask_mod is not None and self._patch_sampler is not None:
            masks = [self._mask(mask_mod, meta[mask_mod], i, ref)
                     for i, (meta, ref) in enumerate(zip(metas, refs, strict=True))]
        tables = self._build(refs, masks, seed)
        read = list(self._output_order)
        for key, _ in self._transforms:
            read.extend(m for m in key if m not in read)
        if ref_mod not in read:
            read.insert(0, ref_mod)
        internal = {ref_mod: _REF}
        for k, m in enumerate(m for m in self._collections if m != ref_mod):
            internal[m] = f"m{k}"
        self._internal = internal
        self._datasets = []
        self._positions_info = []
        self._toplefts = []
        for t, table in enumerate(tables):
            image_ids = range(len(metas)) if len(tables) == 1 else [t]
            dataset, table = self._dataset(table, [metas[i] for i in image_ids],
                                           [refs[i] for i in image_ids], read)
            self._datasets.append((t, dataset))
            self._table = table
            for j, i in enumerate(image_ids):
                self._positions_info.append(self._position_info(table, j, metas[i][ref_mod]))
                self._toplefts.append(self._image_toplefts(table, j))
        self._wholes = {}
        self._arr_lists = metas
        self._built_seed = seed
        self._initialized = True

    def _distributed(self) -> tuple[int, int]:
        """DDP rank and world size: from the process group, as captured when
        pickled to a spawned worker, or from ``RANK``/``WORLD_SIZE`` (as
        :class:`~zarrdask.PatchDataset` reads them)."""
        found = _torch_distributed() or self._captured_dist
        if found is not None:
            return found
        try:
            return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        except (KeyError, ValueError):
            return 0, 1

    def _definition_seed(self) -> int:
        """A seed that depends only on what the dataset reads and how: the
        same on every DDP rank."""
        from ..grid.sources import digest

        sampler = self._patch_sampler
        definition = {
            "collections": {m: [{k: (v if isinstance(v, str | int | float | None) else repr(v))
                                 for k, v in meta.items()} for meta in metas]
                            for m, metas in self._collections.items()},
            "sampler": None if sampler is None else [type(sampler).__name__, sampler._patch_size,
                                                     sampler._stride, sampler._pad,
                                                     sampler._min_area],
        }
        return int(digest(definition)[:8], 16) % (2**31 - 1)

    def _shuffle_seed(self) -> int:
        return self._definition_seed() if self._distributed()[1] > 1 else self._seed

    def _blue_noise_seed(self) -> int:
        sampler = self._patch_sampler
        if not isinstance(sampler, BlueNoisePatchSampler):
            return 0
        base = self._definition_seed() if self._distributed()[1] > 1 else sampler._seed
        offset = self._iterations if sampler._resample_positions else 0
        return (base + 1_000_003 * offset) % (2**31 - 1)

    def _dataset(self, table: PatchTable, metas: list[dict], refs: list[xr.DataArray],
                 read: list[str]) -> tuple[CompatPatchDataset, PatchTable]:
        """The PatchDataset reading ``read`` modalities of the table's images."""
        ref_mod = self._ref_mod
        dims = table.dims
        meta_all = dict(table.meta)
        images = meta_all["images"]
        modalities: dict[str, list] = {_REF: images}
        sources: dict[str, list] = {_REF: list(table.sources)}
        stages: list[tuple[tuple[str, ...], Callable]] = []
        ref_stage = self._ref_stage(metas[0][ref_mod], images[0], dims)
        stages.append(((_REF,), ref_stage))
        for m in read:
            if m == ref_mod:
                continue
            name = self._internal[m]
            entries, objs, stage = [], [], None
            for i, (meta, ref) in enumerate(zip(metas, refs, strict=True)):
                entry, obj, this_stage = self._modality_entry(m, meta[m], i, ref, images[i], dims,
                                                              table)
                entries.append(entry)
                objs.append(obj)
                stage = stage or this_stage
            modalities[name] = entries
            sources[name] = objs
            stages.append(((name,), stage))
        meta_all["modalities"] = modalities
        table = PatchTable(table.frame, meta_all, sources=table.sources)
        transforms = list(stages)
        for key, funcs in self._transforms:
            transforms.append((tuple(self._internal[m] for m in key),
                               _TransformChain(funcs, len(key))))
        try:
            from ._patch_reader import CompatPatchDataset
        except ImportError as exc:
            raise DatasetError(
                f"ZarrDataset reads patches through zarrdask.PatchDataset, which needs torch "
                f"({exc}); install torch (pip install torch)"
            ) from exc
        dataset = CompatPatchDataset(
            table, modalities=[self._internal[m] for m in read], transforms=transforms,
            shuffle=self._shuffle, seed=self._shuffle_seed(), chunk_buffer=1 if self._draw_same_chunk else 16,
            sources=sources)
        return dataset, table

    def _ref_stage(self, meta: dict, entry: dict, dims: list[str]) -> Callable:
        stage: Callable = AxesStage(list(meta["source_axes"]), self._target_axes(meta),
                                    _roi_select(entry, dims), source=_describe(meta["filename"]))
        func = self._image_loader_func.get(self._ref_mod)
        if func is not None:
            stage = _Then(stage, func)
        return stage

    def _modality_entry(self, modality: str, meta: dict, index: int, ref: xr.DataArray,
                        ref_entry: dict, dims: list[str], table: PatchTable
                        ) -> tuple[dict, Any, Callable]:
        """Table entry, in-memory object and axes stage of one image of a
        non-reference modality, placed so that its region of interest spans
        the reference's."""
        name = f"{modality} of image {index} ({_describe(meta['filename'])})"
        func = self._image_loader_func.get(modality)
        if func is not None:
            data, letters = self._whole(modality, meta, index)
            mdims = list(dims_from_axes(letters, data.ndim, source=name))
            shape = dict(zip(mdims, data.shape, strict=True))
            base: dict[str, Any] = {"name": name, "dims": mdims, "shape": shape,
                                    "chunks": dict(shape), "dtype": str(data.dtype), "roi": {}}
            obj: Any = data
            target = letters
        else:
            arr = self._open(modality, meta, index)
            self._check_dropped(modality, meta, arr)
            letters = meta["source_axes"]
            target = self._target_axes(meta)
            mdims = [str(d) for d in arr.dims]
            if not any(d in dims for d in mdims):
                data = AxesStage(list(letters), target, source=name)(_compute(arr))
                return {"weak": data.tolist()}, None, _WeakValue(data.dtype)
            base = source_entry(arr, image_id=index)
            base["name"] = name
            recipe = recipe_of(arr)
            obj = None
            if recipe is None or recipe.location is None:
                obj = recipe.obj if recipe is not None and recipe.obj is not None else arr.data
        if not any(d in dims for d in mdims):
            return {"weak": np.asarray(obj).tolist()}, None, _WeakValue(np.asarray(obj).dtype)
        missing = [d for d in dims if d not in mdims]
        if missing:
            if obj is None:
                recipe = recipe_of(arr)
                obj = LazyArray(recipe, [base["shape"][d] for d in mdims], base["dtype"],
                                tuple(base["chunks"][d] for d in mdims))
            obj = _InsertAxes(obj, len(missing))
            base["shape"] = {**{d: 1 for d in missing}, **base["shape"]}
            base["chunks"] = {**{d: 1 for d in missing}, **base["chunks"]}
            base["dims"] = missing + mdims
        scale, origin = {}, {}
        patch, pad = table.patch_size, table.pad
        roi_ref = ref_entry.get("roi") or {}
        for d in dims:
            s_ref = float(ref_entry["scale"][d])
            start_ref = (roi_ref.get(d) or [0])[0]
            length_ref = int(ref.sizes[d])
            o_ref = float(ref_entry["origin"][d]) + start_ref * s_ref
            if d in missing:
                scale[d] = 4.0 * (length_ref + 2 * pad.get(d, 0) + patch.get(d, 1)) * s_ref
                origin[d] = o_ref
                continue
            lo, hi = (base["roi"].get(d) or [0, base["shape"][d]])
            scale[d] = s_ref * length_ref / (hi - lo)
            origin[d] = o_ref - lo * scale[d]
            if scale[d] != s_ref:
                # zarrdataset starts a box at the pixel holding the patch's first
                # pixel (floor); PatchDataset rounds half up, so move the origin
                # by just under half a pixel to make that rounding a floor.
                origin[d] += (0.5 - 1e-6) * scale[d]
        entry = dict(base, scale=scale, origin=origin)
        in_letters = ["#" + d for d in missing] + list(letters)
        stage = AxesStage(in_letters, target, _roi_select(entry, dims), source=name)
        return entry, obj, stage

    def _position_info(self, table: PatchTable, image_id: int, meta: dict
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """What turns a sample's read-level ``position`` into zarrdataset's
        positions: a base array, the rows and columns to fill from the
        position, and the offsets to add."""
        letters = self._target_axes(meta)
        base = np.tile(np.array([0, -1], dtype=np.int64), (len(letters), 1))
        rows, cols, offsets = [], [], []
        if self._patch_sampler is None:
            return base, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 2), np.int64)
        dims = table.dims
        entry = table.images[image_id]
        source = dict(zip(meta["source_axes"], dims_from_axes(meta["source_axes"]), strict=True))
        spatial = self._patch_sampler.spatial_axes
        for r, letter in enumerate(letters):
            d = source.get(letter)
            if d is not None and d in dims:
                if letter not in spatial:
                    continue
                roi0 = (entry.get("roi", {}).get(d) or [0])[0]
                p = int(table.pad.get(d, 0))
                rows.append(r)
                cols.append(dims.index(d))
                offsets.append([-roi0 - p, -roi0 + p])
            elif letter in spatial:
                base[r] = [0, 1]
        return (base, np.asarray(rows, np.int64), np.asarray(cols, np.int64),
                np.asarray(offsets, np.int64).reshape(-1, 2))

    def _image_toplefts(self, table: PatchTable, image_id: int) -> np.ndarray:
        frame = table.frame
        rows = frame["image_id"].to_numpy() == image_id
        positions = frame.loc[rows, position_columns(table.dims)].to_numpy(dtype=np.int64)
        entry = table.images[image_id]
        starts = read_level_starts(positions, entry, table.dims)
        roi = entry.get("roi") or {}
        return starts - np.array([(roi.get(d) or [0])[0] for d in table.dims], dtype=np.int64)

    # -- reading --------------------------------------------------------------------------------
    def __getitem__(self, tlbr):
        """Read the region ``tlbr`` (a slice per axis letter of the reference,
        relative to its region of interest, e.g. from
        :meth:`PatchSampler.compute_patches`) of the current image (the first
        one until iteration starts), through the transforms.

        Returns
        -------
        list of numpy.ndarray
            One array per output modality, in output order.
        """
        from .imageloaders import ImageCollection

        self._initialize()
        if self._curr_collection is None:
            meta = self._arr_lists[0]
            args = {}
            for m, item in meta.items():
                args[m] = {
                    "filename": item["filename"], "source_axes": item["source_axes"],
                    "data_group": item["data_group"] or None, "axes": item["axes"],
                    "roi": item["roi"], "zarr_store": self._zarr_store.get(m),
                    "image_func": None if m == self._ref_mod else self._image_loader_func.get(m),
                }
            spatial = self._patch_sampler.spatial_axes if self._patch_sampler else "ZYX"
            self._curr_collection = ImageCollection(args, spatial_axes=spatial)
        patches = self._curr_collection[tlbr if tlbr is not None else slice(None)]
        func = self._image_loader_func.get(self._ref_mod)
        if func is not None:
            patches[self._ref_mod] = func(patches[self._ref_mod])
        for key, funcs in self._transforms:
            res = _TransformChain(funcs, len(key))(*(patches[m] for m in key))
            for m, value in zip(key, (res,) if len(key) == 1 else res, strict=True):
                patches[m] = value
        return [patches[m] for m in self._output_order]

    def __iter__(self) -> Iterator[Any]:
        """Yield the samples of this reader's share of the epoch."""
        self._initialize()
        info = _worker_info()
        worker_id = int(info.id) if info is not None else int(self._worker_id)
        rank, world = self._distributed()
        epoch = self._epoch if self._epoch is not None else self._iterations
        seed = self._shuffle_seed()
        if info is not None and self._epoch is None and world == 1:
            seed = (seed + int(info.seed) - int(info.id)) % (2**31 - 1)
        self._iterations += 1
        whole = self._whole_datasets_per_worker and info is not None
        if self._patch_sampler is not None:
            _, dataset = self._datasets[0]
            yield from self._read(dataset, None, whole, seed, epoch, worker_id)
            return
        readers = world * (1 if whole or info is None else int(info.num_workers))
        me = rank * (1 if whole or info is None else int(info.num_workers)) + (
            0 if whole or info is None else int(info.id))
        order = np.arange(len(self._datasets))
        if self._shuffle:
            order = np.random.default_rng([seed, epoch]).permutation(len(self._datasets))
        for k in order[me::readers]:
            image_id, dataset = self._datasets[int(k)]
            dataset._rank_override = (0, 1)
            yield from self._read(dataset, image_id, True, seed, epoch, worker_id)

    def _read(self, dataset: CompatPatchDataset, image_id: int | None, whole: bool, seed: int,
              epoch: int, worker_id: int) -> Iterator[Any]:
        dataset._worker_override = (0, 1) if whole else None
        dataset.seed = seed
        dataset.set_epoch(epoch)
        internal = [self._internal[m] for m in self._output_order]
        wid = np.array(worker_id, dtype=np.int64)
        for sample in dataset:
            out: list[Any] = []
            if self._return_worker_id:
                out.append(wid.copy())
            if self._return_positions:
                out.append(self._positions(sample, image_id))
            out.extend(sample[name] for name in internal)
            yield tuple(out) if len(out) > 1 else out[0]

    def _positions(self, sample: dict, image_id: int | None) -> np.ndarray:
        i = int(sample["image_id"]) if image_id is None else image_id
        base, rows, cols, offsets = self._positions_info[i]
        out = base.copy()
        if len(rows):
            out[rows] = sample["position"][cols] + offsets
        return out

    # -- pickling: workers reopen their own handles -------------------------------------------
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_curr_collection"] = None
        dist = _torch_distributed()
        if dist is not None:
            state["_captured_dist"] = dist
        return state


def _warn_overrides(sampler: PatchSampler) -> None:
    base = BlueNoisePatchSampler if isinstance(sampler, BlueNoisePatchSampler) else PatchSampler
    names = ("_compute_grid", "_compute_valid_toplefts", "compute_patches", "compute_chunks",
             "_compute_toplefts_slices")
    overridden = [n for n in names
                  if inspect.getattr_static(type(sampler), n, None)
                  is not inspect.getattr_static(base, n, None)]
    if overridden:
        warnings.warn(
            f"{type(sampler).__name__} overrides {overridden}; ZarrDataset computes its grid with "
            "zarrdask.grid.build.build_table from the sampler's parameters and does not call "
            "those methods (they still work on an ImageCollection)",
            UserWarning, stacklevel=3,
        )


def _seed_generators() -> None:
    if torch is None:
        return
    seed = torch.initial_seed()
    random.seed(seed)
    np.random.seed(seed % (2**32 - 1))  # noqa: NPY002 - zarrdataset seeds the global state


def _seeded_worker_info():
    """The DataLoader worker's info after seeding its generators; None outside workers."""
    info = _worker_info()
    if info is not None:
        _seed_generators()
    return info


def zarrdataset_worker_init_fn(worker_id):
    """ZarrDataset multithread workers initialization function.

    Seeds Python's and numpy's random generators from the worker's torch
    seed and records the worker in the dataset (``_worker_id``,
    ``_num_workers``, ``_worker_sel``). Optional with zarrdask: the workers
    share the patches exactly once without it.

    Parameters
    ----------
    worker_id : int
        Given by the DataLoader.
    """
    info = _seeded_worker_info()
    if info is None:
        return
    dataset = info.dataset
    if isinstance(dataset, ZarrDataset):
        dataset._worker_sel = slice(worker_id, None, info.num_workers)
        dataset._worker_id = worker_id
        dataset._num_workers = info.num_workers


def chained_zarrdataset_worker_init_fn(worker_id):
    """ZarrDataset multithread workers initialization function for PyTorch's
    ChainedDatasets.

    Worker ``w`` of ``W`` keeps the datasets ``w, w + W, ...`` of the chain
    and reads each of them whole (its share among DDP ranks); the others are
    read by the other workers.

    Parameters
    ----------
    worker_id : int
        Given by the DataLoader.
    """
    info = _seeded_worker_info()
    if info is None:
        return
    chain = info.dataset
    datasets = list(getattr(chain, "datasets", []))
    chain.datasets = datasets[worker_id::info.num_workers]
    for dataset in chain.datasets:
        if isinstance(dataset, ZarrDataset):
            dataset._worker_id = worker_id
            dataset._num_workers = 1
            dataset._whole_datasets_per_worker = True
