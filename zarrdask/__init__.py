"""zarrdask: patch datasets for deep learning from very large images.

Images open as labelled dask arrays (:func:`open_image`), masks and patch
grids are computed as dask graphs into a coordinate table, and a torch
``IterableDataset`` streams patches from that table.
"""

from .axes import map_axes_order, select_axes
from .errors import (
    AxesError,
    CorruptChunkError,
    DataGroupError,
    RemoteAccessError,
    RoiError,
    SourceNotFoundError,
    UnsupportedFormatError,
    ZarrdaskError,
)
from .io import connect_s3, isconsolidated, open_image, open_pyramid
from .roi import parse_metadata, parse_rois, scale_coords, translate2roi

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "open_image",
    "open_pyramid",
    "parse_metadata",
    "parse_rois",
    "map_axes_order",
    "select_axes",
    "scale_coords",
    "translate2roi",
    "isconsolidated",
    "connect_s3",
    "ZarrdaskError",
    "SourceNotFoundError",
    "UnsupportedFormatError",
    "AxesError",
    "DataGroupError",
    "RoiError",
    "RemoteAccessError",
    "CorruptChunkError",
]
