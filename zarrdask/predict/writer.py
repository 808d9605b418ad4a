"""``PredictionWriter``: model outputs over a coordinate table's patches,
blended and written as one OME-NGFF 0.5 image per input slide."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..io.location import get_filesystem, protocol_of
from ..table import PatchTable, read_table
from .accumulate import ChunkAccumulator, combine, decode_fragment, encode_fragment
from .errors import PredictionError
from .ngff import build_pyramid, open_level0, write_multiscales
from .plan import OutputGeometry, output_names, plan_outputs
from .windows import check_blend

__all__ = ["PredictionWriter", "SCRATCH"]

SCRATCH = ".zarrdask-predict"  # folder of `out` holding what writers left for each other


def _numpy(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, on any device
        value = value.detach().cpu()
        try:
            value = value.numpy()
        except TypeError:  # bfloat16 and other dtypes numpy lacks
            value = value.float().numpy()
    try:
        return np.asarray(value)
    except Exception as exc:
        raise PredictionError(f"{name} must be an array or tensor, not {type(value).__name__}") from exc


class PredictionWriter:
    """Write model predictions over a table's patches to OME-NGFF.

    Parameters
    ----------
    table : PatchTable or path
        The coordinate table the dataset reads (a Parquet path is read).
    out : str or path
        Folder (local path or URL such as ``s3://bucket/preds``) that gets one
        ``<input stem>.ome.zarr`` per input image; see :attr:`outputs`.
    channels : int
        Channels (classes) of the predictions.
    dtype : str or numpy.dtype
        Output dtype. Float outputs read NaN where no patch predicted; integer
        outputs read 0 there (and mean-blended values are rounded).
    blend : {"mean", "gaussian", "cosine", "max"}
        How overlapping patches combine: a (weighted) mean, or the maximum
        (for masks).
    level : None, int or "patch"
        Where the predictions live: ``None`` the table's read level;
        ``k`` one output pixel per ``2**k`` read-level pixels (a coarser heat
        map; the patch size must be a multiple of ``2**k``); ``"patch"`` one
        value per patch on the grid's stride lattice (predictions
        ``(batch, channels)``).
    chunks : int, sequence or mapping, optional
        Output chunk side per grid dim (default 512, capped by the image).
    storage_options : mapping, optional
        fsspec options of ``out`` (and to reopen inputs for their units).

    Notes
    -----
    Several writers (DataLoader workers, processes, DDP ranks) may write to
    the same ``out`` with the same arguments at once: each combines the
    output chunks whose patches it has all seen and writes them whole; the
    rest is left in ``out/.zarrdask-predict`` at ``close`` and the last
    writer to close combines it, builds the pyramid and removes the folder.
    Rerunning (after an interruption) rewrites the same bytes.
    """

    def __init__(self, table: PatchTable | str | os.PathLike, out: str | os.PathLike, *,
                 channels: int = 1, dtype: Any = "float32", blend: str = "mean",
                 level: int | str | None = None,
                 chunks: int | Sequence[int] | Mapping[str, int] | None = None,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        if not isinstance(table, PatchTable):
            table = read_table(table)
        if not isinstance(channels, int | np.integer) or isinstance(channels, bool) or channels < 1:
            raise PredictionError(f"channels={channels!r} must be a positive int")
        try:
            self.dtype = np.dtype(dtype)
        except TypeError as exc:
            raise PredictionError(f"dtype={dtype!r} is not a numpy dtype") from exc
        if self.dtype.kind not in "fiub":
            raise PredictionError(f"dtype={dtype!r}: predictions must be numeric")
        self.table = table
        self.channels = int(channels)
        self.blend = check_blend(blend)
        self.level = level
        self.storage_options = dict(storage_options or {})
        out = os.fspath(out)
        self.out = os.path.abspath(out) if protocol_of(out) == "file" else out.rstrip("/")
        self._geos: dict[int, OutputGeometry] = plan_outputs(
            table, level=level, chunks=chunks, storage_options=self.storage_options)
        names = output_names(table, sorted(self._geos))
        self.outputs: dict[int, str] = {i: f"{self.out}/{names[i]}" for i in sorted(self._geos)}
        self._scratch = {i: f"{self.out}/{SCRATCH}/{names[i]}" for i in self._geos}
        self._acc: dict[int, ChunkAccumulator] = {}
        self._arrays: dict[int, Any] = {}
        self._token = uuid.uuid4().hex
        self._closed = False
        self.complete: dict[int, bool] = {}
        self._fs, _ = get_filesystem(self.out, self.storage_options)

    def __repr__(self) -> str:
        return (f"<PredictionWriter {len(self.outputs)} image(s) -> {self.out}, "
                f"{self.channels} channel(s) {self.dtype}, blend {self.blend!r}, level {self.level!r}>")

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def geometry(self, image_id: int) -> OutputGeometry:
        """The output grid of image ``image_id``."""
        if image_id not in self._geos:
            raise PredictionError(
                f"image_id {image_id} has no rows in the writer's table (images with rows: "
                f"{sorted(self._geos)}); write the batches of a dataset over that same table"
            )
        return self._geos[image_id]

    # -- writing ------------------------------------------------------------
    def _array(self, image_id: int) -> Any:
        if image_id not in self._arrays:
            self._arrays[image_id] = open_level0(
                self.outputs[image_id], self._geos[image_id], channels=self.channels,
                dtype=self.dtype, storage_options=self.storage_options)
        return self._arrays[image_id]

    def _accumulator(self, image_id: int) -> ChunkAccumulator:
        if image_id not in self._acc:
            self._acc[image_id] = ChunkAccumulator(self._geos[image_id], channels=self.channels,
                                                   blend=self.blend, dtype=self.dtype)
        return self._acc[image_id]

    def _crop(self, values: np.ndarray, geo: OutputGeometry) -> np.ndarray:
        """``(B, C, *spatial)`` predictions cropped to the unpadded patch, in output pixels."""
        spatial = values.shape[2:]
        if len(spatial) != len(geo.dims):
            raise PredictionError(
                f"predictions of shape {values.shape} need {len(geo.dims)} spatial dims "
                f"{list(geo.dims)} after (batch, channels), or none (one value per patch)")
        if geo.per_patch:
            raise PredictionError(
                "level='patch' takes one value per patch: predictions (batch, channels), not "
                f"maps of shape {values.shape}; pass level=None (or an int) to write maps")
        crop = []
        patch = [int(self.table.patch_size[d]) for d in geo.dims]
        pad = [int(self.table.pad.get(d, 0)) for d in geo.dims]
        for d, n, p, q, f in zip(geo.dims, spatial, patch, pad, geo.factor, strict=True):
            if n * f == p + 2 * q and q % f == 0:
                crop.append(slice(q // f, q // f + p // f))
            elif n * f == p:
                crop.append(slice(0, n))
            else:
                expect = {p // f} | ({(p + 2 * q) // f} if (p + 2 * q) % f == 0 else set())
                raise PredictionError(
                    f"predictions are {n} pixels along {d!r}; at level {self.level!r} a patch of "
                    f"{p} (pad {q}) gives {sorted(expect)} output pixels: resize the model's "
                    "output or choose the level it predicts at")
        return values[(slice(None), slice(None), *crop)]

    def write(self, predictions: Any, positions: Any, image_ids: Any) -> None:
        """Add a batch of predictions.

        Parameters
        ----------
        predictions : array or tensor
            ``(batch, channels, *spatial)`` maps (over the padded or the
            unpadded patch, at the writer's level; the pad is cropped) or
            ``(batch, channels)`` one value per patch (painted over the patch
            at levels other than ``"patch"``).
        positions : array or tensor
            The batch's ``"position"``: ``(batch, ndims, 2)`` read-level
            ``[start, stop)`` (or ``(batch, ndims)`` starts).
        image_ids : array or tensor
            The batch's ``"image_id"``, ``(batch,)``.
        """
        if self._closed:
            raise PredictionError("write() after close(): make a new PredictionWriter")
        values = _numpy(predictions, "predictions")
        pos = _numpy(positions, "positions").astype(np.int64, copy=False)
        ids = _numpy(image_ids, "image_ids").astype(np.int64, copy=False).reshape(-1)
        if values.ndim < 2 or values.shape[0] != len(ids) or values.shape[1] != self.channels:
            raise PredictionError(
                f"predictions of shape {values.shape} must be (batch={len(ids)}, "
                f"channels={self.channels}, ...) (the writer was made with channels={self.channels})")
        nd = len(self.table.dims)
        starts = pos[..., 0] if pos.ndim == 3 else pos
        if starts.shape != (len(ids), nd):
            raise PredictionError(
                f"positions of shape {pos.shape} must be (batch={len(ids)}, {nd}, 2) as the "
                "dataset yields them (batch['position'])")
        if values.dtype.kind not in "fiub":
            raise PredictionError(f"predictions of dtype {values.dtype} are not numeric")
        for image_id in np.unique(ids).tolist():
            geo = self.geometry(image_id)
            self._array(image_id)  # create (or check) the output at its first batch
            sel = np.flatnonzero(ids == image_id)
            rows = geo.row_ids(starts[sel], where="write()")
            batch = values[sel]  # blended in float64 by the accumulator
            if batch.ndim == 2:
                batch = np.broadcast_to(batch.reshape(*batch.shape, *([1] * nd)),
                                        (*batch.shape, *geo.box))
            else:
                batch = self._crop(batch, geo)
            if batch.dtype.kind == "f" and not np.isfinite(batch).all():
                bad = int(np.flatnonzero(~np.isfinite(batch).reshape(len(sel), -1).all(axis=1))[0])
                raise PredictionError(
                    f"the prediction of image {image_id} at position "
                    f"{dict(zip(geo.dims, starts[sel][bad].tolist(), strict=True))} holds NaN or "
                    "inf; it would blend into its neighbours (NaN is what unpredicted pixels "
                    "read as): fix the model's output (e.g. torch.nan_to_num) before writing")
            acc = self._accumulator(image_id)
            lo, _hi = geo.boxes(rows)
            for k, row in enumerate(rows.tolist()):
                for chunk in acc.add(row, lo[k], batch[k]):
                    slices, block = acc.finish(chunk)
                    self._array(image_id)[(slice(None), *slices)] = block

    # -- closing ------------------------------------------------------------
    def _put(self, path: str, data: bytes) -> None:
        if protocol_of(self.out) == "file":
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        else:
            self._fs.pipe_file(path, data)

    def _spill(self, image_id: int) -> None:
        acc = self._acc[image_id]
        scratch = self._scratch[image_id]
        for chunk, row, slices, arr in acc.leftovers():
            self._put(f"{scratch}/fragments/{chunk}/{row}.npz", encode_fragment(slices, arr))
        state = acc.state()
        buf = io.BytesIO()
        np.savez(buf, **state)
        self._put(f"{scratch}/state/{self._token}.npz", buf.getvalue())

    def _list(self, path: str) -> list[str]:
        try:
            return sorted(self._fs.find(path))
        except FileNotFoundError:
            return []

    def _finalize(self, image_id: int) -> bool:
        """Combine what every writer left, if every row of the image was written."""
        geo = self._geos[image_id]
        scratch = self._scratch[image_id]
        rows: set[int] = set()
        done: set[int] = set()
        try:
            for path in self._list(f"{scratch}/state"):
                if not path.endswith(".npz"):
                    continue
                with np.load(io.BytesIO(self._fs.cat_file(path))) as f:
                    rows.update(f["rows"].tolist())
                    done.update(f["done"].tolist())
            if len(rows) < len(geo.starts):
                return False
            by_chunk: dict[int, list[str]] = {}
            for path in self._list(f"{scratch}/fragments"):
                if path.endswith(".npz"):
                    by_chunk.setdefault(int(path.rstrip("/").split("/")[-2]), []).append(path)
            expected = geo.expected_rows()
            arr = self._array(image_id)
            for chunk, paths in sorted(by_chunk.items()):
                if chunk in done:
                    continue
                if len(paths) != expected.get(chunk, -1):
                    return False
                items = []
                for path in paths:
                    slices, a = decode_fragment(self._fs.cat_file(path))
                    items.append((int(path.rsplit("/", 1)[-1][:-4]), slices, a))
                cs = geo.chunk_slices(chunk)
                block = combine(items, tuple(s.stop - s.start for s in cs), channels=self.channels,
                                blend=self.blend, dtype=self.dtype)
                arr[(slice(None), *cs)] = block
        except FileNotFoundError:
            # another writer finished this image meanwhile: it removes the scratch last
            return not self._fs.exists(scratch)
        self._array(image_id)
        levels = build_pyramid(self.outputs[image_id], geo, channels=self.channels,
                               dtype=self.dtype, blend=self.blend,
                               storage_options=self.storage_options)
        write_multiscales(self.outputs[image_id], geo, channels=self.channels, levels=levels,
                          storage_options=self.storage_options)
        try:
            self._fs.rm(scratch, recursive=True)
            if protocol_of(self.out) == "file":
                os.rmdir(f"{self.out}/{SCRATCH}")  # only once no other image waits in it
        except OSError:
            pass
        return True

    def close(self) -> dict[int, bool]:
        """Flush this writer; finish every image whose rows have all been written.

        Finishing an image combines the chunks other writers left, builds
        the pyramid with dask and writes the multiscales metadata. When
        several writers share ``out``, the last to close finishes.

        Returns
        -------
        dict
            ``image_id -> True`` when the image is complete (also in
            :attr:`complete`).
        """
        if self._closed:
            return self.complete
        self._closed = True
        for image_id in sorted(self._acc):
            self._spill(image_id)
        for image_id in sorted(self._geos):
            # images this writer never saw may still wait for a last writer: this one
            if image_id in self._acc or self._list(f"{self._scratch[image_id]}/state"):
                self.complete[image_id] = self._finalize(image_id)
        self._acc.clear()
        return self.complete
