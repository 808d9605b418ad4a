"""The read engine of :class:`~zarrdask.dataset.PatchDataset`: table rows
to read plans (boxes per modality and the chunks they touch), chunks
fetched and decoded through the per-process :class:`ChunkFetcher` (prefetched
on threads for remote stores), patches assembled, reordered to the output
dims and transformed. No dask graph is built per sample.

:class:`PatchReader` is a mixin: it reads the dataset's state (``_sources``,
``_geometry``, ``_output_dims``, ``_transforms``, ...) that
:class:`~zarrdask.dataset.PatchDataset` sets up.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..errors import DatasetError, TableError
from .boxes import Geometry, modality_boxes, read_level_starts, to_output_dims
from .chunks import ChunkFetcher, box_chunks
from .columns import RowColumns
from .sharding import (
    ShardSpec,
    group_rows,
    partition_groups,
    partition_segments,
    shard_order,
    shard_range,
    shard_rows,
)

__all__ = ["PatchReader", "Runtime", "RowPart"]

#: Rows planned ahead when chunks are prefetched on threads.
LOOKAHEAD_ROWS = 1024
#: Image chunks are keyed ``image_id * CHUNK_KEY_STRIDE + linear chunk
#: index`` (chunk grids of up to 2**40 chunks, 2**23 images in int64).
CHUNK_KEY_STRIDE = 2**40
#: Rows whose plans are computed together (vectorized). Small, so that the
#: Python objects of a block die young: a block of thousands of rows alive
#: until its last row is read moved them into the oldest GC generation and
#: set off a full collection about every 8000 rows (0.3 s each with torch
#: imported; a tenth of the loader's time).
PLAN_BLOCK_ROWS = 256


class PatchReader:
    """Reading one shard of an epoch (mixed into ``PatchDataset``)."""

    # set by PatchDataset.__init__
    _sources: dict[str, list[Any]]
    _runtime: Any

    def _shared_image_chunks(self, part: RowPart) -> np.ndarray:
        """Image chunks that rows of *other* chunk groups of ``part`` also read.

        A row whose image box lies inside one chunk reads only its group's
        chunk; every chunk a straddling (or padded-at-the-border) row reads is
        listed here, as ``image_id * CHUNK_KEY_STRIDE + linear chunk index``
        (sorted). Other chunks can leave the cache as soon as their group is read.
        """
        if "images" not in self._sources or not len(part.image_id):
            return np.zeros(0, dtype=np.int64)
        sources = self._sources["images"]
        stride = CHUNK_KEY_STRIDE
        keys = []
        ids = part.image_id
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
            starts = read_level_starts(part.positions[sel], self._entries["images"][image_id],
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
            linear = np.ravel_multi_index(tuple(idx.T), src.chunk_grid)
            keys.append(np.unique(image_id * stride + linear))
        return np.unique(np.concatenate(keys)) if keys else np.zeros(0, dtype=np.int64)

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


    def _runtime_here(self) -> Runtime:
        rt = self._runtime
        if rt is None or rt.pid != os.getpid():
            if rt is not None:  # inherited through fork: handles and threads are not ours
                for items in self._sources.values():
                    for src in items.built():
                        if src is not None:
                            src.reset()
            rt = Runtime(self.cache_bytes, self.read_threads)
            self._runtime = rt
        return rt

    def _start_epoch(self, shard: ShardSpec, epoch: int, skip: int, progress: dict[str, Any]
                     ) -> tuple[Iterator[_RowPlan], _Releaser] | None:
        """The row plans of one shard of ``epoch`` from sample ``skip`` on, in
        reading order, and the tracker that drops a chunk group's own chunk
        from the cache after its last row; None when nothing is left. Shared
        by the per-sample path (:meth:`_generate`) and the batch loader."""
        if self._folder is not None:
            return self._start_partitioned(shard, epoch, skip, progress)
        rows, group_pos = self._epoch_rows(shard, epoch)
        progress["length"] = len(rows)
        if skip >= len(rows):
            return None
        rt = self._runtime_here()
        blocks = shard_order(rows, group_pos, shuffle=self.shuffle, buffer=self.chunk_buffer,
                             seed=self.seed, epoch=epoch, shard=shard, skip=skip)
        part = self._whole
        plans = self._plans((part, rows[b], group_pos[b]) for b in blocks)
        return plans, _releaser(rt, group_pos, skip, part.shared)

    def _start_partitioned(self, shard: ShardSpec, epoch: int, skip: int,
                           progress: dict[str, Any]) -> tuple[Iterator[_RowPlan], Any] | None:
        """:meth:`_start_epoch` of a table read part by part
        (:class:`zarrdask.table_layout.FolderTable`): only the parts this
        shard reads are loaded, one at a time, when their first row is
        planned."""
        sizes = self._folder.partitions["rows"].to_numpy()
        start, stop = shard_range(int(sizes.sum()), shard, even_shards=self.even_shards)
        progress["length"] = stop - start
        if skip >= stop - start:
            return None
        rt = self._runtime_here()

        def plans() -> Iterator[_RowPlan]:
            done = 0
            segments = partition_segments(sizes, start, stop, shuffle=self.shuffle,
                                          seed=self.seed, epoch=epoch)
            for n, (index, a, b) in enumerate(segments):
                if done + (b - a) <= skip:
                    done += b - a
                    continue
                local_skip = max(0, skip - done)
                done += b - a
                part = self._load_part(index)
                groups = group_rows(part.image_id, part.chunk_id)
                order, cum = partition_groups(groups, part=index, shuffle=self.shuffle,
                                              seed=self.seed, epoch=epoch)
                rows, group_pos = shard_rows(groups, order, cum, a, b)
                releaser = _releaser(rt, group_pos, local_skip, part.shared)
                blocks = shard_order(rows, group_pos, shuffle=self.shuffle,
                                     buffer=self.chunk_buffer, seed=self.seed, epoch=epoch,
                                     shard=shard, skip=local_skip, stream=(index, n))
                for plan in self._plans((part, rows[k], group_pos[k]) for k in blocks):
                    plan.releaser = releaser
                    yield plan

        return plans(), _PlanReleaser()

    def _load_part(self, index: int) -> RowPart:
        """One part of a partitioned table, checked, with its shared chunks."""
        part = RowPart(self._folder.read_partition(index), self._dims)
        part.check(len(self._image_geo), f"part {index} of {self._where}")
        part.shared = self._shared_image_chunks(part)
        if len(self._columns):
            part.columns = RowColumns(part.frame, self._columns.names, self._columns.reserved,
                                      where=f"part {index} of {self._where}")
        return part

    def _generate(self, shard: ShardSpec, epoch: int, skip: int,
                  progress: dict[str, Any]) -> Iterator[Any]:
        started = self._start_epoch(shard, epoch, skip, progress)
        if started is None:
            return
        plans, releaser = started
        rt = self._runtime_here()
        fetcher = rt.fetcher
        max_ahead = self._max_ahead(rt)
        lookahead = LOOKAHEAD_ROWS if self._prefetching(rt) else 1
        window: deque[_RowPlan] = deque()
        ahead = 0
        exhausted = False
        while True:
            while not exhausted and len(window) < lookahead and (ahead < max_ahead or not window):
                plan = next(plans, None)
                if plan is None:
                    exhausted = True
                    break
                self._prefetch_plan(plan, fetcher)
                ahead += plan.started
                window.append(plan)
            if not window:
                return
            plan = window.popleft()
            ahead -= plan.started
            sample = self._assemble(plan, fetcher)
            releaser.done(plan)
            progress["yielded"] += 1
            yield sample

    def _prefetching(self, rt: Runtime) -> bool:
        """Whether chunks are fetched ahead on the fetcher's threads (remote
        sources with ``read_threads > 0``)."""
        return rt.fetcher.pool is not None and any(
            lay.remote for m in self.modalities for lay in self._layouts[m])

    @staticmethod
    def _prefetch_plan(plan: _RowPlan, fetcher: ChunkFetcher) -> None:
        for uid, src, idx in plan.chunks:
            if fetcher.prefetch(uid, src, idx):
                plan.started += 1

    def _max_ahead(self, rt: Runtime) -> int:
        if self.read_threads == 0:
            return 0
        ahead = max(2, 2 * self.read_threads)
        representatives = (self._sources[m][lay.index] for m in self.modalities
                           for lay in self._layouts[m] if lay.kind == "array")
        chunk_bytes = max((int(np.prod(s.chunks)) * s.dtype.itemsize
                           for s in representatives if s is not None), default=1)
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

    def _plans(self, blocks: Iterator[tuple[RowPart, np.ndarray, np.ndarray]]
               ) -> Iterator[_RowPlan]:
        """Row plans, block by block (rows of a part and their groups): boxes are computed for a whole block at
        once; a box that lies inside one chunk and inside the array (the
        common case) is marked with that chunk's index."""
        dims = self._dims
        nd = len(dims)
        patch = np.asarray(self._patch, dtype=np.int64)
        array_mods = [(mi, m) for mi, m in enumerate(self.modalities)
                      if any(lay.kind == "array" for lay in self._layouts[m])]
        stride = CHUNK_KEY_STRIDE
        for part, block, block_groups in _split_blocks(blocks, PLAN_BLOCK_ROWS):
            image_ids = part.image_id[block]
            positions = part.positions[block]
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
            rows = block.tolist()
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
                yield _RowPlan(ids[k], boxes[k], reads, chunks_needed, groups[k], own[k], rows[k],
                               part.columns)

    def _assemble(self, plan: _RowPlan, fetcher: ChunkFetcher, *,
                  out: dict[str, np.ndarray] | None = None, row: int = 0) -> Any:
        """Read, reorder and transform one row's sample.

        With ``out`` (``{modality: (n, ...) array}``, for modalities no
        transform touches), those modalities are written into ``out[m][row]``
        (a box inside one chunk is cropped straight from the cached chunk,
        without an intermediate copy) and the sample holds that view.
        """
        sample: dict[str, Any] = {}
        for m, uid, src, geo, lo, hi, idx in plan.reads:
            target = self._output_dims.get(m)
            dest = None if out is None else out.get(m)
            if idx is not None and dest is not None:
                chunk = fetcher.get(uid, src, idx)
                view = chunk[tuple(slice(a - i * c, b - i * c)
                                   for a, b, i, c in zip(lo, hi, idx, src.chunks, strict=True))]
                if target is not None and target != geo.dims:
                    view = to_output_dims(view, geo.dims, target, modality=m)
                sample[m] = _write_row(dest, row, view, m)
                continue
            if idx is not None:
                arr = fetcher.read_in_chunk(uid, src, lo, hi, idx)
            else:
                arr = fetcher.read(uid, src, lo, hi, valid_lo=geo.valid_start,
                                   valid_hi=geo.valid_stop, padding_mode=self.padding_mode)
            if target is not None and target != geo.dims:
                arr = to_output_dims(arr, geo.dims, target, modality=m)
                if dest is None:
                    arr = np.ascontiguousarray(arr)
            sample[m] = arr if dest is None else _write_row(dest, row, arr, m)
        for m in self.modalities:
            if m not in sample:
                weak = np.asarray(self._entries[m][plan.image_id]["weak"])
                dest = None if out is None else out.get(m)
                sample[m] = weak if dest is None else _write_row(dest, row, weak, m)
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
        extra = plan.columns.sample(plan.row) if plan.columns is not None else []
        if self.return_tuple:
            return (*(sample[m] for m in self.modalities), *extra)
        sample["position"] = plan.position
        sample["image_id"] = plan.image_id
        sample.update(zip(self._columns.names, extra, strict=True))
        return sample



