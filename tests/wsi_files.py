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


def damage_last_tile(path: Path) -> None:
    """Overwrite the last tile of level 0 with zeros (a reader that opens the
    file without decoding tiles does not notice)."""
    with tifffile.TiffFile(path) as tif:
        page = tif.series[0].levels[0].keyframe
        offset, count = page.dataoffsets[-1], page.databytecounts[-1]
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\x00" * count)


def _levels(base: np.ndarray, factors: tuple[int, ...]) -> list[np.ndarray]:
    return [base] + [np.ascontiguousarray(base[::f, ::f]) for f in factors]


def write_ndpi_like(path: Path, base: np.ndarray, *, mpp: float = 0.4536, magnification: float = 20.0,
                    factors: tuple[int, ...] = (2, 4), tile: int = 128) -> list[np.ndarray]:
    """A Hamamatsu NDPI-like file: ``Make`` Hamamatsu, the NDPI format flag
    (tag 65420) and ``Magnification`` (65421) on every level page, the
    levels as top-level JPEG pages with the pixel size in the resolution
    tags (centimetres), then a macro page (``Magnification`` -1).

    Not byte-faithful: real NDPI levels are one JPEG stream per page with
    restart markers (``McuStarts``), which tifffile cannot write; these are
    tiled JPEG pages. Returns the levels written."""
    levels = _levels(base, factors)
    macro = np.full((96, 256, 3), 180, np.uint8)  # the whole glass slide: another aspect
    ndpi = [(65420, "I", 1, 1, True), (271, "s", 0, "Hamamatsu", True),  # format flag, Make
            (272, "s", 0, "C13220", True)]  # Model
    with tifffile.TiffWriter(path) as tif:
        for f, level in zip((1, *factors), levels, strict=True):
            tif.write(level, tile=(tile, tile), photometric="rgb", compression="jpeg",
                      metadata=None, resolution=(1e4 / (mpp * f),) * 2,
                      resolutionunit="CENTIMETER",
                      extratags=[*ndpi, (65421, "f", 1, magnification, True)])
        tif.write(macro, photometric="rgb", compression="jpeg", metadata=None,
                  extratags=[*ndpi, (65421, "f", 1, -1.0, True)])
    return levels


def scn_description(name: str, sizes: list[tuple[int, int]], *, mpp: float,
                    objective: float, first_ifd: int) -> str:
    """Leica SCN XML for one image (``sizes``: (width, height) per
    resolution, the pages from ``first_ifd`` on); the physical size of the
    view is in nanometres."""
    w, h = sizes[0]
    dims = "".join(f'<dimension sizeX="{sw}" sizeY="{sh}" r="{r}" ifd="{first_ifd + r}"/>'
                   for r, (sw, sh) in enumerate(sizes))
    return (
        '<?xml version="1.0"?>'
        '<scn xmlns="http://www.leica-microsystems.com/scn/2010/10/01">'
        f'<collection name="{name}" uuid="1" sizeX="{round(w * mpp * 1000)}" '
        f'sizeY="{round(h * mpp * 1000)}">'
        f'<image name="{name}" uuid="2"><creationDate>2026-01-01T00:00:00Z</creationDate>'
        f'<device model="Leica SCN400;Leica SCN" version="1.5"/>'
        f'<pixels sizeX="{w}" sizeY="{h}">{dims}</pixels>'
        f'<view sizeX="{round(w * mpp * 1000)}" sizeY="{round(h * mpp * 1000)}" '
        'offsetX="0" offsetY="0" spacingZ="0"/>'
        '<scanSettings><objectiveSettings>'
        f'<objective>{objective:g}</objective></objectiveSettings>'
        '<illuminationSettings><illuminationSource>brightfield</illuminationSource>'
        '</illuminationSettings></scanSettings>'
        '</image></collection></scn>'
    )


