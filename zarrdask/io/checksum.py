"""Checksummed chunks: what zarrdask writes, and how the direct path verifies.

Blosc frames carry no checksum, so a flipped byte in a stored chunk decodes
to wrong pixels without any error. Every array zarrdask writes therefore ends
its codec chain with a checksum that the reader verifies:

* zarr v3: the compressor, then zarr's ``crc32c`` codec (verified by
  zarr-python on every read, and by numcodecs' ``CRC32C`` on the direct
  decode path of :mod:`zarrdask.dataset.layout`).
* zarr v2 has no checksum codec after the compressor: chunks are zstd frames
  with zstd's own content checksum (verified by the zstd decoder).
"""

from __future__ import annotations

from typing import Any

__all__ = ["checksummed_codecs"]


def checksummed_codecs(zarr_format: int, *, compressor: str = "zstd", clevel: int = 3
                       ) -> dict[str, Any]:
    """Keyword arguments of ``zarr.create_array`` for checksummed chunks.

    Parameters
    ----------
    zarr_format : {2, 3}
        Format of the array written.
    compressor : str
        Blosc compressor name for zarr v3 (``"zstd"``, ``"lz4"``...). zarr v2
        accepts only ``"zstd"`` (plain zstd frames, whose content checksum is
        the only one a v2 codec chain can carry after compression).
    clevel : int
        Compression level.

    Returns
    -------
    dict
        ``{"compressors": ...}`` to pass to ``create_array``.

    Raises
    ------
    ValueError
        A zarr v2 array asked with another compressor than ``"zstd"``, or a
        format other than 2 or 3.
    """
    if zarr_format == 3:
        from zarr.codecs import BloscCodec, Crc32cCodec

        return {"compressors": [BloscCodec(cname=compressor, clevel=clevel, shuffle="bitshuffle"),
                                Crc32cCodec()]}
    if zarr_format == 2:
        if compressor != "zstd":
            raise ValueError(
                f"compressor={compressor!r} with zarr_format=2: zarr v2 can carry a chunk "
                "checksum only in zstd frames; pass compressor='zstd', or zarr_format=3 "
                "(any Blosc compressor followed by crc32c)"
            )
        from numcodecs import Zstd

        return {"compressors": Zstd(level=clevel, checksum=True)}
    raise ValueError(f"zarr_format={zarr_format!r}; pass 2 or 3")
