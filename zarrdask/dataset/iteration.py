"""Iteration order, sharding and resume state of
:class:`~zarrdask.dataset.PatchDataset` (and so of
:class:`~zarrdask.dataset.PatchLoader`, which owns one): the epoch of each
iteration (:mod:`~zarrdask.dataset.epochs`), this reader's share of it under
DDP and DataLoader workers (:mod:`~zarrdask.dataset.sharding`), the rows of
that share in reading order, and the progress that ``state_dict`` saves.

:class:`EpochIteration` is a mixin: it reads the state ``PatchDataset``
sets up (``_whole``, ``_num_rows``, ``_sampling``, ``seed``, ``shuffle``,
``even_shards``, ``_epochs``...).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch.utils.data

from ..errors import DatasetError
from .epochs import iteration_key
from .options import check_int, check_state
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

__all__ = ["EpochIteration"]

_STATE_VERSION = 1


class EpochIteration:
    """Epochs, shards and resume state of one reader (mixed into
    ``PatchDataset``)."""

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
        return self._sampling["num_samples"] if self._sampling else self._num_rows

    def _groups(self) -> ChunkGroups:
        if self._groups_cache is None:
            self._groups_cache = group_rows(self._whole.image_id, self._whole.chunk_id)
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
