"""Masks: tissue detection and alignment of masks and labels with images.

Every mask is a lazy boolean ``xarray.DataArray`` with the image's spatial
dims and coordinates in the image's physical space; see
:mod:`zarrdask.masks.align` for the alignment rule and ``docs/masks.md``.
"""

from .align import (
    as_mask,
    default_mask,
    mask_from_labels,
    mask_is_empty,
    mask_origin,
    mask_scale_factors,
    mask_scale_of,
)
from .generators import MaskGenerator, WSITissueMaskGenerator
from .tissue import tissue_mask, tissue_threshold

__all__ = [
    "tissue_mask",
    "tissue_threshold",
    "as_mask",
    "mask_from_labels",
    "mask_scale_factors",
    "mask_scale_of",
    "mask_origin",
    "default_mask",
    "mask_is_empty",
    "MaskGenerator",
    "WSITissueMaskGenerator",
]