def _split_blocks(blocks: Iterator[tuple[RowPart, np.ndarray, np.ndarray]], size: int
                  ) -> Iterator[tuple[RowPart, np.ndarray, np.ndarray]]:
    """The blocks of rows cut into blocks of at most ``size`` rows."""
    for part, block, groups in blocks:
        for a in range(0, len(block), size):
            yield part, block[a:a + size], groups[a:a + size]


def _write_row(dest: np.ndarray, row: int, arr: np.ndarray, modality: str) -> np.ndarray:
    """Copy ``arr`` into ``dest[row]`` (a batch array) and return that view."""
    if arr.shape != dest.shape[1:] or arr.dtype != dest.dtype:
        raise DatasetError(
            f"a {modality} patch of shape {arr.shape} and dtype {arr.dtype} does not fit the "
            f"batch of {dest.shape[1:]} {dest.dtype} patches; every sample of a batch must have "
            "the same shape and dtype (choose output_dims, or resize in a transform)"
        )
    view = dest[row, ...]  # an array view also for 0-d patches (weak values)
    np.copyto(view, arr)
    return view


class RowPart:
    """The rows of a table, or of one part of a partitioned table, as the
    reader uses them: the pandas frame and its ``image_id``, ``chunk_id``
    and position columns as int64 arrays.

    Parameters
    ----------
    frame : pandas.DataFrame
        The rows (table order).
    dims : sequence of str
        The grid's spatial dims.
    """

    __slots__ = ("frame", "image_id", "chunk_id", "positions", "shared", "columns")

    def __init__(self, frame: Any, dims: Sequence[str]) -> None:
        from ..table import position_columns

        self.frame = frame
        self.image_id = frame["image_id"].to_numpy(dtype=np.int64)
        self.chunk_id = frame["chunk_id"].to_numpy(dtype=np.int64)
        self.positions = np.ascontiguousarray(frame[position_columns(dims)].to_numpy(dtype=np.int64))
        self.shared = np.zeros(0, dtype=np.int64)
        #: the ``columns=`` values of these rows (:class:`RowColumns`), None without
        self.columns: RowColumns | None = None

    def __len__(self) -> int:
        return len(self.image_id)

    def check(self, n_images: int, where: str) -> None:
        """Raise a :class:`TableError` when an ``image_id`` names no image."""
        if len(self) and (self.image_id.min() < 0 or self.image_id.max() >= n_images):
            raise TableError(
                f"{where} has image_id values outside 0..{n_images - 1} (the images listed "
                "in its metadata); the table is inconsistent, rebuild it"
            )