def write_scn_like(path: Path, base: np.ndarray, *, mpp: float = 0.5, objective: float = 20.0,
                   factors: tuple[int, ...] = (4,), tile: int = 128) -> list[np.ndarray]:
    """A Leica SCN-like file: the SCN XML in the first page's
    ``ImageDescription`` (one image, its resolutions mapped to IFDs, the
    view's physical size in nm, the objective), the levels as tiled JPEG
    pages, no resolution tags (the pixel size is only in the XML).

    Real SCN files hold a collection with a macro image and one or more
    tissue images; this one holds one image. Returns the levels written."""
    levels = _levels(base, factors)
    sizes = [(lv.shape[1], lv.shape[0]) for lv in levels]
    desc = scn_description("tissue", sizes, mpp=mpp, objective=objective, first_ifd=0)
    with tifffile.TiffWriter(path) as tif:
        for i, level in enumerate(levels):
            tif.write(level, tile=(tile, tile), photometric="rgb", compression="jpeg",
                      metadata=None, description=desc if i == 0 else None,
                      subfiletype=1 if i else 0)
    return levels


def philips_description(spacings_um: list[float]) -> str:
    """Philips DP XML: one ``PixelDataRepresentation`` per level with its
    ``DICOM_PIXEL_SPACING`` in millimetres (row, column), as Philips
    IntelliSite writes it."""
    reps = "".join(
        '<DataObject ObjectType="PixelDataRepresentation">'
        f'<Attribute Name="PIIM_PIXEL_DATA_REPRESENTATION_NUMBER" Group="0x101D" '
        f'Element="0x1009" PMSVR="IUInt16">{i}</Attribute>'
        '<Attribute Name="DICOM_PIXEL_SPACING" Group="0x0028" Element="0x0030" '
        f'PMSVR="IDoubleArray">&quot;{s / 1000:.9g}&quot; &quot;{s / 1000:.9g}&quot;</Attribute>'
        '</DataObject>'
        for i, s in enumerate(spacings_um))
    return (
        '<?xml version="1.0" encoding="UTF-8" ?><DataObject ObjectType="DPUfsImport">'
        '<Attribute Name="DICOM_MANUFACTURER" Group="0x0008" Element="0x0070" '
        'PMSVR="IString">PHILIPS</Attribute>'
        '<Attribute Name="PIM_DP_SCANNED_IMAGES" Group="0x301D" Element="0x1003" '
        'PMSVR="IDataObjectArray"><Array><DataObject ObjectType="DPScannedImage">'
        '<Attribute Name="PIM_DP_IMAGE_TYPE" Group="0x301D" Element="0x1004" '
        'PMSVR="IString">WSI</Attribute>'
        '<Attribute Name="PIIM_PIXEL_DATA_REPRESENTATION_SEQUENCE" Group="0x1001" '
        f'Element="0x8B01" PMSVR="IDataObjectArray"><Array>{reps}</Array></Attribute>'
        '</DataObject></Array></Attribute></DataObject>'
    )


def write_philips_like(path: Path, base: np.ndarray, *, mpp: float = 0.25,
                       factors: tuple[int, ...] = (2, 4), tile: int = 128) -> list[np.ndarray]:
    """A Philips TIFF-like file: ``Software`` "Philips DP v1.0", the Philips
    XML (pixel spacing per level, in mm) in the first page's
    ``ImageDescription``, the levels as tiled JPEG pages, then a stripped
    ``Macro`` page. Returns the levels written."""
    levels = _levels(base, factors)
    desc = philips_description([mpp * f for f in (1, *factors)])
    macro = np.ascontiguousarray(base[::8, ::8])
    with tifffile.TiffWriter(path) as tif:
        for i, level in enumerate(levels):
            tif.write(level, tile=(tile, tile), photometric="rgb", compression="jpeg",
                      metadata=None, software="Philips DP v1.0",
                      description=desc if i == 0 else "")
        tif.write(macro, photometric="rgb", metadata=None, software="Philips DP v1.0",
                  description="Macro")
    return levels
