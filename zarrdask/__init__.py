"""zarrdask: patch datasets for deep learning from very large images.

Images open as labelled dask arrays (:func:`open_image`), masks and patch
grids are computed as dask graphs into a coordinate table, and a torch
``IterableDataset`` streams patches from that table.
"""

from ._version import __version__
from .axes import map_axes_order, select_axes
from .compat import TORCH_NAMES as _TORCH_COMPAT_NAMES
from .compat import (
    BlueNoisePatchSampler,
    DatasetSpecs,
    ImageBase,
    ImageCollection,
    ImageLoader,
    ImagesDatasetSpecs,
    LabelsDatasetSpecs,
    MasksDatasetSpecs,
    PatchSampler,
    ToDtype,
    image2array,
)
from .errors import (
    AxesError,
    CorruptChunkError,
    DataGroupError,
    DatasetError,
    GridParameterError,
    MaskError,
    OptionError,
    RemoteAccessError,
    RoiError,
    SourceNotFoundError,
    TableError,
    TableWriteError,
    UnsupportedFormatError,
    ZarrdaskError,
)
from .grid.build import GridWarning, build_table
from .grid.cohort import build_cohort
from .grid.options import GridOptions
from .image_labels import join_image_labels
from .io import connect_s3, isconsolidated, open_image, open_pyramid
from .masks import (
    Annotations,
    AnnotationWarning,
    MaskGenerator,
    WSITissueMaskGenerator,
    as_mask,
    mask_from_labels,
    tissue_mask,
)
from .roi import parse_metadata, parse_rois, scale_coords, translate2roi
from .table import PatchTable, read_table

__all__ = [
    "__version__",
    "open_image",
    "open_pyramid",
    "tissue_mask",
    "as_mask",
    "mask_from_labels",
    "Annotations",
    "AnnotationWarning",
    "build_table",
    "build_cohort",
    "GridOptions",
    "read_table",
    "PatchTable",
    "join_image_labels",
    "PatchDataset",
    "PredictionWriter",
    "PredictionError",
    "PatchLoader",
    "GridWarning",
    "MaskGenerator",
    "WSITissueMaskGenerator",
    "image2array",
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
    "GridParameterError",
    "MaskError",
    "TableError",
    "TableWriteError",
    "DatasetError",
    "OptionError",
    # zarrdataset 0.2.2 compatibility layer (docs/differences.md)
    "PatchSampler",
    "BlueNoisePatchSampler",
    "ImageBase",
    "ImageLoader",
    "ImageCollection",
    "ToDtype",
    "DatasetSpecs",
    "ImagesDatasetSpecs",
    "LabelsDatasetSpecs",
    "MasksDatasetSpecs",
    "ZarrDataset",
    "zarrdataset_worker_init_fn",
    "chained_zarrdataset_worker_init_fn",
]

def __getattr__(name: str) -> object:
    # The torch-based training side loads on first use, so preprocessing
    # (and dask workers) never pay for importing torch.
    if name == "PatchDataset":
        from .dataset import PatchDataset

        return PatchDataset
    if name in ("PredictionWriter", "PredictionError"):  # zarr/dask writer, loaded on use
        from . import predict

        return getattr(predict, name)
    if name == "plot":  # pictures (matplotlib loads when one is drawn)
        import importlib

        return importlib.import_module(".plot", __name__)
    if name == "PatchLoader":
        from .dataset import PatchLoader

        return PatchLoader
    if name in _TORCH_COMPAT_NAMES:  # served by zarrdask.compat.zarrdataset
        from .compat import zarrdataset

        return getattr(zarrdataset, name)
    raise AttributeError(f"module 'zarrdask' has no attribute {name!r}")
