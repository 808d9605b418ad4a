"""Pure sharding: exactly-once shares, even shards, chunk-aware shuffling,
resume offsets and weighted draws."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from zarrdask.dataset.sharding import (
    ShardSpec,
    epoch_groups,
    group_rows,
    sample_rows,
    shard_order,
    shard_range,
    shard_rows,
)


def _groups(n_images=3, per_image=40, chunks=7, seed=0):
    rng = np.random.default_rng(seed)
    image_id = np.repeat(np.arange(n_images), per_image)
    chunk_id = np.concatenate([np.sort(rng.integers(0, chunks, per_image)) for _ in range(n_images)])
    return group_rows(image_id, chunk_id), image_id, chunk_id


def _read(groups, shard, *, shuffle=False, even=False, seed=0, epoch=0, buffer=4, skip=0):
    order, cum = epoch_groups(groups, shuffle=shuffle, seed=seed, epoch=epoch)
    start, stop = shard_range(len(groups), shard, even_shards=even)
    rows, pos = shard_rows(groups, order, cum, start, stop)
    blocks = list(shard_order(rows, pos, shuffle=shuffle, buffer=buffer, seed=seed, epoch=epoch,
                              shard=shard, skip=skip))
    return rows[np.concatenate(blocks)] if blocks else np.zeros(0, dtype=np.int64)


def test_group_rows_sorts_unordered_tables_stably():
    groups = group_rows(np.array([1, 0, 1, 0]), np.array([5, 2, 5, 1]))
    assert groups.rows.tolist() == [3, 1, 0, 2]
    assert groups.starts.tolist() == [0, 1, 2, 4]


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_every_row_is_read_exactly_once_across_ranks_and_workers(shuffle, world, workers):
    groups, _, _ = _groups()
    seen = [_read(groups, ShardSpec(r, world, w, workers), shuffle=shuffle)
            for r in range(world) for w in range(workers)]
    assert sorted(np.concatenate(seen).tolist()) == list(range(120))
    sizes = [len(s) for s in seen]
    assert max(sizes) - min(sizes) <= 1


def test_even_shards_give_equal_counts_by_repeating_the_first_rows():
    groups, _, _ = _groups(n_images=1, per_image=10)
    seen = [_read(groups, ShardSpec(r, 4, 0, 1), even=True) for r in range(4)]
    assert [len(s) for s in seen] == [3, 3, 3, 3]
    flat = np.concatenate(seen)
    assert set(flat.tolist()) == set(range(10))
    assert len(flat) - len(set(flat.tolist())) == 2


def test_shares_are_contiguous_runs_of_chunk_groups_without_shuffle():
    groups, image_id, chunk_id = _groups()
    for w in range(3):
        rows = _read(groups, ShardSpec(0, 1, w, 3))
        keys = list(zip(image_id[rows], chunk_id[rows], strict=True))
        runs = [k for k, _ in itertools.groupby(keys)]
        assert len(runs) == len(set(runs)), "a chunk group appears in two separate runs"


def test_shuffle_is_seeded_and_changes_with_epoch_and_seed():
    groups, _, _ = _groups()
    shard = ShardSpec(0, 1, 0, 1)
    a = _read(groups, shard, shuffle=True, seed=3, epoch=0)
    assert np.array_equal(a, _read(groups, shard, shuffle=True, seed=3, epoch=0))
    assert not np.array_equal(a, _read(groups, shard, shuffle=True, seed=3, epoch=1))
    assert not np.array_equal(a, _read(groups, shard, shuffle=True, seed=4, epoch=0))
    assert not np.array_equal(a, np.arange(120))


def test_buffer_of_one_reads_each_chunk_group_before_the_next():
    groups, image_id, chunk_id = _groups()
    rows = _read(groups, ShardSpec(), shuffle=True, buffer=1)
    keys = list(zip(image_id[rows], chunk_id[rows], strict=True))
    runs = [k for k, _ in itertools.groupby(keys)]
    assert len(runs) == groups.num_groups
    # and still shuffled inside the groups
    assert not np.array_equal(rows, np.sort(rows))


def test_buffer_bounds_how_many_groups_are_open_at_a_time():
    groups, image_id, chunk_id = _groups(n_images=4, per_image=200, chunks=30)
    for buffer in (2, 8):
        rows = _read(groups, ShardSpec(), shuffle=True, buffer=buffer)
        key = image_id[rows] * 1000 + chunk_id[rows]
        first = {k: i for i, k in reversed(list(enumerate(key)))}
        last = {k: i for i, k in enumerate(key)}
        open_at = np.zeros(len(rows), dtype=int)
        for k in first:
            open_at[first[k]:last[k] + 1] += 1
        assert open_at.max() <= buffer + 1


def test_resume_skip_yields_exactly_the_rest():
    groups, _, _ = _groups()
    for shuffle in (False, True):
        shard = ShardSpec(0, 2, 1, 2)
        full = _read(groups, shard, shuffle=shuffle, epoch=2)
        for skip in (0, 1, 17, len(full) - 1, len(full)):
            rest = _read(groups, shard, shuffle=shuffle, epoch=2, skip=skip)
            assert rest.tolist() == full[skip:].tolist()


def test_weighted_draws_follow_weights_are_seeded_and_grouped():
    groups, _, _ = _groups(n_images=1, per_image=50)
    weights = np.zeros(50)
    weights[[3, 30]] = [1.0, 3.0]
    drawn = sample_rows(groups, num_samples=400, weights=weights, replacement=True, seed=1, epoch=0)
    counts = np.bincount(drawn.rows, minlength=50)
    assert set(np.flatnonzero(counts)) == {3, 30}
    assert 2.0 < counts[30] / counts[3] < 4.5
    again = sample_rows(groups, num_samples=400, weights=weights, replacement=True, seed=1, epoch=0)
    assert np.array_equal(drawn.rows, again.rows)
    other = sample_rows(groups, num_samples=400, weights=weights, replacement=True, seed=1, epoch=1)
    assert not np.array_equal(drawn.rows, other.rows)
    assert drawn.num_groups <= 2
    no_repeat = sample_rows(groups, num_samples=20, weights=None, replacement=False, seed=0, epoch=0)
    assert len(set(no_repeat.rows.tolist())) == 20
