"""``PatchDataset``: a torch ``IterableDataset`` streaming patches from a
coordinate table.

Each DataLoader worker (and each DDP rank) reads a disjoint, contiguous share
of the table's chunk groups (:mod:`zarrdask.dataset.sharding`), opens its
stores lazily after the fork, decodes every storage chunk once while it
stays in a byte-bounded cache and assembles patches from decoded chunks
(:mod:`zarrdask.dataset.chunks`); labels, masks and extra modalities are read
for the same physical box at their own resolution
(:mod:`zarrdask.dataset.boxes`). No dask graph is built per sample.

This module holds the class and its public API (epochs, resume state,
sharding); option checks live in :mod:`~zarrdask.dataset.options`, the
sources and output layout in :mod:`~zarrdask.dataset.sources`, the shared
epoch state in :mod:`~zarrdask.dataset.epochs` and the read engine in
:mod:`~zarrdask.dataset.reader`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch.utils.data

from ..errors import DatasetError, TableError
from ..table import PatchTable, position_columns, read_table
from .boxes import (
    PAD_MODES,
    Geometry,
)
from .epochs import EpochCounter, iteration_key
from .options import (
    check_choice,
    check_flag,
    check_int,
    check_mapping,
    check_output_dims,
    check_sampling,
    check_state,
    transform_items,
)
from .reader import PatchReader, Runtime
from .sharding import (
    ChunkGroups,
    ShardSpec,
    epoch_groups,
    group_rows,
    sample_rows,
    shard_length,
    shard_range,
    shard_rows,
)
from .sources import (
    check_uniform_patches,
    choose_modalities,
    default_output_dims,
    entry_kind,
    make_sources,
    modality_entries,
)

__all__ = ["PatchDataset"]

_STATE_VERSION = 1

Transform = Callable[..., Any]


class PatchDataset(PatchReader, torch.utils.data.IterableDataset):
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
        demand (0: no threads).
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

    Notes
    -----
    Samples are dicts ``{"images": ndarray, "labels": ..., "position": int64
    (ndims, 2) array of [start, stop) per grid dim in the image's read-level
    pixels (unpadded), "image_id": int}``; torch's default collate batches
    them. Every array is a fresh copy.
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
        read_threads: int = 4,
        return_tuple: bool = False,
        even_shards: bool = True,
        replacement: bool = False,
        weights: str | Sequence[float] | np.ndarray | None = None,
        num_samples: int | None = None,
        storage_options: Mapping[str, Any] | None = None,
        sources: Sequence[Any] | Mapping[str, Sequence[Any]] | None = None,
        output_dims: Mapping[str, str | Sequence[str]] | str | None = None,
        path_map: Mapping[str, str] | None = None,
        _rank: int | None = None,
        _world_size: int | None = None,
    ) -> None:
        super().__init__()
        if isinstance(table_or_path, PatchTable):
            table = table_or_path.with_paths(path_map)
            self.table_path: str | None = None
        elif isinstance(table_or_path, str | os.PathLike):
            self.table_path = os.fspath(table_or_path)
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
        self._hash = table.hash
        self._dims = table.dims
        self._patch = [int(table.patch_size[d]) for d in self._dims]
        self._pad = [int(table.pad.get(d, 0)) for d in self._dims]
        frame = table.frame
        self._image_id = frame["image_id"].to_numpy(dtype=np.int64)
        self._chunk_id = frame["chunk_id"].to_numpy(dtype=np.int64)
        self._positions = np.ascontiguousarray(
            frame[position_columns(self._dims)].to_numpy(dtype=np.int64))
        n_images = len(table.images)
        if len(frame) and (self._image_id.min() < 0 or self._image_id.max() >= n_images):
            raise TableError(
                f"{self._where} has image_id values outside 0..{n_images - 1} (the images listed "
                "in its metadata); the table is inconsistent, rebuild it"
            )
        self._entries = modality_entries(table)
        self.modalities = choose_modalities(self._entries, modalities, where=self._where)
        self._sources = make_sources(table, self._entries, self.modalities, sources,
                                     self.storage_options, where=self._where)
        self._image_geo = [Geometry.from_entry(e, self._dims, where=f"image {i} in {self._where}")
                           for i, e in enumerate(self._entries["images"])]
        self._geometry = {
            m: self._image_geo if m == "images" else
            [Geometry.from_entry(e, self._dims, where=f"{m} entry of image {i} in {self._where}")
             if entry_kind(e) == "array" else None
             for i, e in enumerate(self._entries[m])]
            for m in self.modalities
        }
        self._output_dims = self._resolve_output_dims(output_dims)
        self._transforms: list[tuple[tuple[str, ...], Transform]] = []
        for key, fn in transform_list:
            self.add_transform(key, fn)
        transformed = {m for key, _ in self._transforms for m in key}
        self._check_collatable(skip=transformed)
        self._sampling = check_sampling(frame, weights, replacement, num_samples, where=self._where)
        self._key_stride, self._shared_keys = self._shared_image_chunks()
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
            dims = given.get(m) or default_output_dims(self._geometry[m])
            if dims is not None:
                out[m] = dims
        return out

    def _check_collatable(self, *, skip: set[str]) -> None:
        """Fail now, not in collate, when a modality's patches differ in
        dtype or shape between images (modalities with a transform are left
        to it)."""
        names = [str(e.get("name", "?")) for e in self._entries["images"]]
        zero = np.zeros((1, len(self._dims)), dtype=np.int64)
        for m in self.modalities:
            if m in skip:
                continue
            dtypes, shapes, read = [], [], 0
            for i, geo in enumerate(self._geometry[m]):
                if geo is None or self._sources[m][i] is None:
                    dtypes.append(None)
                    shapes.append(None)
                    continue
                lo, hi = self._full_boxes(zero, i, geo)
                size = dict(zip(geo.dims, (hi - lo)[0].tolist(), strict=True))
                out_dims = self._output_dims.get(m) or geo.dims  # "stored": its own order
                read += 1
                dtypes.append(self._sources[m][i].dtype)
                shapes.append(tuple(int(size.get(d, 1)) for d in out_dims))
            if read:
                check_uniform_patches(m, dtypes, shapes, self._output_dims.get(m), names,
                                      where=self._where)

    # -- public API -------------------------------------------------------------------
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

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the next iteration: the shuffle and the
        sampling draws depend on it.

        It reaches DataLoader workers already running
        (``persistent_workers=True``) through shared memory; call it before
        iterating. Without it, each new iteration reads the epoch after the
        previous one.
        """
        epoch = check_int("epoch", epoch, minimum=0)
        if self._resume is not None and self._resume[0] != epoch:
            self._resume = None
        self._epochs.set(epoch)

    @property
    def epoch(self) -> int:
        """The epoch the next iteration of this reader reads (see
        :meth:`set_epoch`)."""
        if self._resume is not None:
            return self._resume[0]
        return self._epochs.next

    def __len__(self) -> int:
        """Samples this rank yields per epoch (all its DataLoader workers)."""
        rank, world = self._distributed()
        return shard_length(self._total(), ShardSpec(rank, world), even_shards=self.even_shards)

    def state_dict(self) -> dict[str, Any]:
        """The progress of this reader (a DataLoader worker or the main
        process): the epoch in progress and the samples it yielded (after a
        finished epoch: the next epoch, none yielded)."""
        shard = self._shard()
        progress = self._progress
        if progress is not None and progress["generation"] == self._epochs.generation:
            epoch, yielded = progress["epoch"], progress["yielded"]
            if progress["length"] is not None and yielded >= progress["length"]:
                epoch, yielded = epoch + 1, 0
        elif self._resume is not None:
            epoch, yielded = self._resume
        else:
            epoch, yielded = self._epochs.next, 0
        return {
            "version": _STATE_VERSION,
            "epoch": int(epoch),
            "yielded": int(yielded),
            "shard": [shard.rank, shard.world_size, shard.worker, shard.num_workers],
            "seed": self.seed,
            "shuffle": self.shuffle,
            "total": self._total(),
            "table_hash": self._hash,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Resume: the next iteration yields exactly the samples of
        ``state_dict["epoch"]`` that were not yielded yet (later iterations
        read the following epochs).

        Raises
        ------
        DatasetError
            When the state is not one saved by :meth:`state_dict`, or comes
            from another table, seed, shuffle setting, number of workers or
            world size.
        """
        check_state(state_dict)
        shard = self._shard()
        expected = {"seed": self.seed, "shuffle": self.shuffle, "total": self._total(),
                    "table_hash": self._hash,
                    "shard": [shard.rank, shard.world_size, shard.worker, shard.num_workers]}
        for key, value in expected.items():
            if list(np.atleast_1d(state_dict[key])) != list(np.atleast_1d(value)):
                raise DatasetError(
                    f"cannot resume: the saved state has {key}={state_dict[key]!r} but this "
                    f"dataset has {value!r}; resume with the same table, seed, shuffle, "
                    "num_samples, DataLoader num_workers and world size"
                )
        self._resume = (int(state_dict["epoch"]), int(state_dict["yielded"]))
        self._progress = None

    def read_stats(self) -> dict[str, Any]:
        """Chunk reading statistics of this process: chunks decoded, cache
        use, and how each opened source is read (``direct``, ``zarr``...)."""
        rt = self._runtime
        modes = {src.name: src.mode for items in self._sources.values() for src in items
                 if src is not None and src.mode is not None}
        if rt is None or rt.pid != os.getpid():
            return {"decoded": 0, "cached_chunks": 0, "cached_bytes": 0, "modes": modes}
        return {"decoded": rt.fetcher.decoded, "cached_chunks": len(rt.fetcher.cache),
                "cached_bytes": rt.fetcher.cache.nbytes, "modes": modes}

    def __repr__(self) -> str:
        return (f"<PatchDataset {len(self._image_id)} rows, modalities {self.modalities}, "
                f"shuffle={self.shuffle}, next epoch {self.epoch}>")

    # -- pickling ------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_runtime"] = None
        state["_groups_cache"] = None
        state["_progress"] = None
        dist = _torch_distributed()
        if dist is not None:
            state["_captured_dist"] = dist
        return state

    # -- sharding ---------------------------------------------------------------------------
    def _iteration_key(self) -> tuple[int, int]:
        """The key every reader of this DataLoader iteration shares (see
        :mod:`zarrdask.dataset.epochs`); counts this process's iterations."""
        info = torch.utils.data.get_worker_info()
        pool = (int(info.seed) - int(info.id)) if info is not None else ("main", os.getpid())
        seen, count = self._iterations_here
        count = count if seen == pool else 0
        self._iterations_here = (pool, count + 1)
        return iteration_key(None if info is None else int(info.seed),
                             0 if info is None else int(info.id), count)

    def _distributed(self) -> tuple[int, int]:
        if self._forced is not None:
            return int(self._forced[0] or 0), int(self._forced[1] or 1)
        dist = _torch_distributed()
        if dist is not None:
            return dist
        if self._captured_dist is not None:
            return self._captured_dist
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            try:
                return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            except ValueError:
                pass
        return 0, 1

    def _shard(self) -> ShardSpec:
        rank, world = self._distributed()
        info = torch.utils.data.get_worker_info()
        if info is None:
            return ShardSpec(rank, world, 0, 1)
        return ShardSpec(rank, world, int(info.id), int(info.num_workers))

    def _total(self) -> int:
        return self._sampling["num_samples"] if self._sampling else len(self._image_id)

    def _groups(self) -> ChunkGroups:
        if self._groups_cache is None:
            self._groups_cache = group_rows(self._image_id, self._chunk_id)
        return self._groups_cache

    def _epoch_rows(self, shard: ShardSpec, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        groups = self._groups()
        if self._sampling is not None:
            groups = sample_rows(groups, num_samples=self._sampling["num_samples"],
                                 weights=self._sampling["weights"],
                                 replacement=self._sampling["replacement"], seed=self.seed, epoch=epoch)
        order, cum = epoch_groups(groups, shuffle=self.shuffle, seed=self.seed, epoch=epoch)
        start, stop = shard_range(len(groups), shard, even_shards=self.even_shards)
        return shard_rows(groups, order, cum, start, stop)

    # -- iteration --------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        shard, epoch, skip, progress = self._begin()
        return self._generate(shard, epoch, skip, progress)

    def _begin(self) -> tuple[ShardSpec, int, int, dict[str, Any]]:
        """Start an iteration: this reader's shard, the epoch, the samples
        already yielded (after a resume) and the progress record that
        :meth:`state_dict` reads (the caller counts yielded samples in it)."""
        shard = self._shard()
        key = self._iteration_key()
        if self._resume is not None:
            epoch, skip = self._resume
            self._epochs.resume(key, epoch)
        else:
            epoch, skip = self._epochs.start(key), 0
        self._resume = None
        progress = {"epoch": epoch, "yielded": skip, "generation": self._epochs.generation,
                    "length": None}
        self._progress = progress
        return shard, epoch, skip, progress


def _torch_distributed() -> tuple[int, int] | None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return int(dist.get_rank()), int(dist.get_world_size())
    return None
