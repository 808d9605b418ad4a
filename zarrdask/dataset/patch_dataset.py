"""``PatchDataset``: a torch ``IterableDataset`` streaming patches from a
coordinate table.

Each DataLoader worker (and each DDP rank) reads a disjoint, contiguous share
of the table's chunk groups (:mod:`zarrdask.dataset.sharding`), opens its
stores lazily after the fork, decodes every storage chunk once while it
stays in a byte-bounded cache and assembles patches from decoded chunks
(:mod:`zarrdask.dataset.chunks`); labels, masks and extra modalities are read
for the same physical box at their own resolution
(:mod:`zarrdask.dataset.boxes`). No dask graph is built per sample.
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch.utils.data

from ..errors import DatasetError, TableError
from ..io.recipe import ArrayRecipe
from ..table import PatchTable, position_columns, read_table
from .boxes import (
    PAD_MODES,
    Geometry,
    modality_boxes,
    parse_output_dims,
    read_level_starts,
    to_output_dims,
)
from .chunks import ArraySource, ChunkFetcher, box_chunks
from .sharding import (
    ChunkGroups,
    ShardSpec,
    epoch_groups,
    group_rows,
    sample_rows,
    shard_length,
    shard_order,
    shard_range,
    shard_rows,
)

__all__ = ["PatchDataset"]

_STATE_VERSION = 1
_LOOKAHEAD_ROWS = 1024

Transform = Callable[..., Any]


class _OpenImageRecipe:
    """Reopen an image through :func:`zarrdask.open_image` when the table
    records only its ``open`` arguments."""

    reader = "open"
    key = None

    def __init__(self, open_args: Mapping[str, Any], storage_options: Mapping[str, Any]) -> None:
        self.open_args = dict(open_args)
        self.location = self.open_args.get("source")
        self.storage_options = dict(storage_options)

    def open(self) -> Any:
        from ..io import open_image

        kwargs = {k: self.open_args.get(k) for k in ("axes", "data_group", "level")
                  if self.open_args.get(k) is not None}
        image = open_image(self.location, storage_options=self.storage_options, **kwargs)
        return image.attrs["recipe"].open()


def _has_redacted(options: Any) -> bool:
    if isinstance(options, Mapping):
        return any(_has_redacted(v) for v in options.values())
    return options == "***"


def _in_memory_object(obj: Any) -> Any:
    """The full stored array behind an in-memory source (DataArray or array)."""
    import xarray as xr

    if isinstance(obj, xr.DataArray):
        recipe = obj.attrs.get("recipe")
        if recipe is not None and recipe.obj is not None:
            return recipe.obj
        return obj.data
    return obj


def _entry_kind(entry: Any) -> str:
    if entry is None:
        return "none"
    if isinstance(entry, Mapping) and "weak" in entry:
        return "weak"
    if isinstance(entry, Mapping) and "dims" in entry and "shape" in entry:
        return "array"
    return "other"


class PatchDataset(torch.utils.data.IterableDataset):
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
        Seeded, chunk-aware shuffling that changes with :meth:`set_epoch`.
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
        (as ``DistributedSampler`` does); without it ranks differ by at most one.
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
    output_dims : mapping, optional
        ``{modality: "yxc"}``: the dim order of each output; missing letters
        become size-1 dims. Default: the stored order.
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
        even_shards: bool = False,
        replacement: bool = False,
        weights: str | Sequence[float] | np.ndarray | None = None,
        num_samples: int | None = None,
        storage_options: Mapping[str, Any] | None = None,
        sources: Sequence[Any] | Mapping[str, Sequence[Any]] | None = None,
        output_dims: Mapping[str, str | Sequence[str]] | None = None,
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
        if padding_mode not in PAD_MODES:
            raise DatasetError(
                f"padding_mode={padding_mode!r} is unknown; use one of {', '.join(PAD_MODES)}"
            )
        if int(chunk_buffer) < 1:
            raise DatasetError(f"chunk_buffer={chunk_buffer} must be at least 1 (1 = draw_same_chunk)")
        if int(cache_bytes) < 0 or int(read_threads) < 0:
            raise DatasetError(
                f"cache_bytes={cache_bytes} and read_threads={read_threads} must not be negative"
            )
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.chunk_buffer = int(chunk_buffer)
        self.padding_mode = padding_mode
        self.cache_bytes = int(cache_bytes)
        self.read_threads = int(read_threads)
        self.return_tuple = bool(return_tuple)
        self.even_shards = bool(even_shards)
        self.storage_options = dict(storage_options) if storage_options is not None else None
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
        self._entries = self._modality_entries(table)
        self.modalities = self._choose_modalities(modalities)
        self._sources = self._make_sources(table, sources)
        self._image_geo = [Geometry.from_entry(e, self._dims, where=f"image {i} in {self._where}")
                           for i, e in enumerate(self._entries["images"])]
        self._geometry = {
            m: self._image_geo if m == "images" else
            [Geometry.from_entry(e, self._dims, where=f"{m} entry of image {i} in {self._where}")
             if _entry_kind(e) == "array" else None
             for i, e in enumerate(self._entries[m])]
            for m in self.modalities
        }
        self._output_dims = self._check_output_dims(output_dims)
        self._transforms: list[tuple[tuple[str, ...], Transform]] = []
        for key, fn in self._iter_transforms(transforms):
            self.add_transform(key, fn)
        self._sampling = self._check_sampling(frame, weights, replacement, num_samples)
        self._key_stride, self._shared_keys = self._shared_image_chunks()
        self._forced = (_rank, _world_size) if _rank is not None or _world_size is not None else None
        if self._forced is not None:
            ShardSpec(int(_rank or 0), int(_world_size or 1))
        self._captured_dist: tuple[int, int] | None = None
        self._epoch = 0
        self._resume: tuple[int, int] | None = None
        self._progress: dict[str, Any] | None = None
        self._runtime: _Runtime | None = None
        self._groups_cache: ChunkGroups | None = None

    # -- construction helpers -------------------------------------------------------
    @staticmethod
    def _modality_entries(table: PatchTable) -> dict[str, list[Any]]:
        mods = dict(table.meta.get("modalities") or {})
        mods.setdefault("images", table.images)
        n = len(table.images)
        out = {}
        for name, entries in mods.items():
            entries = list(entries) if isinstance(entries, list | tuple) else [entries] * n
            if len(entries) != n:
                raise TableError(
                    f"the table's modality {name!r} lists {len(entries)} entries for {n} images; "
                    "rebuild the table"
                )
            out[str(name)] = entries
        return out

    def _choose_modalities(self, modalities: Sequence[str] | None) -> list[str]:
        entries = self._entries
        if modalities is None:
            chosen = ["images"]
            for name, items in entries.items():
                if name in ("images", "masks"):
                    continue
                if items and all(_entry_kind(e) in ("array", "weak") for e in items):
                    chosen.append(name)
            return chosen
        if isinstance(modalities, str):
            modalities = [modalities]
        chosen = [str(m) for m in modalities]
        if len(set(chosen)) != len(chosen):
            raise DatasetError(f"modalities={chosen} names a modality twice; list each once")
        for name in chosen:
            if name not in entries:
                raise DatasetError(
                    f"modalities asks for {name!r} but {self._where} has only "
                    f"{sorted(entries)}; build the table with that modality (e.g. labels=...) or "
                    "drop it from modalities"
                )
            for i, e in enumerate(entries[name]):
                kind = _entry_kind(e)
                if kind in ("array", "weak"):
                    continue
                what = "none" if kind == "none" else f"{e!r} (computed, not stored)"
                raise DatasetError(
                    f"modality {name!r} of image {i} in {self._where} is {what}, so it cannot be "
                    f"read; drop {name!r} from modalities or rebuild the table with a stored "
                    f"{name} source for every image"
                )
        return chosen

    def _make_sources(self, table: PatchTable, sources: Any) -> dict[str, list[ArraySource | None]]:
        if sources is None:
            given: dict[str, list[Any]] = {"images": list(table.sources)}
        elif isinstance(sources, Mapping):
            given = {str(k): list(v) for k, v in sources.items()}
            given.setdefault("images", list(table.sources))
        else:
            given = {"images": list(sources)}
        n = len(table.images)
        for name, objs in given.items():
            if len(objs) != n:
                raise DatasetError(
                    f"sources for {name!r} has {len(objs)} entries but {self._where} lists {n} "
                    "images; pass one per image (None where the table can reopen it)"
                )
        out: dict[str, list[ArraySource | None]] = {}
        for name in self.modalities:
            items = []
            for i, entry in enumerate(self._entries[name]):
                if _entry_kind(entry) != "array":
                    items.append(None)
                    continue
                obj = given.get(name, [None] * n)[i]
                items.append(self._source(name, i, entry, obj))
            out[name] = items
        return out

    def _source(self, name: str, index: int, entry: Mapping[str, Any], obj: Any) -> ArraySource:
        dims = list(entry["dims"])
        shape = [int(entry["shape"][d]) for d in dims]
        chunks = [int((entry.get("chunks") or {}).get(d, s) or s) for d, s in zip(dims, shape, strict=True)]
        label = f"{name} of image {index} ({entry.get('name', '?')})"
        if obj is not None:
            return ArraySource(name=label, shape=shape, chunks=chunks, dtype=entry.get("dtype", "uint8"),
                               obj=_in_memory_object(obj))
        array = entry.get("array") or {}
        open_args = entry.get("open") or {}
        location = array.get("location") or open_args.get("source")
        if location is None or array.get("reader") == "memory":
            raise DatasetError(
                f"{label} was an in-memory array when the table was built and "
                f"{self._where} keeps no pixels; pass sources=[...] (or sources={{{name!r}: [...]}}) "
                "to PatchDataset with the array of every in-memory image"
            )
        stored = array.get("storage_options") if array else open_args.get("storage_options")
        if self.storage_options is not None:
            options = self.storage_options
        else:
            if _has_redacted(stored):
                raise DatasetError(
                    f"{label} at {location} needs credentials that the table stores redacted "
                    "('***'); pass storage_options=... to PatchDataset"
                )
            options = dict(stored or {})
        if array:
            recipe: Any = ArrayRecipe(array.get("reader", "zarr"), location, array.get("key"), options)
        else:
            recipe = _OpenImageRecipe(open_args, options)
        return ArraySource(name=f"{label} at {recipe.location}" + (f" [{recipe.key}]" if recipe.key else ""),
                           shape=shape, chunks=chunks, dtype=entry.get("dtype", "uint8"), recipe=recipe)

    def _check_output_dims(self, output_dims: Mapping[str, Any] | None) -> dict[str, tuple[str, ...]]:
        out = {}
        for name, spec in (output_dims or {}).items():
            if name not in self.modalities:
                raise DatasetError(
                    f"output_dims names {name!r}, which is not among the modalities "
                    f"{self.modalities}; use one of those"
                )
            dims = parse_output_dims(spec)
            if len(set(dims)) != len(dims):
                raise DatasetError(f"output_dims[{name!r}]={spec!r} repeats a dim; name each once")
            out[name] = dims
        return out

    @staticmethod
    def _iter_transforms(transforms: Any) -> list[tuple[Any, Transform]]:
        if transforms is None:
            return []
        if callable(transforms) and not isinstance(transforms, Mapping):
            return [("images", transforms)]
        if isinstance(transforms, Mapping):
            return list(transforms.items())
        return [tuple(item) for item in transforms]

    def _check_sampling(self, frame: Any, weights: Any, replacement: bool,
                        num_samples: int | None) -> dict[str, Any] | None:
        n = len(frame)
        if weights is None and not replacement and num_samples is None:
            return None
        w = None
        if weights is not None:
            if isinstance(weights, str):
                if weights not in frame.columns:
                    raise DatasetError(
                        f"weights={weights!r} is not a column of {self._where} (columns: "
                        f"{list(frame.columns)}); pass a column name or an array"
                    )
                w = frame[weights].to_numpy(dtype=np.float64)
            else:
                w = np.asarray(weights, dtype=np.float64).ravel()
            if len(w) != n:
                raise DatasetError(
                    f"weights has {len(w)} values but the table has {n} rows; pass one per row"
                )
            if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
                raise DatasetError(
                    "weights must be finite, non-negative and not all zero; check the column/array"
                )
        total = n if num_samples is None else int(num_samples)
        if total < 0:
            raise DatasetError(f"num_samples={num_samples} must not be negative")
        if not replacement:
            nonzero = n if w is None else int(np.count_nonzero(w))
            if total > nonzero:
                raise DatasetError(
                    f"num_samples={total} exceeds the {nonzero} rows that can be drawn without "
                    "replacement; pass replacement=True or a smaller num_samples"
                )
        return {"weights": w, "replacement": bool(replacement), "num_samples": total}

    def _shared_image_chunks(self) -> tuple[int, np.ndarray]:
        """Image chunks that rows of *other* chunk groups also read.

        A row whose image box lies inside one chunk reads only its group's
        chunk; every chunk a straddling (or padded-at-the-border) row reads is
        listed here, as ``image_id * stride + linear chunk index`` (sorted).
        Other chunks can leave the cache as soon as their group is read.
        """
        sources = self._sources.get("images") or [None] * len(self._image_geo)
        grids = [src.chunk_grid if src is not None else (1,) for src in sources]
        stride = max([int(np.prod(g)) for g in grids] + [1])
        if "images" not in self._sources or not len(self._image_id):
            return stride, np.zeros(0, dtype=np.int64)
        keys = []
        ids = self._image_id
        if np.all(ids[1:] >= ids[:-1]):  # tables from build_table: contiguous slices
            cuts = np.concatenate([[0], np.flatnonzero(np.diff(ids)) + 1, [len(ids)]])
            selections: Iterator[Any] = (slice(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True))
        else:
            order = np.argsort(ids, kind="stable")
            selections = iter(np.split(order, np.flatnonzero(np.diff(ids[order])) + 1))
        for sel in selections:
            image_id = int(ids[sel][0])
            src = sources[image_id]
            if src is None:
                continue
            geo = self._image_geo[image_id]
            starts = read_level_starts(self._positions[sel], self._entries["images"][image_id],
                                       self._dims)
            lo, hi = self._full_boxes(starts, image_id, geo)
            _, simple = _single_chunk(lo, hi, geo, src.chunks)
            if simple.all():
                continue
            vlo, vhi = np.asarray(geo.valid_start), np.asarray(geo.valid_stop)
            chunks = np.asarray(src.chunks, dtype=np.int64)
            lo = np.clip(lo[~simple], vlo, vhi - 1)
            hi = np.clip(hi[~simple], vlo + 1, vhi)
            first, last = lo // chunks, (hi - 1) // chunks
            idx = first
            for d in range(idx.shape[1]):  # expand the chunk ranges, one dim at a time
                span = last[:, d] - first[:, d] + 1
                rep = np.repeat(np.arange(len(idx)), span)
                offset = np.arange(len(rep)) - np.repeat(np.cumsum(span) - span, span)
                idx, first, last = idx[rep].copy(), first[rep], last[rep]
                idx[:, d] = first[:, d] + offset
            linear = np.ravel_multi_index(tuple(idx.T), grids[image_id])
            keys.append(np.unique(image_id * stride + linear))
        shared = np.unique(np.concatenate(keys)) if keys else np.zeros(0, dtype=np.int64)
        return stride, shared

    def _full_boxes(self, starts: np.ndarray, image_id: int, geo: Geometry
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Boxes over every stored dim of ``geo`` for rows starting at
        ``starts`` (image read-level pixels): grid dims from the padded
        physical box, other dims whole."""
        mstart, msize = modality_boxes(starts, self._patch, self._pad, self._image_geo[image_id], geo)
        lo = np.zeros((len(starts), len(geo.dims)), dtype=np.int64)
        hi = np.tile(np.asarray(geo.shape, dtype=np.int64), (len(starts), 1))
        axes = list(geo.grid_axes)
        lo[:, axes] = mstart
        hi[:, axes] = mstart + msize
        return lo, hi


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
        """Select the epoch: the shuffle and the sampling draws depend on it."""
        epoch = int(epoch)
        if epoch != self._epoch:
            self._resume = None
            self._progress = None
        self._epoch = epoch

    @property
    def epoch(self) -> int:
        """The current epoch (see :meth:`set_epoch`)."""
        return self._epoch

    def __len__(self) -> int:
        """Samples this rank yields per epoch (all its DataLoader workers)."""
        rank, world = self._distributed()
        return shard_length(self._total(), ShardSpec(rank, world), even_shards=self.even_shards)

    def state_dict(self) -> dict[str, Any]:
        """The progress of this reader (a DataLoader worker or the main
        process) in the current epoch."""
        shard = self._shard()
        yielded = 0
        if self._progress is not None and self._progress["epoch"] == self._epoch:
            yielded = self._progress["yielded"]
        elif self._resume is not None and self._resume[0] == self._epoch:
            yielded = self._resume[1]
        return {
            "version": _STATE_VERSION,
            "epoch": self._epoch,
            "yielded": int(yielded),
            "shard": [shard.rank, shard.world_size, shard.worker, shard.num_workers],
            "seed": self.seed,
            "shuffle": self.shuffle,
            "total": self._total(),
            "table_hash": self._hash,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Resume: the next iteration yields exactly the samples of
        ``state_dict["epoch"]`` that were not yielded yet.

        Raises
        ------
        DatasetError
            When the state comes from another table, seed, shuffle setting,
            number of workers or world size.
        """
        shard = self._shard()
        expected = {"seed": self.seed, "shuffle": self.shuffle, "total": self._total(),
                    "table_hash": self._hash,
                    "shard": [shard.rank, shard.world_size, shard.worker, shard.num_workers]}
        for key, value in expected.items():
            if key in state_dict and list(np.atleast_1d(state_dict[key])) != list(np.atleast_1d(value)):
                raise DatasetError(
                    f"cannot resume: the saved state has {key}={state_dict[key]!r} but this "
                    f"dataset has {value!r}; resume with the same table, seed, shuffle, "
                    "num_samples, DataLoader num_workers and world size"
                )
        self._epoch = int(state_dict["epoch"])
        self._resume = (self._epoch, int(state_dict["yielded"]))
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
                f"shuffle={self.shuffle}, epoch {self._epoch}>")

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
        shard = self._shard()
        epoch = self._epoch
        skip = 0
        if self._resume is not None and self._resume[0] == epoch:
            skip = self._resume[1]
        self._resume = None
        progress = {"epoch": epoch, "yielded": skip}
        self._progress = progress
        return self._generate(shard, epoch, skip, progress)

    def _runtime_here(self) -> _Runtime:
        rt = self._runtime
        if rt is None or rt.pid != os.getpid():
            if rt is not None:  # inherited through fork: handles and threads are not ours
                for items in self._sources.values():
                    for src in items:
                        if src is not None:
                            src.reset()
            rt = _Runtime(self.cache_bytes, self.read_threads)
            self._runtime = rt
        return rt

    def _generate(self, shard: ShardSpec, epoch: int, skip: int,
                  progress: dict[str, Any]) -> Iterator[Any]:
        rows, group_pos = self._epoch_rows(shard, epoch)
        if skip >= len(rows):
            return
        rt = self._runtime_here()
        blocks = shard_order(rows, group_pos, shuffle=self.shuffle, buffer=self.chunk_buffer,
                             seed=self.seed, epoch=epoch, shard=shard, skip=skip)
        plans = self._plans((rows[b], group_pos[b]) for b in blocks)
        # rows left per chunk group: a group's own image chunk leaves the cache
        # with its last row unless rows of other groups read it too
        remaining = np.bincount(group_pos - group_pos[0]) if skip == 0 else None
        first_group = int(group_pos[0])
        shared = self._shared_keys
        fetcher = rt.fetcher
        max_ahead = self._max_ahead(rt)
        prefetching = rt.fetcher.pool is not None and any(
            src is not None and src.remote for items in self._sources.values() for src in items)
        lookahead = _LOOKAHEAD_ROWS if prefetching else 1
        window: deque[_RowPlan] = deque()
        ahead = 0
        exhausted = False
        while True:
            while not exhausted and len(window) < lookahead and (ahead < max_ahead or not window):
                plan = next(plans, None)
                if plan is None:
                    exhausted = True
                    break
                for uid, src, idx in plan.chunks:
                    if fetcher.prefetch(uid, src, idx):
                        plan.started += 1
                ahead += plan.started
                window.append(plan)
            if not window:
                return
            plan = window.popleft()
            ahead -= plan.started
            sample = self._assemble(plan, fetcher)
            if remaining is not None and plan.own is not None:
                g = plan.group - first_group
                remaining[g] -= 1
                if remaining[g] == 0:
                    uid, idx, key = plan.own
                    pos = np.searchsorted(shared, key)
                    if pos == len(shared) or shared[pos] != key:
                        fetcher.release(uid, idx)
            progress["yielded"] += 1
            yield sample

    def _max_ahead(self, rt: _Runtime) -> int:
        if self.read_threads == 0:
            return 0
        ahead = max(2, 2 * self.read_threads)
        chunk_bytes = max((int(np.prod(s.chunks)) * s.dtype.itemsize
                           for items in self._sources.values() for s in items if s is not None),
                          default=1)
        capacity = self.cache_bytes // max(1, chunk_bytes)
        need = ahead + (self.chunk_buffer if self.shuffle else 1) + 1
        if capacity < need and not rt.warned:
            rt.warned = True
            warnings.warn(
                f"cache_bytes={self.cache_bytes} holds {capacity} decoded chunks of {chunk_bytes} "
                f"bytes but reading needs about {need} (chunk_buffer + prefetch); chunks will be "
                "decoded more than once. Raise cache_bytes or lower chunk_buffer/read_threads",
                stacklevel=3,
            )
        return max(1, min(ahead, capacity // 2))

    def _plans(self, blocks: Iterator[tuple[np.ndarray, np.ndarray]]) -> Iterator[_RowPlan]:
        """Row plans, block by block: boxes are computed for a whole block at
        once; a box that lies inside one chunk and inside the array (the
        common case) is marked with that chunk's index."""
        dims = self._dims
        nd = len(dims)
        patch = np.asarray(self._patch, dtype=np.int64)
        array_mods = [(mi, m) for mi, m in enumerate(self.modalities)
                      if any(s is not None for s in self._sources[m])]
        stride = self._key_stride
        for block, block_groups in blocks:
            image_ids = self._image_id[block]
            positions = self._positions[block]
            n = len(block)
            starts = np.empty_like(positions)
            per_mod: dict[str, list[Any]] = {m: [None] * n for _, m in array_mods}
            own: list[Any] = [None] * n
            for image_id in np.unique(image_ids):
                image_id = int(image_id)
                sel = np.flatnonzero(image_ids == image_id)
                s = read_level_starts(positions[sel], self._entries["images"][image_id], dims)
                starts[sel] = s
                for mi, m in array_mods:
                    src = self._sources[m][image_id]
                    if src is None:
                        continue
                    src.open()
                    geo = self._geometry[m][image_id]
                    lo, hi = self._full_boxes(s, image_id, geo)
                    first, simple = _single_chunk(lo, hi, geo, src.chunks)
                    uid = (mi, image_id)
                    lo_l, hi_l, first_l = lo.tolist(), hi.tolist(), first.tolist()
                    if m == "images":
                        grid = src.chunk_grid
                        keys = (image_id * stride
                                + np.ravel_multi_index(tuple(np.clip(first, 0, np.asarray(grid) - 1).T),
                                                       grid)).tolist()
                    for j, k in enumerate(sel.tolist()):
                        idx = tuple(first_l[j]) if simple[j] else None
                        per_mod[m][k] = (m, uid, src, geo, lo_l[j], hi_l[j], idx)
                        if m == "images" and idx is not None:
                            own[k] = (uid, idx, keys[j])
            boxes = np.stack([starts, starts + patch], axis=-1).reshape(n, nd, 2)
            ids = image_ids.tolist()
            groups = block_groups.tolist()
            for k in range(n):
                reads = [per_mod[m][k] for _, m in array_mods if per_mod[m][k] is not None]
                chunks_needed = []
                for _m, uid, src, geo, lo_k, hi_k, idx in reads:
                    if idx is not None:
                        chunks_needed.append((uid, src, idx))
                    else:
                        chunks_needed.extend(
                            (uid, src, c) for c in box_chunks(src, lo_k, hi_k, geo.valid_start,
                                                              geo.valid_stop, self.padding_mode))
                yield _RowPlan(ids[k], boxes[k], reads, chunks_needed, groups[k], own[k])

    def _assemble(self, plan: _RowPlan, fetcher: ChunkFetcher) -> Any:
        sample: dict[str, Any] = {}
        for m, uid, src, geo, lo, hi, idx in plan.reads:
            if idx is not None:
                arr = fetcher.read_in_chunk(uid, src, lo, hi, idx)
            else:
                arr = fetcher.read(uid, src, lo, hi, valid_lo=geo.valid_start,
                                   valid_hi=geo.valid_stop, padding_mode=self.padding_mode)
            if m in self._output_dims:
                arr = to_output_dims(arr, geo.dims, self._output_dims[m], modality=m)
            sample[m] = arr
        for m in self.modalities:
            if m not in sample:
                sample[m] = np.asarray(self._entries[m][plan.image_id]["weak"])
        for key, fn in self._transforms:
            if len(key) == 1:
                sample[key[0]] = fn(sample[key[0]])
                continue
            result = fn(*(sample[m] for m in key))
            if not isinstance(result, tuple | list) or len(result) != len(key):
                raise DatasetError(
                    f"the transform registered for {key} returned "
                    f"{type(result).__name__}; it must return {len(key)} arrays, one per modality"
                )
            for m, value in zip(key, result, strict=True):
                sample[m] = value
        if self.return_tuple:
            return tuple(sample[m] for m in self.modalities)
        sample["position"] = plan.position
        sample["image_id"] = plan.image_id
        return sample


class _RowPlan:
    """One row to read: its boxes per modality and the chunks they touch."""

    __slots__ = ("image_id", "position", "reads", "chunks", "started", "group", "own")

    def __init__(self, image_id: int, position: np.ndarray, reads: list, chunks: list,
                 group: int, own: tuple | None) -> None:
        self.group = group
        self.own = own
        self.image_id = image_id
        self.position = position
        self.reads = reads
        self.chunks = chunks
        self.started = 0


class _Runtime:
    """Per-process reading state: the chunk fetcher (cache and threads)."""

    def __init__(self, cache_bytes: int, read_threads: int) -> None:
        self.pid = os.getpid()
        self.fetcher = ChunkFetcher(cache_bytes=cache_bytes, threads=read_threads)
        self.warned = False


def _torch_distributed() -> tuple[int, int] | None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return int(dist.get_rank()), int(dist.get_world_size())
    return None


def _single_chunk(lo: np.ndarray, hi: np.ndarray, geo: Geometry, chunks: Sequence[int]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """First chunk index of each box, and whether the box lies inside one
    chunk and inside the readable region."""
    chunks_a = np.asarray(chunks, dtype=np.int64)
    first = lo // chunks_a
    simple = (np.all(lo >= np.asarray(geo.valid_start), axis=1)
              & np.all(hi <= np.asarray(geo.valid_stop), axis=1)
              & np.all(first == (hi - 1) // chunks_a, axis=1))
    return first, simple
