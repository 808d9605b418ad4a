"""The :class:`~zarrdask.PatchDataset` that ``ZarrDataset`` reads through (needs torch).

Kept apart from :mod:`zarrdask.compat.zarrdataset` so that module imports
without torch, as zarrdataset's does.
"""

from __future__ import annotations

from typing import Any

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
    # the axes stages receive each array in its source_axes order
    _default_output_order = "stored"

    def __init__(self, *args: Any, even_shards: bool = False, **kwargs: Any) -> None:
        # the compatibility layer's DDP shares stay disjoint (exactly once),
        # as its own tests and docs/differences.md promise
        super().__init__(*args, even_shards=even_shards, **kwargs)

    def _shard(self) -> ShardSpec:
        shard = super()._shard()
        rank, world = self._rank_override or (shard.rank, shard.world_size)
        worker, workers = self._worker_override or (shard.worker, shard.num_workers)
        return ShardSpec(rank, world, worker, workers)
