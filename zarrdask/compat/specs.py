"""zarrdataset's dataset specifications: dicts of :meth:`ZarrDataset.add_modality`
arguments.

Each spec is a ``dict`` with the keys ``modality``, ``filenames``,
``source_axes``, ``axes``, ``data_group``, ``roi``, ``image_loader_func``,
``zarr_store``, ``transforms`` and ``add_to_output``, so
``ZarrDataset([spec, ...])`` and ``dataset.add_modality(**spec)`` take it as
it is. ``transforms`` is a list of ``(modalities, [callables])`` pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import zarr

from ..errors import DatasetError

__all__ = ["DatasetSpecs", "ImagesDatasetSpecs", "LabelsDatasetSpecs", "MasksDatasetSpecs"]

Filenames = (str | Iterable[str] | zarr.Group | Iterable[zarr.Group] | zarr.Array
             | Iterable[zarr.Array] | np.ndarray | Iterable[np.ndarray])


def _as_list(transform: Any) -> list[Callable]:
    """One transform or a list/tuple of them, as a list of callables."""
    items = list(transform) if isinstance(transform, list | tuple) else [transform]
    bad = [t for t in items if not callable(t)]
    if bad:
        raise DatasetError(
            f"transform {bad[0]!r} is not callable; pass a function (or a list of functions) "
            "that takes and returns arrays"
        )
    return items


class DatasetSpecs(dict):
    """Data specification guidelines to add image modalities to a ZarrDataset.

    Parameters
    ----------
    modality : str
        Specifies the use of this dataset (input image data, labels, masks).
    filenames : str, zarr.Group, zarr.Array, numpy.ndarray, or a list or tuple of them
        The input source either specified by a path/url to a file or a
        supported array-like object, or list of them.
    source_axes : str
        The original array axes ordering.
    axes : str, optional
        The axes ordering as it being used from the array (may involve
        permuting, dropping unused axes, and creating new axes).
    data_group : str or int, optional
        The group for zarr images, or key for tiff files.
    roi : str, slice or iterable of slice, optional
        Regions of interest from the input array that can be used for data
        sampling.
    image_loader_func : callable, optional
        A transformation applied to the input array before sampling (e.g. a
        mask generator such as :class:`~zarrdask.WSITissueMaskGenerator`).
        This is not a data augmentation transform; use ``transform`` for that.
    zarr_store : object, optional
        Accepted for compatibility; zarr 3 picks the store from the location.
    transform : callable or list of callables, optional
        Applied to this modality's arrays after sampling (data augmentation).
    add_to_output : bool
        Whether this modality is part of each sample (labels usually are,
        masks usually are not).

    Examples
    --------
    >>> spec = DatasetSpecs("images", "slide.zarr", "CYX", data_group="0")
    >>> spec["modality"], spec["data_group"], spec["transforms"]
    ('images', '0', [])
    """

    def __init__(self, modality: str, filenames: Filenames, source_axes: str,
                 axes: str | None = None, data_group: str | int | None = None,
                 roi: str | slice | Iterable[slice] | None = None,
                 image_loader_func: Callable | None = None, zarr_store: Any = None,
                 transform: Callable | None = None, add_to_output: bool = True) -> None:
        super().__init__()
        if not isinstance(modality, str) or not modality:
            raise DatasetError(f"modality={modality!r} must be a non-empty string such as 'images'")
        self["modality"] = modality
        self["filenames"] = filenames
        self["source_axes"] = source_axes
        self["axes"] = axes
        self["data_group"] = data_group
        self["roi"] = roi
        self["image_loader_func"] = image_loader_func
        self["zarr_store"] = zarr_store
        self["transforms"] = []
        self["add_to_output"] = add_to_output
        if transform is not None:
            self["transforms"].append(((modality,), _as_list(transform)))


class ImagesDatasetSpecs(DatasetSpecs):
    """Specification to add `image` data to a ZarrDataset.

    Parameters are those of :class:`DatasetSpecs` (``add_to_output`` is
    always True); ``modality`` defaults to ``"images"``.
    """

    def __init__(self, filenames: Filenames, source_axes: str, axes: str | None = None,
                 data_group: str | int | None = None,
                 roi: str | slice | Iterable[slice] | None = None,
                 image_loader_func: Callable | None = None, zarr_store: Any = None,
                 transform: Callable | None = None, modality: str = "images") -> None:
        super().__init__(modality, filenames, source_axes, axes, data_group, roi,
                         image_loader_func, zarr_store, transform, add_to_output=True)


class LabelsDatasetSpecs(DatasetSpecs):
    """Specification to add `labels` to a ZarrDataset.

    Parameters are those of :class:`DatasetSpecs` (``add_to_output`` is
    always True), and:

    input_label_transform : callable or list of callables, optional
        A transform that receives the input image and the labels of a sample
        and returns both (registered for ``(input_mode, modality)``, after
        ``transform``).
    input_mode : str
        The modality given with the labels to ``input_label_transform``.
    modality : str
        Defaults to ``"labels"``.
    """

    def __init__(self, filenames: Filenames, source_axes: str, axes: str | None = None,
                 data_group: str | int | None = None,
                 roi: str | slice | Iterable[slice] | None = None,
                 image_loader_func: Callable | None = None, zarr_store: Any = None,
                 transform: Callable | None = None,
                 input_label_transform: Callable | None = None, input_mode: str = "images",
                 modality: str = "labels") -> None:
        super().__init__(modality, filenames, source_axes, axes, data_group, roi,
                         image_loader_func, zarr_store, transform, add_to_output=True)
        if input_label_transform is not None:
            self["transforms"].append(((input_mode, modality), _as_list(input_label_transform)))


class MasksDatasetSpecs(DatasetSpecs):
    """Specification to add `masks` to a ZarrDataset.

    A mask selects where patches are taken from; it is not part of the
    samples (``add_to_output`` is False). Parameters are those of
    :class:`DatasetSpecs` without ``transform``; ``modality`` defaults to
    ``"masks"`` (any modality whose name contains ``"mask"`` is a mask).
    """

    def __init__(self, filenames: Filenames, source_axes: str, axes: str | None = None,
                 data_group: str | int | None = None,
                 roi: str | slice | Iterable[slice] | None = None,
                 image_loader_func: Callable | None = None, zarr_store: Any = None,
                 modality: str = "masks") -> None:
        super().__init__(modality, filenames, source_axes, axes, data_group, roi,
                         image_loader_func, zarr_store, None, add_to_output=False)
