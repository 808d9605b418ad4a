"""zarrdataset-compatible mask generators (numpy in, numpy out).

They run the same core as :func:`zarrdask.masks.tissue_mask` (grey level,
area-averaging resample, threshold, morphology) on an in-memory array.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .tissue import grey, resample_area, tissue_from_grey

__all__ = ["MaskGenerator", "WSITissueMaskGenerator"]


class MaskGenerator:
    """Base class of functions that turn an image into a mask.

    Parameters
    ----------
    axes : str
        Axes of the mask the generator returns (e.g. ``"YX"``).

    Attributes
    ----------
    axes : str
    """

    #: Mask functions receive the image channels last (zarrdataset's
    #: convention); :mod:`zarrdask.masks.align` reads this flag.
    channels_last = True

    def __init__(self, axes: str) -> None:
        self.axes = axes

    def _compute_transform(self, image: np.ndarray) -> np.ndarray:
        """Compute the mask of ``image``; subclasses implement it."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement _compute_transform(image) -> mask"
        )

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Return the mask of ``image`` (see :meth:`_compute_transform`)."""
        return self._compute_transform(image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(axes={self.axes!r})"


class WSITissueMaskGenerator(MaskGenerator):
    """Mask of the tissue (pixels darker than the white background) of a WSI.

    Parameters
    ----------
    mask_scale : float
        Mask pixels per image pixel: the mask has
        ``round(shape * mask_scale)`` pixels along Y and X.
    min_size : int
        Tissue objects smaller than this many mask pixels are removed.
    area_threshold : int
        Background holes inside tissue smaller than this many mask pixels are
        filled.
    thresh : float, optional
        Grey-level threshold in the image's intensity units; default: Otsu's
        threshold, computed anew for every image.
    axes : str
        Axes of the returned mask: ``"YX"``, or with a ``"Z"`` (e.g.
        ``"ZYX"``) for a mask with a leading length-1 Z axis.

    Attributes
    ----------
    _mask_scale : float
    _min_size : int
    _area_threshold_2 : int
        The hole area, in mask pixels, that :meth:`_compute_transform` fills
        below (``area_threshold``; zarrdataset 0.2.2 stored and used
        ``area_threshold ** 2``).
    _thresh : float or None
        The threshold given (None: Otsu per image).
    threshold_ : float or None
        The threshold used by the last call.

    Notes
    -----
    Differences from zarrdataset 0.2.2: the mask is True on tissue (0.2.2
    returned the background), the Otsu threshold is computed for each image
    (0.2.2 kept the first image's for every later one), the image is reduced
    by area averaging (0.2.2 took nearest pixels), ``thresh`` is in the
    image's intensity units (0.2.2: those of ``rgb2gray``, 0..1 for integer
    images), ``min_size`` and ``area_threshold`` are areas in mask pixels
    (0.2.2 squared them) and no erosion/dilation follows. See
    ``docs/masks.md``.
    """

    def __init__(self, mask_scale: float = 1 / 16, min_size: int = 16,
                 area_threshold: int = 128, thresh: float | None = None,
                 axes: str = "YX") -> None:
        super().__init__(axes=axes)
        self._mask_scale = mask_scale
        self._min_size = min_size
        self._area_threshold_2 = area_threshold
        self._thresh = thresh
        self.threshold_: float | None = None

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(mask_scale={self._mask_scale!r}, "
                f"min_size={self._min_size!r}, area_threshold={self._area_threshold_2!r}, "
                f"thresh={self._thresh!r}, axes={self.axes!r})")

    def _compute_transform(self, image: Any) -> np.ndarray:
        """Tissue mask of one image.

        Parameters
        ----------
        image : numpy.ndarray
            ``YXC`` (channels last: RGB, RGBA or any count) or ``YX``.

        Returns
        -------
        numpy.ndarray
            bool, ``round(Y * mask_scale) x round(X * mask_scale)`` (with a
            leading length-1 axis when ``axes`` has a Z), True on tissue.
        """
        image = np.asarray(image)
        if image.ndim not in (2, 3):
            raise ValueError(
                f"{type(self).__name__} takes a YX or YXC image; got shape {image.shape}. "
                "Select one plane (and put the channels last) first"
            )
        grey_image = grey(image, channel_axis=-1 if image.ndim == 3 else None)
        shape = [max(1, round(n * self._mask_scale)) for n in grey_image.shape]
        small = resample_area(grey_image, shape)
        mask, threshold = tissue_from_grey(small, thresh=self._thresh, min_size=self._min_size,
                                           area_threshold=self._area_threshold_2)
        self.threshold_ = threshold
        if "Z" in self.axes.upper():
            mask = mask[None, ...]
        return mask
