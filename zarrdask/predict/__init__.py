"""Predictions back into OME-NGFF: blend patch predictions over a coordinate
table and write one OME-NGFF 0.5 image (with its pyramid) per input slide.

* :mod:`.windows` — blending weights (mean, Gaussian, cosine, max);
* :mod:`.plan` — the output pixel grid of each image and its chunks;
* :mod:`.accumulate` — per-chunk accumulation, deterministic combination;
* :mod:`.ngff` — the zarr v3 group, codecs, multiscales and pyramid;
* :mod:`.writer` — :class:`PredictionWriter`, the one object users touch.
"""

from .errors import PredictionError
from .plan import OutputGeometry
from .windows import BLEND_MODES, blend_window
from .writer import PredictionWriter

__all__ = ["PredictionWriter", "PredictionError", "OutputGeometry", "blend_window", "BLEND_MODES"]
