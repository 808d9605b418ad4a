"""``PatchLoader``: ready batches built by a thread pool in the consuming
process, on the read engine of :class:`~zarrdask.dataset.PatchDataset`.

The loader owns a :class:`PatchDataset` and uses its parts unchanged: the
epoch order, sharding and resume state (:meth:`PatchDataset._begin`), the
row plans and chunk release (:meth:`~zarrdask.dataset.reader.PatchReader._start_epoch`)
and the per-row assembly and transforms
(:meth:`~zarrdask.dataset.reader.PatchReader._assemble`). What it adds is
the batching: the consumer's thread cuts the epoch's row plans into batches
of ``batch_size`` rows, and each batch is read, transformed and stacked by
one pool thread; batches are handed out in order, so the output does not
depend on the number of threads. No per-sample transport, no
shared-memory segment per batch: decoding (Blosc, zstd, JPEG release the
GIL) runs on every core of the process.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
import torch.utils.data
from torch.utils.data import default_collate

from ..table import PatchTable
from .allocator import keep_freed_buffers
from .options import check_flag, check_int
from .patch_dataset import PatchDataset
from .reader import LOOKAHEAD_ROWS

__all__ = ["PatchLoader", "collate_samples"]

#: Name prefix of the pool threads (tests look for leftovers by it).
THREAD_PREFIX = "zarrdask-loader"


class PatchLoader(torch.utils.data.IterableDataset):
    """Ready batches of a coordinate table, read by threads in this process.

    Parameters
    ----------
    table_or_path : PatchTable, str or path
        A coordinate table or the path of one written with
        :meth:`PatchTable.to_parquet`.
    batch_size : int
        Samples per batch.
    threads : int, optional
        Threads that fetch, decode, crop, transform and stack batches.
        Default: the cores available to this process (1 inside a
        DataLoader worker).
    prefetch : int
        Batches read ahead of the consumer (at least ``threads``, so that
        every thread has a batch to build). Bounds the memory of a run:
        ``prefetch x`` one batch, plus the chunk cache.
    drop_last : bool
        Drop the last batch of an epoch when it is smaller than
        ``batch_size``.
    keep_buffers : bool
        On Linux with glibc, raise the allocator's mmap and trim thresholds
        (32 and 128 MiB) in this process when iteration starts, so that freed
        batch and chunk buffers are reused instead of being returned to the
        kernel and faulted in again (about a fifth of the CPU time per patch
        measured; see :mod:`zarrdask.dataset.allocator`). Process-wide, once;
        skipped when the environment sets the allocator (``MALLOC_*_``,
        ``GLIBC_TUNABLES``). False leaves the allocator as it is.
    pin_memory : bool
        Return tensors in page-locked memory (CUDA only; ignored with a
        warning otherwise), so that ``.to("cuda", non_blocking=True)``
        overlaps the copy with compute.
    **options
        Every option of :class:`PatchDataset` (``shuffle``, ``seed``,
        ``chunk_buffer``, ``transforms``, ``weights``, ``modalities``, ``columns``,
        ``return_tuple``, ``storage_options``, ``read_threads``...). Chunks
        of remote sources are fetched ahead on ``read_threads`` extra
        threads (default 16), planned ahead of the batches in flight.

    Notes
    -----
    A batch has the layout ``DataLoader(PatchDataset(...),
    batch_size=batch_size)`` yields: a dict of tensors with the batch
    dimension first (``"position"`` int64 ``(n, ndims, 2)``, ``"image_id"``
    int64 ``(n,)``), or a list of tensors with ``return_tuple=True``. The
    same seed gives the same batches in the same order for any ``threads``
    and after :meth:`load_state_dict`, as long as transforms do not draw
    from a shared random generator (seed them per sample instead).
    """

    def __init__(self, table_or_path: PatchTable | str | os.PathLike, *, batch_size: int,
                 threads: int | None = None, prefetch: int = 2, drop_last: bool = False,
                 pin_memory: bool = False, keep_buffers: bool = True,
                 **options: Any) -> None:
        super().__init__()
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.threads = check_int("threads", threads, minimum=1, optional=True)
        self.prefetch = check_int("prefetch", prefetch, minimum=1)
        self.drop_last = check_flag("drop_last", drop_last)
        self.pin_memory = check_flag("pin_memory", pin_memory)
        self.keep_buffers = check_flag("keep_buffers", keep_buffers)
        self.dataset = PatchDataset(table_or_path, **options)

    # -- the dataset's API -------------------------------------------------------------
    @property
    def modalities(self) -> list[str]:
        """What each batch holds, in order (see :class:`PatchDataset`)."""
        return self.dataset.modalities

    @property
    def epoch(self) -> int:
        """The epoch the next iteration reads."""
        return self.dataset.epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the next iteration (see
        :meth:`PatchDataset.set_epoch`)."""
        self.dataset.set_epoch(epoch)

    def add_transform(self, modalities: str | Sequence[str], transform: Callable[..., Any]) -> None:
        """Register a per-sample transform, run in the pool threads (see
        :meth:`PatchDataset.add_transform`)."""
        self.dataset.add_transform(modalities, transform)

    def state_dict(self) -> dict[str, Any]:
        """The progress of the epoch in the samples of the batches handed
        out so far (see :meth:`PatchDataset.state_dict`)."""
        return self.dataset.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Resume: the next iteration yields exactly the batches that were
        not handed out yet (same ``batch_size`` for the same batches).

        Raises
        ------
        DatasetError
            When the state comes from another table, seed, shuffle setting or
            world size (see :meth:`PatchDataset.load_state_dict`).
        """
        self.dataset.load_state_dict(state_dict)

    def read_stats(self) -> dict[str, Any]:
        """Chunk reading statistics of this process (see
        :meth:`PatchDataset.read_stats`)."""
        return self.dataset.read_stats()

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __repr__(self) -> str:
        return (f"<PatchLoader batch_size={self.batch_size} threads={self._threads()} "
                f"prefetch={self.prefetch} over {self.dataset!r}>")

    # -- iteration ---------------------------------------------------------------------
    def _threads(self) -> int:
        if self.threads is not None:
            return self.threads
        if torch.utils.data.get_worker_info() is not None:
            return 1
        return available_cores()

    def __iter__(self) -> Iterator[Any]:
        ds = self.dataset
        shard, epoch, skip, progress = ds._begin()
        return self._batches(ds._start_epoch(shard, epoch, skip, progress), progress)

    def _batches(self, started: Any, progress: dict[str, Any]) -> Iterator[Any]:
        if started is None:
            return
        plans, releaser = started
        ds = self.dataset
        if self.keep_buffers:
            keep_freed_buffers()
        rt = ds._runtime_here()
        fetcher = rt.fetcher
        prefetching = ds._prefetching(rt)
        pin = self._pin()
        threads = self._threads()
        window = max(self.prefetch, threads)
        size = self.batch_size
        tuples = ds.return_tuple
        names = [*ds.modalities, *ds.columns]  # the fields of a tuple sample

        transformed = {m for key, _ in ds._transforms for m in key}
        direct = [m for m in ds.modalities if m not in transformed]

        def build(batch_plans: list[Any]) -> Any:
            # rows in order: decode the row's chunks that no other thread is
            # decoding, then crop the row at once, while its chunk is still in
            # this core's cache; a row whose chunk another thread is decoding
            # waits until the end. Row 0 fixes each untransformed modality's
            # batch array, the others are cropped straight into it.
            samples: list[Any] = [None] * len(batch_plans)
            out: dict[str, np.ndarray] | None = None
            deferred = []
            previous = None  # the chunks of the previous row, when ready (often the same)
            for row, plan in enumerate(batch_plans):
                ready = True
                if plan.chunks != previous:
                    for uid, src, idx in plan.chunks:
                        ready = fetcher.decode_unless_pending(uid, src, idx) and ready
                    previous = plan.chunks if ready else None
                if not ready or (out is None and row):
                    deferred.append(row)
                    continue
                out = assemble(batch_plans, row, samples, out)
            for row in deferred:
                out = assemble(batch_plans, row, samples, out)
            releaser.done_many(batch_plans)
            batch = collate_samples(samples, tuples=tuples, names=names, stacked=out)
            return _pinned(batch) if pin else batch

        def assemble(batch_plans: list[Any], row: int, samples: list[Any],
                     out: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
            plan = batch_plans[row]
            if out is None:  # row 0: allocate the batch arrays
                first = samples[0] = ds._assemble(plan, fetcher)
                fields = dict(zip(names, first, strict=True)) if tuples else first
                out = {m: np.empty((len(batch_plans), *fields[m].shape), dtype=fields[m].dtype)
                       for m in direct if _stackable(fields[m])}
                for m, dest in out.items():
                    dest[0] = fields[m]
            else:
                samples[row] = ds._assemble(plan, fetcher, out=out, row=row)
            return out

        pool = ThreadPoolExecutor(threads, thread_name_prefix=THREAD_PREFIX)
        # remote sources: rows are planned, and their chunks fetched, ahead of
        # the batches in flight, up to the fetcher's bound (``read_threads``
        # and the cache); local sources are decoded by the batch's own thread
        max_ahead = ds._max_ahead(rt) if prefetching else 0
        queued: deque[Any] = deque()  # planned rows not yet in a batch
        pending: deque[tuple[Future, int, int]] = deque()  # batch, rows, fetches started
        state = {"ahead": 0, "exhausted": False}

        def pull() -> bool:
            plan = next(plans, None)
            if plan is None:
                state["exhausted"] = True
                return False
            if prefetching:
                ds._prefetch_plan(plan, fetcher)
                state["ahead"] += plan.started
            queued.append(plan)
            return True

        try:
            while True:
                while len(pending) < window:
                    while len(queued) < size and not state["exhausted"] and pull():
                        pass
                    if not queued or (self.drop_last and len(queued) < size):
                        break
                    batch_plans = [queued.popleft() for _ in range(min(size, len(queued)))]
                    started = sum(plan.started for plan in batch_plans)
                    pending.append((pool.submit(build, batch_plans), len(batch_plans), started))
                while (prefetching and not state["exhausted"] and state["ahead"] < max_ahead
                       and len(queued) < LOOKAHEAD_ROWS and pull()):
                    pass
                if not pending:
                    break
                future, n, started = pending.popleft()
                batch = future.result()  # a pool thread's error surfaces here, typed
                state["ahead"] -= started
                progress["yielded"] += n
                yield batch
            if progress["length"] is not None:  # dropped remainder: the epoch is done
                progress["yielded"] = max(progress["yielded"], progress["length"])
        finally:
            for future, _, _ in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)

    def _pin(self) -> bool:
        if not self.pin_memory:
            return False
        if not torch.cuda.is_available():
            warnings.warn("pin_memory=True but CUDA is not available; batches are not pinned",
                          stacklevel=3)
            return False
        return True


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where known)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def collate_samples(samples: Sequence[Any], *, tuples: bool = False,
                    names: Sequence[str] = (), stacked: Mapping[str, np.ndarray] | None = None
                    ) -> Any:
    """Stack samples into a batch with the layout of torch's default collate.

    Arrays of one shape and dtype are stacked with numpy and wrapped without
    a further copy; anything else (tensors returned by transforms, ints)
    goes through :func:`torch.utils.data.default_collate`.

    Parameters
    ----------
    samples : sequence of dict or tuple
        Samples as :class:`PatchDataset` yields them.
    tuples : bool
        Samples are tuples (of the modalities ``names``): return a list of
        batched fields.
    names : sequence of str
        With ``tuples``: the modality of each field.
    stacked : mapping, optional
        Fields already written into batch arrays, by name (wrapped as they are).
    """
    stacked = stacked or {}

    def field(name: Any, values: Callable[[], list[Any]]) -> Any:
        if name in stacked:
            return torch.from_numpy(stacked[name])
        return _collate_field(values())

    if tuples:
        return [field(names[i] if i < len(names) else None, lambda i=i: [s[i] for s in samples])
                for i in range(len(samples[0]))]
    return {key: field(key, lambda key=key: [s[key] for s in samples]) for key in samples[0]}


def _stackable(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.kind in "biuf"


def _collate_field(values: list[Any]) -> Any:
    first = values[0]
    if type(first) is int and all(type(v) is int for v in values):  # image ids: as default_collate
        return torch.from_numpy(np.asarray(values, dtype=np.int64))
    if _stackable(first) and all(
            isinstance(v, np.ndarray) and v.shape == first.shape and v.dtype == first.dtype
            for v in values):
        return torch.from_numpy(np.stack(values))
    return default_collate(values)


def _pinned(batch: Any) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.pin_memory()
    if isinstance(batch, dict):
        return {k: _pinned(v) for k, v in batch.items()}
    if isinstance(batch, list):
        return [_pinned(v) for v in batch]
    return batch


def loader_threads() -> list[threading.Thread]:
    """The live pool threads of every PatchLoader iteration (for tests and
    diagnostics)."""
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]
