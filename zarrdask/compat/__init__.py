"""zarrdataset's public names, as thin layers over zarrdask's engine.

``import zarrdask as zds`` runs zarrdataset 0.2.2 code: the samplers
(:class:`PatchSampler`, :class:`BlueNoisePatchSampler`), image loaders
(:class:`ImageBase`, :class:`ImageLoader`, :class:`ImageCollection`,
:func:`image2array`), dataset specs, :class:`ToDtype`, ``ZarrDataset`` and
its worker init functions, and the mask generators of :mod:`zarrdask.masks`.
The differences from zarrdataset 0.2.2 are listed in ``docs/differences.md``.

``ZarrDataset``, ``zarrdataset_worker_init_fn`` and
``chained_zarrdataset_worker_init_fn`` need torch and load on first use
(:mod:`zarrdask.compat.zarrdataset`); the rest does not import torch.
"""

from typing import Any

from ..masks.generators import MaskGenerator, WSITissueMaskGenerator
from ._sources import image2array
from .augs import ToDtype
from .imageloaders import ImageBase, ImageCollection, ImageLoader
from .samplers import BlueNoisePatchSampler, PatchSampler
from .specs import DatasetSpecs, ImagesDatasetSpecs, LabelsDatasetSpecs, MasksDatasetSpecs

#: Names served by :mod:`zarrdask.compat.zarrdataset` (imports torch).
TORCH_NAMES = ("ZarrDataset", "zarrdataset_worker_init_fn", "chained_zarrdataset_worker_init_fn")

__all__ = [
    "PatchSampler",
    "BlueNoisePatchSampler",
    "MaskGenerator",
    "WSITissueMaskGenerator",
    "ImageBase",
    "ImageLoader",
    "ImageCollection",
    "image2array",
    "ToDtype",
    "DatasetSpecs",
    "ImagesDatasetSpecs",
    "LabelsDatasetSpecs",
    "MasksDatasetSpecs",
    *TORCH_NAMES,
]


def __getattr__(name: str) -> Any:
    if name in TORCH_NAMES:
        from . import zarrdataset

        return getattr(zarrdataset, name)
    raise AttributeError(f"module 'zarrdask.compat' has no attribute {name!r}")
