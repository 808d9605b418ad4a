"""Which rows a DataLoader worker of a DDP rank reads, in which order: pure
functions of the table's chunk groups, the seed, the epoch and the shard.

An *epoch sequence* is the list of row indices read in one epoch by all
ranks and workers together:

1. rows are grouped by ``(image_id, chunk_id)`` (*chunk groups*, in table
   order); with weighted sampling the epoch's draws are grouped the same way;
2. with ``shuffle`` the groups are permuted (seeded by ``seed`` and ``epoch``);
3. rank ``r`` of ``R`` takes the ``r``-th of ``R`` contiguous, near-equal
   slices of the sequence (with ``even_shards`` every slice has
   ``ceil(M / R)`` rows, the last ones wrapping around to the start), and
   worker ``w`` of ``W`` the ``w``-th contiguous slice of its rank's slice.
   Slices are cut at row level, so counts differ by at most one; a chunk
   group cut by a slice boundary is read by both neighbours (at most one
   chunk per boundary);
4. with ``shuffle``, each worker interleaves the rows of its slice through a
   window of ``chunk_buffer`` groups: group ``j`` of the slice (in sequence
   order) spreads its rows at random times in ``[j, j + K)`` and rows are
   read by increasing time. At any time about ``K`` groups are open, so about
   ``K`` chunks must stay decoded; ``K = 1`` reads one chunk's patches (in
   random order) before the next, a ``K`` as large as the slice's group
   count approaches a uniform shuffle.

The order is produced lazily, one window of groups at a time, so the first
rows are ready without sorting the whole slice, and resuming after ``n``
rows skips whole windows without sorting them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ShardSpec",
    "ChunkGroups",
    "group_rows",
    "epoch_groups",
    "shard_range",
    "shard_rows",
    "shuffled_blocks",
    "shard_order",
    "shard_length",
    "partition_segments",
    "partition_groups",
]


@dataclass(frozen=True)
class ShardSpec:
    """One reader: a DataLoader worker of a DDP rank.

    Attributes
    ----------
    rank, world_size : int
        DDP rank and number of ranks.
    worker, num_workers : int
        DataLoader worker id and number of workers of this rank (``0, 1``
        without workers).
    """

    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1

    def __post_init__(self) -> None:
        if not (0 <= self.rank < self.world_size and 0 <= self.worker < self.num_workers):
            raise ValueError(
                f"shard rank={self.rank}/world_size={self.world_size}, "
                f"worker={self.worker}/num_workers={self.num_workers} is out of range"
            )


@dataclass(frozen=True)
class ChunkGroups:
    """Rows grouped by storage chunk.

    Attributes
    ----------
    rows : (M,) int64 array
        Row indices (into the table), group after group.
    starts : (G + 1,) int64 array
        Group ``g`` holds ``rows[starts[g]:starts[g + 1]]``.
    """

    rows: np.ndarray
    starts: np.ndarray

    @property
    def num_groups(self) -> int:
        return len(self.starts) - 1

    def __len__(self) -> int:
        return len(self.rows)


def _boundaries(keys: tuple[np.ndarray, ...]) -> np.ndarray:
    n = len(keys[0])
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    change = np.zeros(n, dtype=bool)
    change[0] = True
    for k in keys:
        change[1:] |= k[1:] != k[:-1]
    return np.append(np.flatnonzero(change), n).astype(np.int64)


def group_rows(image_id: np.ndarray, chunk_id: np.ndarray) -> ChunkGroups:
    """Group table rows by ``(image_id, chunk_id)``.

    Rows keep the table order inside a group; groups are ordered by image
    then chunk (a stable sort, a no-op for tables from ``build_table``).

    Parameters
    ----------
    image_id, chunk_id : (N,) int arrays
        The table's columns.

    Returns
    -------
    ChunkGroups
    """
    image_id = np.asarray(image_id, dtype=np.int64)
    chunk_id = np.asarray(chunk_id, dtype=np.int64)
    n = len(image_id)
    ordered = n < 2 or bool(np.all(
        (image_id[1:] > image_id[:-1])
        | ((image_id[1:] == image_id[:-1]) & (chunk_id[1:] >= chunk_id[:-1]))))
    rows = np.arange(n, dtype=np.int64) if ordered else np.lexsort((chunk_id, image_id)).astype(np.int64)
    return ChunkGroups(rows, _boundaries((image_id[rows], chunk_id[rows])))


def _rng(seed: int, epoch: int, stream: int, *extra: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), stream, *map(int, extra)])


def sample_rows(groups: ChunkGroups, *, num_samples: int, weights: np.ndarray | None,
                replacement: bool, seed: int, epoch: int) -> ChunkGroups:
    """The epoch's weighted draws of rows, grouped by chunk.

    Parameters
    ----------
    groups : ChunkGroups
        Groups of the whole table.
    num_samples : int
        Draws per epoch (all ranks together).
    weights : (N,) array or None
        Non-negative weight per table row (uniform when None).
    replacement : bool
        Draw with replacement.
    seed, epoch : int
        The draws depend on these only.

    Returns
    -------
    ChunkGroups
        The drawn rows (repeated when drawn several times) in chunk order.
    """
    n = len(groups.rows)
    p = None
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        p = w / w.sum()
    draws = _rng(seed, epoch, 7).choice(n, size=int(num_samples), replace=bool(replacement), p=p)
    # Map draws to positions in the grouped order, sort, regroup.
    where = np.empty(n, dtype=np.int64)
    where[groups.rows] = np.arange(n, dtype=np.int64)
    pos = np.sort(where[draws])
    group_of = np.repeat(np.arange(groups.num_groups, dtype=np.int64), np.diff(groups.starts))
    return ChunkGroups(groups.rows[pos], _boundaries((group_of[pos],)))


def epoch_groups(groups: ChunkGroups, *, shuffle: bool, seed: int, epoch: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The order of the groups in one epoch.

    Returns
    -------
    order : (G,) int64 array
        Group indices in sequence order (permuted when ``shuffle``).
    cum : (G + 1,) int64 array
        Sequence position where each group of ``order`` starts.
    """
    g = groups.num_groups
    order = _rng(seed, epoch, 1).permutation(g).astype(np.int64) if shuffle else np.arange(g, dtype=np.int64)
    return order, _sequence_starts(groups, order)


