"""The :class:`~zarrdask.PatchDataset` that ``ZarrDataset`` reads through (needs torch).

Kept apart from :mod:`zarrdask.compat.zarrdataset` so that module imports
without torch, as zarrdataset's does.
"""

from __future__ import annotations

from ..dataset.patch_dataset import PatchDataset
from ..dataset.sharding import ShardSpec

__all__ = ["CompatPatchDataset"]


class CompatPatchDataset(PatchDataset):
    """:class:`PatchDataset` whose share can be fixed per iteration.

    ``_worker_override = (worker, num_workers)`` replaces the DataLoader
    worker's (``chained_zarrdataset_worker_init_fn`` gives each worker whole
    datasets: ``(0, 1)``); ``_rank_override`` does the same for DDP ranks.
    """

    _worker_override: tuple[int, int] | None = None
    _rank_override: tuple[int, int] | None = None

    def _shard(self) -> ShardSpec:
        shard = super()._shard()
        rank, world = self._rank_override or (shard.rank, shard.world_size)
        worker, workers = self._worker_override or (shard.worker, shard.num_workers)
        return ShardSpec(rank, world, worker, workers)