def _releaser(rt: Runtime, group_pos: np.ndarray, skip: int, shared: np.ndarray) -> _Releaser:
    # rows left per chunk group: a group's own image chunk leaves the cache
    # with its last row unless rows of other groups read it too
    remaining = np.bincount(group_pos - group_pos[0]) if skip == 0 else None
    return _Releaser(rt.fetcher, remaining, int(group_pos[0]), shared)


class _PlanReleaser:
    """Hands each plan to the :class:`_Releaser` of its part."""

    @staticmethod
    def done(plan: _RowPlan) -> None:
        plan.releaser.done(plan)

    @staticmethod
    def done_many(plans: Sequence[_RowPlan]) -> None:
        for plan in plans:
            plan.releaser.done(plan)


class _RowPlan:
    """One row to read: its boxes per modality and the chunks they touch."""

    __slots__ = ("image_id", "position", "reads", "chunks", "started", "group", "own", "row",
                 "columns", "releaser")

    def __init__(self, image_id: int, position: np.ndarray, reads: list, chunks: list,
                 group: int, own: tuple | None, row: int, columns: RowColumns | None) -> None:
        self.row = row  # the row in its part's frame
        self.columns = columns  # the part's columns= values (None: no columns asked)
        self.group = group
        self.own = own
        self.image_id = image_id
        self.position = position
        self.reads = reads
        self.chunks = chunks
        self.started = 0
        self.releaser: _Releaser | None = None