def _sequence_starts(groups: ChunkGroups, order: np.ndarray) -> np.ndarray:
    cum = np.zeros(len(order) + 1, dtype=np.int64)
    np.cumsum(np.diff(groups.starts)[order], out=cum[1:])
    return cum


def shard_range(total: int, shard: ShardSpec, *, even_shards: bool) -> tuple[int, int]:
    """Sequence positions ``[start, stop)`` of one shard.

    Positions past ``total`` (only with ``even_shards``) wrap around.
    """
    world = shard.world_size
    if even_shards:
        per_rank = -(-total // world) if total else 0
        r0, r1 = shard.rank * per_rank, (shard.rank + 1) * per_rank
    else:
        r0, r1 = shard.rank * total // world, (shard.rank + 1) * total // world
    n = r1 - r0
    w0 = r0 + shard.worker * n // shard.num_workers
    w1 = r0 + (shard.worker + 1) * n // shard.num_workers
    return w0, w1


def shard_length(total: int, shard: ShardSpec, *, even_shards: bool) -> int:
    """Rows one shard reads per epoch."""
    a, b = shard_range(total, shard, even_shards=even_shards)
    return b - a


def shard_rows(groups: ChunkGroups, order: np.ndarray, cum: np.ndarray, start: int, stop: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Rows at sequence positions ``[start, stop)`` and their group rank.

    Returns
    -------
    rows : (stop - start,) int64 array
    group_pos : (stop - start,) int64 array
        Non-decreasing index of each row's group within the slice (0 for the
        first group; a wrapped-around repeat counts as new groups).
    """
    total = int(cum[-1])
    if stop <= start or total == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    rows_parts, pos_parts = [], []
    offset = 0
    seg_start = start
    while seg_start < stop:
        a = seg_start % total
        b = min(total, a + (stop - seg_start))
        g0 = int(np.searchsorted(cum, a, side="right")) - 1
        g1 = int(np.searchsorted(cum, b, side="left"))
        sizes = np.diff(cum[g0:g1 + 1])
        seq_group = np.repeat(np.arange(g0, g1, dtype=np.int64), sizes)
        within = np.arange(cum[g0], cum[g1], dtype=np.int64) - cum[seq_group]
        first = groups.starts[order[seq_group]] + within
        keep = slice(a - int(cum[g0]), b - int(cum[g0]))
        rows_parts.append(groups.rows[first[keep]])
        pos_parts.append(seq_group[keep] - g0 + offset)
        offset = int(pos_parts[-1][-1]) + 1
        seg_start += b - a
    return np.concatenate(rows_parts), np.concatenate(pos_parts)


def shuffled_blocks(rows: np.ndarray, group_pos: np.ndarray, *, buffer: int,
                    rng: np.random.Generator, skip: int = 0) -> Iterator[np.ndarray]:
    """Lazily interleave rows through a window of ``buffer`` groups.

    Row ``i`` of group ``j`` gets the time ``j + buffer * u_i`` (``u_i``
    uniform in [0, 1)); rows come out by increasing time, one window of
    groups at a time.

    Parameters
    ----------
    rows, group_pos : (n,) int64 arrays
        From :func:`shard_rows`.
    buffer : int
        Groups open at a time (``chunk_buffer``), at least 1.
    rng : numpy.random.Generator
        Seeded per epoch and shard.
    skip : int
        Rows already read (resume): the first ``skip`` rows are not yielded.

    Yields
    ------
    (k,) int64 array
        Positions (indices into ``rows``) of the next rows.
    """
    n = len(rows)
    if n == 0:
        return
    k = max(1, int(buffer))
    gpos = group_pos - group_pos[0]
    times = gpos + k * rng.random(n)
    last = int(gpos[-1]) + k
    step = max(4 * k, 64)
    done = 0
    for t0 in range(0, last + 1, step):
        t1 = t0 + step
        lo = int(np.searchsorted(gpos, t0 - k, side="right"))
        hi = int(np.searchsorted(gpos, t1, side="left"))
        window = times[lo:hi]
        sel = np.flatnonzero((window >= t0) & (window < t1))
        count = len(sel)
        if done + count <= skip:
            done += count
            continue
        sel = sel[np.argsort(window[sel], kind="stable")]
        block = lo + sel
        if skip > done:
            block = block[skip - done:]
        done += count
        if len(block):
            yield block


def shard_order(rows: np.ndarray, group_pos: np.ndarray, *, shuffle: bool, buffer: int,
                seed: int, epoch: int, shard: ShardSpec, skip: int = 0,
                block: int = 4096, stream: tuple[int, ...] = ()) -> Iterator[np.ndarray]:
    """The rows of one shard in reading order, lazily, in blocks.

    Sequential order without ``shuffle``; else :func:`shuffled_blocks`
    seeded by ``(seed, epoch, rank, worker, *stream)`` (``stream``: which
    part of a partitioned table, see :func:`partition_segments`).

    Yields
    ------
    (k,) int64 array
        Positions (indices into ``rows`` and ``group_pos``) of the next rows.
    """
    if shuffle:
        rng = _rng(seed, epoch, 2, shard.rank, shard.worker, *stream)
        yield from shuffled_blocks(rows, group_pos, buffer=buffer, rng=rng, skip=skip)
        return
    for start in range(int(skip), len(rows), block):
        yield np.arange(start, min(start + block, len(rows)), dtype=np.int64)


def partition_segments(sizes: np.ndarray, start: int, stop: int, *, shuffle: bool, seed: int,
                       epoch: int) -> Iterator[tuple[int, int, int]]:
    """The parts of a partitioned table one shard reads, in sequence order.

    The epoch sequence of a table stored in parts is the parts in a seeded
    order (``shuffle``) or in table order, each part's chunk groups in turn
    (see :func:`partition_groups`). A shard reads sequence positions
    ``[start, stop)`` (:func:`shard_range`; past the total they wrap around).

    Parameters
    ----------
    sizes : (P,) int array
        Rows per part.
    start, stop : int
        The shard's sequence positions.
    shuffle : bool
        Permute the parts (seeded by ``seed`` and ``epoch``).

    Yields
    ------
    (part, local_start, local_stop) : tuple of int
        A part and the positions of its own sequence the shard reads.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    p = len(sizes)
    order = _rng(seed, epoch, 3).permutation(p) if shuffle else np.arange(p)
    cum = np.zeros(p + 1, dtype=np.int64)
    np.cumsum(sizes[order], out=cum[1:])
    total = int(cum[-1])
    pos = start
    while pos < stop and total:
        a = pos % total
        k = int(np.searchsorted(cum, a, side="right")) - 1
        part = int(order[k])
        local_a = a - int(cum[k])
        local_b = min(int(sizes[part]), local_a + (stop - pos))
        yield part, local_a, local_b
        pos += local_b - local_a


def partition_groups(groups: ChunkGroups, *, part: int, shuffle: bool, seed: int, epoch: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`epoch_groups` of one part of a partitioned table (its own
    seeded permutation of its chunk groups)."""
    g = groups.num_groups
    order = (_rng(seed, epoch, 4, part).permutation(g).astype(np.int64) if shuffle
             else np.arange(g, dtype=np.int64))
    return order, _sequence_starts(groups, order)
