"""``PatchDataset``: a torch ``IterableDataset`` streaming patches from a
coordinate table.

Each DataLoader worker (and each DDP rank) reads a disjoint, contiguous share
of the table's chunk groups (:mod:`zarrdask.dataset.sharding`), opens its
stores lazily after the fork, decodes every storage chunk once while it
stays in a byte-bounded cache and assembles patches from decoded chunks
(:mod:`zarrdask.dataset.chunks`); labels, masks and extra modalities are read
for the same physical box at their own resolution
(:mod:`zarrdask.dataset.boxes`). No dask graph is built per sample.

This module holds the class (construction, transforms, statistics); epochs,
sharding and resume state live in :mod:`~zarrdask.dataset.iteration`, option
checks in :mod:`~zarrdask.dataset.options`, the sources and output layout in
:mod:`~zarrdask.dataset.sources`, the shared epoch state in
:mod:`~zarrdask.dataset.epochs` and the read engine in
:mod:`~zarrdask.dataset.reader`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch.utils.data

from ..errors import DatasetError
from ..table import PatchTable, metadata_table, read_table
from ..table_layout import FolderTable
from .boxes import (
    PAD_MODES,
    Geometry,
)
from .catalog import ImageCatalog, Layout, LayoutsByModality, PerImage, entry_kind
from .columns import RowColumns
from .epochs import EpochCounter
from .iteration import EpochIteration, _torch_distributed  # noqa: F401  (compat imports it here)
from .options import (
    check_choice,
    check_flag,
    check_int,
    check_mapping,
    check_output_dims,
    check_sampling,
    transform_items,
)
from .reader import PatchReader, RowPart, Runtime
from .sharding import (
    ChunkGroups,
    ShardSpec,
)
from .sources import (
    catalog_of,
    check_uniform_patches,
    choose_modalities,
    default_output_dims,
    make_sources,
)

__all__ = ["PatchDataset"]

Transform = Callable[..., Any]


class _GeometryOf:
    """The :class:`Geometry` of one modality of image ``i`` (None when its
    entry is not a stored array); picklable."""

    def __init__(self, catalog: ImageCatalog, modality: str, dims: list[str], where: str) -> None:
        self.catalog, self.modality, self.dims, self.where = catalog, modality, dims, where

    def __call__(self, index: int) -> Geometry | None:
        entry = self.catalog.entry(self.modality, index)
        if entry_kind(entry) != "array":
            return None
        what = f"image {index}" if self.modality == "images" else f"{self.modality} entry of image {index}"
        return Geometry.from_entry(entry, self.dims, where=f"{what} in {self.where}")


class PatchDataset(PatchReader, EpochIteration, torch.utils.data.IterableDataset):
    """Patches of a coordinate table, streamed at the speed of chunk decoding.

    Parameters
    ----------
    table_or_path : PatchTable, str or path
        A coordinate table (:func:`zarrdask.build_table`) or the path of one
        written with :meth:`PatchTable.to_parquet`.
    modalities : sequence of str, optional
        What each sample holds, in this order: ``"images"``, ``"labels"``,
        ``"masks"`` or any named modality of ``table.meta["modalities"]``.
        Default: images, plus labels and extra modalities when every image
        has them (masks only when asked for).
    transforms : mapping or sequence of (key, callable), optional
        Transforms applied in order; a key is a modality name or a tuple of
        names (the callable receives and returns those arrays). A bare
        callable applies to ``"images"``.
    shuffle : bool
        Seeded, chunk-aware shuffling that changes with the epoch
        (:meth:`set_epoch`, or the next epoch at each new iteration).
    seed : int
        Seed of the shuffle and of weighted sampling.
    chunk_buffer : int
        With ``shuffle``: chunk groups open at a time (``1`` reads one chunk's
        patches before the next; large values approach a full shuffle but keep
        that many chunks decoded).
    padding_mode : str
        ``"constant"`` (zeros) or a :func:`numpy.pad` mode (``"reflect"``,
        ``"edge"``, ``"symmetric"``, ``"wrap"``...) for pads and reads outside
        the array.
    cache_bytes : int
        Capacity of each worker's decoded-chunk cache.
    read_threads : int
        Threads per worker fetching and decoding chunks of remote (fsspec)
        sources ahead of use; local and in-memory chunks are decoded on
        demand (0: no threads). The default, 16 requests in flight, hides
        about 20 ms of latency per request (``benchmarks/loader_remote.py``);
        the threads start only for remote sources.
    return_tuple : bool
        Yield tuples of the modalities' arrays (in ``modalities`` order)
        instead of dicts.
    even_shards : bool
        Give every DDP rank the same number of samples, ``ceil(M / ranks)``,
        by reading the first few patches of the epoch sequence a second time
        (as ``DistributedSampler`` does), so every rank runs the same number
        of batches and collectives never wait for a rank that stopped. The
        default; ``False`` reads each patch exactly once and ranks differ by
        at most one sample (and may differ by one batch). No effect on a
        single process.
    replacement : bool
        Sample rows with replacement (weighted when ``weights`` is given).
    weights : str or array, optional
        Sampling weight per row: a column of the table (e.g. ``"coverage"``)
        or an array of length ``len(table)``.
    num_samples : int, optional
        Samples per epoch (all ranks together) when sampling; default the
        table length.
    storage_options : mapping, optional
        fsspec options for remote sources (tables store them with secrets
        redacted).
    sources : sequence or mapping, optional
        In-memory objects per image (a sequence, for ``"images"``) or
        ``{modality: sequence}``; needed for images that were in memory when
        the table was built and the table came from Parquet.
    output_dims : mapping or "stored", optional
        ``{modality: "yxc"}``: the dim order of each output; missing letters
        become size-1 dims. Default, for every modality not named: the
        channel-first order ``t, c, z, y, x`` of the dims its arrays have,
        the same for every image of the table whatever its format.
        ``"stored"``: each array's stored order.
    path_map : mapping of str to str, optional
        Old root prefix to new root prefix of the table's local sources, for
        a table built where the data was mounted elsewhere, e.g.
        ``{"/mnt/cluster/slides": "/data/slides"}`` (see
        :func:`zarrdask.read_table`).
    columns : sequence of str, optional
        Columns of the table yielded with each sample, under their own
        names: per-patch labels (``"coverage_tumour"``, a class column) or
        slide-level labels joined onto the rows
        (:func:`zarrdask.join_image_labels`). Numbers and booleans come out
        as 0-d tensors (a ``(batch,)`` tensor once collated), text as
        ``str`` (a list of str in a batch). With ``return_tuple`` they
        follow the modalities, in this order. Transforms do not see them.

    Notes
    -----
    Samples are dicts ``{"images": ndarray, "labels": ..., "position": int64
    (ndims, 2) array of [start, stop) per grid dim in the image's read-level
    pixels (unpadded), "image_id": int}`` plus one entry per name of
    ``columns``; torch's default collate batches them. Every array is a
    fresh copy.
    """

    #: Order of modalities that ``output_dims`` does not name: ``"channel_first"``
    #: (the canonical order, one for the whole table) or ``"stored"`` (each
    #: array's own order: for subclasses whose transforms expect it).
    _default_output_order = "channel_first"

    def __init__(
        self,
        table_or_path: PatchTable | str | os.PathLike,
        *,
        modalities: Sequence[str] | None = None,
        transforms: Mapping[Any, Transform] | Sequence[tuple[Any, Transform]] | Transform | None = None,
        shuffle: bool = False,
        seed: int = 0,
        chunk_buffer: int = 16,
        padding_mode: str = "constant",
        cache_bytes: int = 256 * 2**20,
        read_threads: int = 16,
        return_tuple: bool = False,
        even_shards: bool = True,
        replacement: bool = False,
        weights: str | Sequence[float] | np.ndarray | None = None,
        num_samples: int | None = None,
        storage_options: Mapping[str, Any] | None = None,
        sources: Sequence[Any] | Mapping[str, Sequence[Any]] | None = None,
        output_dims: Mapping[str, str | Sequence[str]] | str | None = None,
        path_map: Mapping[str, str] | None = None,
        columns: Sequence[str] | None = None,
        _rank: int | None = None,
        _world_size: int | None = None,
    ) -> None:
        super().__init__()
        self._folder: FolderTable | None = None
        if isinstance(table_or_path, PatchTable):
            table = table_or_path.with_paths(path_map)
            self.table_path: str | None = None
        elif isinstance(table_or_path, str | os.PathLike):
            self.table_path = os.fspath(table_or_path)
            if (weights is None and not replacement and num_samples is None
                    and FolderTable.applies(self.table_path)):
                # a partitioned table: the table-level metadata now; rows and
                # image entries when they are read
                self._folder = FolderTable(self.table_path)
                table = metadata_table(self._folder)
            else:
                table = read_table(self.table_path, path_map=path_map)
        else:
            raise DatasetError(
                f"table_or_path must be a PatchTable or the path of a Parquet table, not a "
                f"{type(table_or_path).__name__}; build one with zarrdask.build_table"
            )
        self.shuffle = check_flag("shuffle", shuffle)
        self.seed = check_int("seed", seed)
        self.chunk_buffer = check_int("chunk_buffer", chunk_buffer, minimum=1)
        self.padding_mode = check_choice("padding_mode", padding_mode, PAD_MODES)
        self.cache_bytes = check_int("cache_bytes", cache_bytes, minimum=0)
        self.read_threads = check_int("read_threads", read_threads, minimum=0)
        self.return_tuple = check_flag("return_tuple", return_tuple)
        self.even_shards = check_flag("even_shards", even_shards)
        replacement = check_flag("replacement", replacement)
        num_samples = check_int("num_samples", num_samples, minimum=0, optional=True)
        self.storage_options = check_mapping("storage_options", storage_options,
                                             "fsspec options such as {'anon': True}")
        transform_list = transform_items(transforms)
        self._where = self.table_path or repr(table)
        self._hash = table.hash if self._folder is None else self._folder.hash
        self._dims = table.dims
        self._patch = [int(table.patch_size[d]) for d in self._dims]
        self._pad = [int(table.pad.get(d, 0)) for d in self._dims]
        frame = table.frame
        # the per-image entries: in memory, or (partitioned) parsed when read
        self._catalog = catalog_of(table, self._folder, path_map)
        n_images = self._catalog.n
        # the rows: the whole table in memory, or (partitioned) none until read
        self._whole = RowPart(frame, self._dims)
        self._whole.check(n_images, self._where)
        self._num_rows = len(frame) if self._folder is None else len(self._folder)
        self._entries = {m: self._catalog.entries(m) for m in self._catalog.names}
        self._layouts = LayoutsByModality(self._catalog, self._dims)
        self.modalities = choose_modalities(self._catalog, self._layouts, modalities,
                                            where=self._where)
        self._columns = RowColumns(frame, columns, [*self.modalities, "position", "image_id"],
                                   where=self._where)
        self._whole.columns = self._columns if len(self._columns) else None
        self._sources = make_sources(self._catalog, self.modalities, sources,
                                     self.storage_options, where=self._where,
                                     table_sources=table.sources if self._folder is None else None)
        keep = self._catalog.keep
        self._image_geo = PerImage(n_images, _GeometryOf(self._catalog, "images", self._dims,
                                                         self._where), keep=keep)
        self._geometry = {
            m: self._image_geo if m == "images" else
            PerImage(n_images, _GeometryOf(self._catalog, m, self._dims, self._where), keep=keep)
            for m in self.modalities
        }
        self._output_dims = self._resolve_output_dims(output_dims)
        self._transforms: list[tuple[tuple[str, ...], Transform]] = []
        for key, fn in transform_list:
            self.add_transform(key, fn)
        transformed = {m for key, _ in self._transforms for m in key}
        self._check_collatable(skip=transformed)
        self._sampling = check_sampling(frame, weights, replacement, num_samples, where=self._where)
        self._whole.shared = self._shared_image_chunks(self._whole)
        self._forced = (_rank, _world_size) if _rank is not None or _world_size is not None else None
        if self._forced is not None:
            ShardSpec(int(_rank or 0), int(_world_size or 1))
        self._captured_dist: tuple[int, int] | None = None
        self._epochs = EpochCounter(0)
        self._iterations_here: tuple[Any, int] = (None, 0)  # (worker pool, iterations run)
        self._resume: tuple[int, int] | None = None
        self._progress: dict[str, Any] | None = None
        self._runtime: Runtime | None = None
        self._groups_cache: ChunkGroups | None = None

    def _arrays(self, modality: str) -> list[Layout]:
        """The layouts of ``modality`` that are stored arrays (one
        representative image each)."""
        return [lay for lay in self._layouts[modality] if lay.kind == "array"]

    def _resolve_output_dims(self, output_dims: Any) -> dict[str, tuple[str, ...]]:
        """Per modality, the dims its samples come out with: ``output_dims``
        where given, else the canonical channel-first order of the union of
        the modality's stored dims (see :mod:`zarrdask.dataset.sources`)."""
        if isinstance(output_dims, str) and output_dims == "stored" or (
                output_dims is None and self._default_output_order == "stored"):
            return {}
        given = check_output_dims(output_dims, self.modalities)
        out = {}
        for m in self.modalities:
            dims = given.get(m) or default_output_dims(
                [self._geometry[m][lay.index] for lay in self._arrays(m)])
            if dims is not None:
                out[m] = dims
        return out

    def _check_collatable(self, *, skip: set[str]) -> None:
        """Fail now, not in collate, when a modality's patches differ in
        dtype or shape between images (modalities with a transform are left
        to it). One image of each distinct layout is checked."""
        zero = np.zeros((1, len(self._dims)), dtype=np.int64)
        for m in self.modalities:
            if m in skip:
                continue
            dtypes, shapes, names, indices = [], [], [], []
            for lay in self._arrays(m):
                i = lay.index
                geo, src = self._geometry[m][i], self._sources[m][i]
                lo, hi = self._full_boxes(zero, i, geo)
                size = dict(zip(geo.dims, (hi - lo)[0].tolist(), strict=True))
                out_dims = self._output_dims.get(m) or geo.dims  # "stored": its own order
                dtypes.append(src.dtype)
                shapes.append(tuple(int(size.get(d, 1)) for d in out_dims))
                more = f" and {lay.count - 1} more like it" if lay.count > 1 else ""
                names.append(f"{self._catalog.image_name(i)}{more}")
                indices.append(i)
            if dtypes:
                check_uniform_patches(m, dtypes, shapes, self._output_dims.get(m), names,
                                      where=self._where, indices=indices)

    # -- public API -------------------------------------------------------------------
    @property
    def columns(self) -> list[str]:
        """The table columns each sample holds besides the modalities (see
        ``columns=``)."""
        return list(self._columns.names)

    def add_transform(self, modalities: str | Sequence[str], transform: Transform) -> None:
        """Register a transform, applied after those registered before.

        Parameters
        ----------
        modalities : str or sequence of str
            The modality it receives, or several (``("images", "labels")``):
            the callable then takes and returns that many arrays, in order.
        transform : callable
        """
        key = (modalities,) if isinstance(modalities, str) else tuple(str(m) for m in modalities)
        if not key:
            raise DatasetError("add_transform needs at least one modality")
        unknown = [m for m in key if m not in self.modalities]
        if unknown:
            raise DatasetError(
                f"a transform for {key} names {unknown}, which are not among the dataset's "
                f"modalities {self.modalities}; add them to modalities= or fix the key"
            )
        if not callable(transform):
            raise DatasetError(f"the transform for {key} is a {type(transform).__name__}, not callable")
        self._transforms.append((key, transform))

    def read_stats(self) -> dict[str, Any]:
        """Chunk reading statistics of this process: chunks decoded, cache
        use, and how each opened source is read (``direct``, ``zarr``...)."""
        rt = self._runtime
        modes = {src.name: src.mode for items in self._sources.values() for src in items.built()
                 if src is not None and src.mode is not None}
        if rt is None or rt.pid != os.getpid():
            return {"decoded": 0, "cached_chunks": 0, "cached_bytes": 0, "modes": modes}
        return {"decoded": rt.fetcher.decoded, "cached_chunks": len(rt.fetcher.cache),
                "cached_bytes": rt.fetcher.cache.nbytes, "modes": modes}

    def __repr__(self) -> str:
        return (f"<PatchDataset {self._num_rows} rows, modalities {self.modalities}, "
                f"shuffle={self.shuffle}, next epoch {self.epoch}>")

    def __iter__(self) -> Iterator[Any]:
        shard, epoch, skip, progress = self._begin()
        return self._generate(shard, epoch, skip, progress)
