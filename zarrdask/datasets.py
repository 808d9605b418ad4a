"""Synthetic whole-slide images: tissue-like blobs on a white background.

Deterministic from a seed, written chunk by chunk (never the whole slide in
memory) as an OME-NGFF pyramid: version 0.5 on zarr v3, 0.4 on zarr v2, with
checksummed chunks (:mod:`zarrdask.io.checksum`); or as a tiled pyramidal
OME-TIFF with interleaved RGB pixels, as scanners write them.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import dask
import dask.array as da
import numpy as np
import zarr
from scipy import ndimage

from .io.checksum import checksummed_codecs

__all__ = ["tissue_field", "synthetic_slide", "write_synthetic_slide", "write_synthetic_ome_tiff"]

_BACKGROUND = np.array([244, 242, 246], dtype=float)
_TISSUE = np.array([[196, 112, 168], [128, 74, 150], [220, 150, 190]], dtype=float)


def tissue_field(shape: Sequence[int], *, seed: int = 0, coverage: float = 0.35) -> np.ndarray:
    """A smooth field in [0, 1] whose top ``coverage`` fraction is tissue.

    Parameters
    ----------
    shape : (int, int)
        Size of the low-resolution field.
    seed : int
        Random seed.
    coverage : float
        Fraction of the field above the tissue threshold.

    Returns
    -------
    numpy.ndarray
        float32 field; ``field > 1 - coverage`` is tissue, by construction
        of the rank normalisation.
    """
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(tuple(shape))
    sigma = max(2.0, min(shape) / 12)
    smooth = ndimage.gaussian_filter(noise, sigma=sigma, mode="wrap")
    ranks = smooth.ravel().argsort().argsort().reshape(smooth.shape)
    field = ranks.astype(np.float32) / max(1, ranks.size - 1)
    return field


def _render_block(block_id: tuple[int, ...], *, field: np.ndarray, size: int, chunk: int,
                  seed: int, coverage: float) -> np.ndarray:
    _, by, bx = block_id
    y0, x0 = by * chunk, bx * chunk
    h = min(chunk, size - y0)
    w = min(chunk, size - x0)
    factor = size / field.shape[0]
    yy = (np.arange(y0, y0 + h) + 0.5) / factor - 0.5
    xx = (np.arange(x0, x0 + w) + 0.5) / factor - 0.5
    grid = np.meshgrid(yy, xx, indexing="ij")
    local = ndimage.map_coordinates(field, grid, order=1, mode="nearest")
    tissue = local > (1.0 - coverage)
    rng = np.random.default_rng([seed, by, bx])
    shade = np.clip((local - (1.0 - coverage)) / max(coverage, 1e-6), 0, 1)
    texture = rng.normal(0.0, 9.0, size=(h, w))
    out = np.empty((3, h, w), dtype=np.uint8)
    for c in range(3):
        tissue_colour = _TISSUE[0, c] * (1 - shade) + _TISSUE[1, c] * shade
        value = np.where(tissue, tissue_colour + texture, _BACKGROUND[c] + texture * 0.3)
        out[c] = np.clip(value, 0, 255).astype(np.uint8)
    return out


def synthetic_slide(size: int = 4096, *, chunk: int = 512, seed: int = 0,
                    coverage: float = 0.35) -> da.Array:
    """A lazy synthetic RGB slide of shape ``(3, size, size)`` (``c, y, x``).

    Parameters
    ----------
    size : int
        Height and width in pixels.
    chunk : int
        Chunk edge in pixels.
    seed : int
        Random seed: the same seed gives the same pixels.
    coverage : float
        Approximate fraction of the slide covered by tissue.

    Returns
    -------
    dask.array.Array
        uint8, chunks ``(3, chunk, chunk)``.
    """
    field = tissue_field((max(16, size // 64),) * 2, seed=seed, coverage=coverage)
    return da.map_blocks(
        _render_block_wrapper,
        dtype=np.uint8,
        chunks=((3,), _splits(size, chunk), _splits(size, chunk)),
        field=field, size=size, chunk=chunk, seed=seed, coverage=coverage,
        name=f"synthetic-slide-{size}-{chunk}-{seed}-{coverage}",
        meta=np.empty((0, 0, 0), dtype=np.uint8),
    )


def _render_block_wrapper(block_info=None, **kwargs) -> np.ndarray:
    return _render_block(block_info[None]["chunk-location"], **kwargs)


def _splits(size: int, chunk: int) -> tuple[int, ...]:
    full, rest = divmod(size, chunk)
    return (chunk,) * full + ((rest,) if rest else ())


def _downsample(arr: da.Array) -> da.Array:
    h, w = arr.shape[1] // 2 * 2, arr.shape[2] // 2 * 2
    trimmed = arr[:, :h, :w].astype(np.float32)
    return da.coarsen(np.mean, trimmed, {1: 2, 2: 2}).round().astype(np.uint8)


def write_synthetic_slide(
    path: str | os.PathLike,
    *,
    size: int = 4096,
    chunk: int = 512,
    levels: int | None = None,
    seed: int = 0,
    coverage: float = 0.35,
    zarr_format: int = 3,
    pixel_size: float = 0.5,
    compressor: str = "zstd",
    overwrite: bool = True,
) -> str:
    """Write a synthetic slide as an OME-NGFF pyramid.

    Parameters
    ----------
    path : str or path
        Output ``.zarr`` folder.
    size, chunk, seed, coverage
        See :func:`synthetic_slide`.
    levels : int, optional
        Number of pyramid levels (each halves the size); default: down to
        about one chunk.
    zarr_format : {2, 3}
        3 writes OME-NGFF 0.5, 2 writes OME-NGFF 0.4.
    pixel_size : float
        Physical size of a level-0 pixel in micrometres.
    compressor : str
        Blosc compressor name (``"zstd"``, ``"lz4"``...) for zarr v3; zarr v2
        takes only ``"zstd"`` (see :func:`zarrdask.io.checksum.checksummed_codecs`).
    overwrite : bool
        Replace an existing store.

    Returns
    -------
    str
        The path written.
    """
    path = os.fspath(path)
    if levels is None:
        levels = max(1, int(np.floor(np.log2(max(1, size / chunk)))) + 1)
    # every chunk carries a checksum verified on read: a damaged chunk is an
    # error, never silently wrong pixels
    codecs = checksummed_codecs(zarr_format, compressor=compressor)
    root = zarr.open_group(path, mode="w" if overwrite else "w-", zarr_format=zarr_format)
    kwargs = {"dimension_names": ("c", "y", "x")} if zarr_format == 3 else {}
    arr = synthetic_slide(size, chunk=chunk, seed=seed, coverage=coverage)
    datasets = []
    writes = []
    for lvl in range(levels):
        name = str(lvl)
        target = root.create_array(
            name, shape=arr.shape, dtype=np.uint8, chunks=(3, chunk, chunk),
            overwrite=True, **codecs, **kwargs,
        )
        writes.append(da.store(arr.rechunk((3, chunk, chunk)), target, lock=False, compute=False))
        factor = 2**lvl
        datasets.append({
            "path": name,
            "coordinateTransformations": [
                {"type": "scale", "scale": [1.0, pixel_size * factor, pixel_size * factor]}
            ],
        })
        arr = _downsample(arr)
    multiscale = {
        "name": os.path.basename(path.rstrip("/")),
        "axes": [
            {"name": "c", "type": "channel"},
            {"name": "y", "type": "space", "unit": "micrometer"},
            {"name": "x", "type": "space", "unit": "micrometer"},
        ],
        "datasets": datasets,
    }
    dask.compute(*writes)
    if zarr_format == 3:
        root.attrs["ome"] = {"version": "0.5", "multiscales": [multiscale]}
    else:
        multiscale["version"] = "0.4"
        root.attrs["multiscales"] = [multiscale]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(path, zarr_format=zarr_format)
    return path


def _default_levels(size: int, chunk: int) -> int:
    return max(1, int(np.floor(np.log2(max(1, size / chunk)))) + 1)


def _tiles(arr: da.Array, tile: int):
    """Tiles of a ``(3, y, x)`` dask array as ``(tile, tile, 3)`` blocks, in
    TIFF order (row by row), computing one band of rows at a time."""
    _, height, width = arr.shape
    for top in range(0, height, tile):
        band = np.moveaxis(arr[:, top:top + tile, :].compute(), 0, -1)
        for left in range(0, width, tile):
            block = band[:, left:left + tile]
            if block.shape[:2] != (tile, tile):  # edge tiles are padded to the tile size
                block = np.pad(block, ((0, tile - block.shape[0]), (0, tile - block.shape[1]),
                                       (0, 0)), constant_values=255)
            yield np.ascontiguousarray(block)


def write_synthetic_ome_tiff(
    path: str | os.PathLike,
    *,
    size: int = 4096,
    tile: int = 512,
    levels: int | None = None,
    seed: int = 0,
    coverage: float = 0.35,
    pixel_size: float = 0.5,
    compression: str = "zlib",
) -> str:
    """Write a synthetic slide as a tiled, pyramidal OME-TIFF.

    The layout of a scanner's OME-TIFF export: interleaved RGB pixels
    (``y, x, c`` as stored), one tiled IFD per level with the
    sub-resolutions in SubIFDs, the physical pixel size in the OME-XML.

    Parameters
    ----------
    path : str or path
        Output ``.ome.tif`` file (BigTIFF).
    size, seed, coverage
        See :func:`synthetic_slide`.
    tile : int
        Tile edge in pixels (a multiple of 16).
    levels : int, optional
        Number of pyramid levels (each halves the size); default: down to
        about one tile.
    pixel_size : float
        Physical size of a level-0 pixel in micrometres.
    compression : str
        A compression tifffile writes without extra codecs (``"zlib"``,
        ``"lzma"``, ``"none"``...).

    Returns
    -------
    str
        The path written.
    """
    import tifffile

    path = os.fspath(path)
    if levels is None:
        levels = _default_levels(size, tile)
    arr = synthetic_slide(size, chunk=tile, seed=seed, coverage=coverage)
    metadata = {"axes": "YXS", "PhysicalSizeX": pixel_size, "PhysicalSizeY": pixel_size,
                "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"}
    compression = None if compression == "none" else compression
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        for lvl in range(levels):
            _, height, width = arr.shape
            options = {"subifds": levels - 1, "metadata": metadata} if lvl == 0 else {
                "subfiletype": 1}
            tif.write(_tiles(arr, tile), shape=(height, width, 3), dtype=np.uint8,
                      tile=(tile, tile), photometric="rgb", compression=compression,
                      **options)
            arr = _downsample(arr)
    return path
