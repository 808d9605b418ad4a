"""Whole-slide TIFF flavours written with tifffile, for the tests (no downloads).

Imported by test modules as ``import wsi_files`` (pytest puts ``tests/`` on
``sys.path`` for its root conftest).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

APERIO_HEADER = "Aperio Image Library v12.0.15\r\n"


def rgb_slide(shape: tuple[int, int], *, seed: int) -> np.ndarray:
    """A smooth RGB image (JPEG keeps it close) with some fine texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    base = np.stack([(yy * 255 // max(shape[0] - 1, 1)), (xx * 255 // max(shape[1] - 1, 1)),
                     ((yy + xx) * 127 // max(sum(shape) - 2, 1))], axis=-1)
    noise = rng.integers(0, 8, size=(*shape, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def write_svs(path: Path, base: np.ndarray, *, mpp: float = 0.499, app_mag: int = 20,
              factors: tuple[int, ...] = (4,), tile: int = 256,
              compression: str = "jpeg") -> dict[str, np.ndarray]:
    """An Aperio-style SVS: baseline page (tiled), thumbnail (stripped),
    reduced pages (tiled), label (``subfiletype=1``) and macro
    (``subfiletype=9``) pages, each with an Aperio ``ImageDescription``.

    Returns the arrays written: ``"levels"`` (list), ``"thumbnail"``,
    ``"label"``, ``"macro"``.
    """
    h, w = base.shape[:2]
    desc = (f"{APERIO_HEADER}{w}x{h} [0,0 {w}x{h}] ({tile}x{tile}) JPEG/RGB Q=90"
            f"|AppMag = {app_mag}|StripeWidth = 2040|ScanScope ID = SS1234"
            f"|MPP = {mpp}|Filename = test")
    thumbnail = np.ascontiguousarray(base[::16, ::16])
    label = np.full((96, 128, 3), 200, np.uint8)
    label[20:40, 10:100] = (10, 20, 30)
    macro = np.ascontiguousarray(base[::32, ::16])
    levels = [base] + [np.ascontiguousarray(base[::f, ::f]) for f in factors]
    with tifffile.TiffWriter(path) as tif:
        tif.write(base, tile=(tile, tile), photometric="rgb", compression=compression,
                  description=desc, metadata=None)
        tif.write(thumbnail, photometric="rgb", metadata=None,
                  description=f"{APERIO_HEADER}{w}x{h} -> thumbnail")
        for f, level in zip(factors, levels[1:], strict=True):
            tif.write(level, tile=(tile, tile), photometric="rgb", compression=compression,
                      metadata=None,
                      description=f"{APERIO_HEADER}{w}x{h} -> {w // f}x{h // f}"
                                  f"|AppMag = {app_mag}|MPP = {mpp}")
        tif.write(label, photometric="rgb", subfiletype=1, metadata=None,
                  description=f"{APERIO_HEADER}label {label.shape[1]}x{label.shape[0]}")
        tif.write(macro, photometric="rgb", subfiletype=9, metadata=None,
                  description=f"{APERIO_HEADER}macro {macro.shape[1]}x{macro.shape[0]}")
    return {"levels": levels, "thumbnail": thumbnail, "label": label, "macro": macro}


def write_generic_pyramid(path: Path, base: np.ndarray, *, mpp: float | None = 0.25,
                          unit: str = "CENTIMETER", factors: tuple[int, ...] = (2, 4),
                          tile: int = 128, compression: str | None = "jpeg",
                          bigtiff: bool = False, subifds: bool = True) -> list[np.ndarray]:
    """A generic pyramidal TIFF (no OME, no vendor description): level 0 with
    its reductions as SubIFDs (or, with ``subifds=False``, as the next
    top-level pages, the layout OpenSlide reads), the pixel size in the resolution tags
    (``XResolution`` in pixels per ``unit``; None writes no resolution).

    Returns the levels written (``base[::f, ::f]``)."""
    levels = [base] + [np.ascontiguousarray(base[::f, ::f]) for f in factors]
    photometric = "rgb" if base.ndim == 3 else "minisblack"
    per_unit = {"CENTIMETER": 1e4, "INCH": 25_400.0}[unit]
    with tifffile.TiffWriter(path, bigtiff=bigtiff) as tif:
        for i, (f, level) in enumerate(zip((1, *factors), levels, strict=True)):
            extra = {}
            if mpp is not None:
                extra = {"resolution": (per_unit / (mpp * f),) * 2, "resolutionunit": unit}
            tif.write(level, tile=(tile, tile), photometric=photometric,
                      compression=compression, metadata=None,
                      subifds=len(factors) if i == 0 and subifds else None,
                      subfiletype=1 if i else 0, **extra)
    return levels
