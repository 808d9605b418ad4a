"""The training side: a torch ``IterableDataset`` streaming patches from a
coordinate table (see ``docs/dataset.md``).

Modules: :mod:`~zarrdask.dataset.patch_dataset` (:class:`PatchDataset`),
:mod:`~zarrdask.dataset.loader` (:class:`PatchLoader`: batches built by threads),
:mod:`~zarrdask.dataset.options` (option checks), :mod:`~zarrdask.dataset.sources`
(table entries to sources, output order), :mod:`~zarrdask.dataset.epochs`
(shared epoch state), :mod:`~zarrdask.dataset.iteration` (epochs, shards and
resume state of a reader), :mod:`~zarrdask.dataset.reader` (the read engine),
:mod:`~zarrdask.dataset.layout` (direct zarr decoding),
:mod:`~zarrdask.dataset.chunks` (one stored array, the chunk cache),
:mod:`~zarrdask.dataset.boxes` (table rows to read boxes per modality) and
:mod:`~zarrdask.dataset.sharding` (shares per rank and worker, chunk-aware
shuffling, resume offsets, weighted sampling).
"""

from typing import Any

from .chunks import ArraySource, ChunkCache, ChunkFetcher
from .sharding import ShardSpec

__all__ = ["PatchDataset", "PatchLoader", "ArraySource", "ChunkCache", "ChunkFetcher", "ShardSpec"]


def __getattr__(name: str) -> Any:
    # torch loads with PatchDataset only: the chunk, box and sharding modules
    # serve torch-free code too (the compatibility layer's image loaders)
    if name == "PatchDataset":
        from .patch_dataset import PatchDataset

        return PatchDataset
    if name == "PatchLoader":
        from .loader import PatchLoader

        return PatchLoader
    raise AttributeError(f"module 'zarrdask.dataset' has no attribute {name!r}")