class _Releaser:
    """Counts the rows left per chunk group and drops a group's own image
    chunk from the cache once its last row is assembled (unless rows of other
    groups read it too). Thread-safe: batch threads report rows in any order.
    Without counts (a resumed epoch) chunks leave by LRU eviction only."""

    def __init__(self, fetcher: ChunkFetcher, remaining: np.ndarray | None, first_group: int,
                 shared: np.ndarray) -> None:
        self._fetcher = fetcher
        self._remaining = remaining
        self._first = first_group
        self._shared = shared
        self._lock = threading.Lock()

    def done(self, plan: _RowPlan) -> None:
        """Record that ``plan``'s row has been assembled."""
        self.done_many((plan,))

    def done_many(self, plans: Sequence[_RowPlan]) -> None:
        """Record that the rows of ``plans`` have been assembled."""
        if self._remaining is None:
            return
        last = []
        with self._lock:
            for plan in plans:
                if plan.own is not None:
                    g = plan.group - self._first
                    self._remaining[g] -= 1
                    if self._remaining[g] == 0:
                        last.append(plan.own)
        for uid, idx, key in last:
            pos = np.searchsorted(self._shared, key)
            if pos == len(self._shared) or self._shared[pos] != key:
                self._fetcher.release(uid, idx)


class Runtime:
    """Per-process reading state: the chunk fetcher (cache and threads)."""

    def __init__(self, cache_bytes: int, read_threads: int) -> None:
        self.pid = os.getpid()
        self.fetcher = ChunkFetcher(cache_bytes=cache_bytes, threads=read_threads)
        self.warned = False


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
