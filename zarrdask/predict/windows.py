"""Blending windows: the weight each pixel of a patch's prediction gets where
patches overlap.

``mean`` weighs every pixel 1 (overlaps are averaged), ``gaussian`` and
``cosine`` weigh the centre of a patch more than its border, as MONAI's
``SlidingWindowInferer`` and TorchIO's ``GridAggregator`` do; ``max`` keeps the
largest value (for masks) and needs no weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from .errors import PredictionError

__all__ = ["BLEND_MODES", "blend_window", "check_blend"]

BLEND_MODES = ("mean", "gaussian", "cosine", "max")
GAUSSIAN_SIGMA = 0.125  # sigma as a fraction of the window's side (MONAI's default)


def check_blend(blend: str) -> str:
    """``blend`` if it is one of :data:`BLEND_MODES`, else a :class:`PredictionError`."""
    if blend not in BLEND_MODES:
        raise PredictionError(f"blend={blend!r} is not a blending mode; use one of {BLEND_MODES}")
    return blend


def _profile(n: int, blend: str) -> np.ndarray:
    centres = np.arange(n, dtype=np.float64) + 0.5  # pixel centres, in pixels from the edge
    if blend == "gaussian":
        sigma = GAUSSIAN_SIGMA * n
        return np.exp(-((centres - n / 2.0) ** 2) / (2.0 * sigma * sigma))
    if blend == "cosine":
        return np.sin(np.pi * centres / n) ** 2
    return np.ones(n, dtype=np.float64)


@lru_cache(maxsize=64)
def _window(shape: tuple[int, ...], blend: str) -> np.ndarray:
    out = np.ones((), dtype=np.float64)
    for n in shape:
        out = np.multiply.outer(out, _profile(n, blend))
    out = out / out.max() if out.size else out
    out.setflags(write=False)
    return out


def blend_window(shape: Sequence[int], blend: str) -> np.ndarray:
    """The float64 weights of a patch's prediction of ``shape`` (spatial dims).

    Parameters
    ----------
    shape : sequence of int
        Spatial size of the (cropped) prediction, outermost dim first.
    blend : {"mean", "gaussian", "cosine", "max"}
        ``mean`` and ``max``: all ones. ``gaussian``: a separable Gaussian of
        sigma ``0.125 * side`` centred on the patch. ``cosine``: a separable
        squared sine (Hann) window. Both are evaluated at pixel centres, so
        they are strictly positive, and scaled to a maximum of 1.

    Returns
    -------
    numpy.ndarray
        Read-only, of ``shape``.
    """
    return _window(tuple(int(n) for n in shape), check_blend(blend))
