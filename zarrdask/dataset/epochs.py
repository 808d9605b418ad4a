"""Which epoch an iteration reads, shared between a dataset and the copies
of it that DataLoader workers hold (persistent or not).

The state lives in shared memory (a :func:`multiprocessing.Array` created
with the dataset, inherited by forked workers and passed to spawned ones):

* the *next epoch*: what the next new iteration reads;
* a small table of the iterations in progress, keyed by *iteration key*:
  in a DataLoader worker ``(base seed of the worker pool, iterations this
  worker process has run in that pool)`` — the same for all workers of one
  DataLoader iteration, whether the pool is new or persistent; in the main
  process a key of its own per iteration.

The first reader of a new iteration takes the next epoch and advances it;
the other workers of that iteration find its key and read the same epoch.
So

* ``set_epoch(n)`` (which sets the next epoch) reaches every worker, also
  workers kept alive by ``persistent_workers=True``;
* without ``set_epoch`` each new iteration reads the epoch after the
  previous one (``0, 1, 2...``), whether the workers are new, persistent or
  absent, and all workers of an iteration agree even when ``num_workers``
  changes between iterations or the dataset was iterated in the main process
  in between;
* resuming an epoch (``load_state_dict``) reads that epoch and moves the
  next epoch past it.

Outside of a process start (``pickle.dumps`` of a dataset, a dask task) the
state pickles by value: the copy no longer shares it.
"""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing import context as mp_context
from typing import Any

__all__ = ["EpochCounter", "iteration_key"]

_RING = 16  # iterations remembered at once (concurrent DataLoaders over one dataset)
_NEXT, _GENERATION, _CURSOR, _HEAD = 0, 1, 2, 3
_EMPTY = -(2**63)


def _array(size: int) -> Any:
    # a lock made by the spawn context also passes to spawned and forkserver
    # workers (one made by the fork context may only be inherited)
    return multiprocessing.get_context("spawn").Array("q", size)


def iteration_key(worker_seed: int | None, worker_id: int, iterations_here: int) -> tuple[int, int]:
    """The key shared by every reader of one DataLoader iteration.

    Parameters
    ----------
    worker_seed : int or None
        ``torch.utils.data.get_worker_info().seed`` (base seed of the pool
        plus the worker id); None in the main process.
    worker_id : int
        The worker id (0 in the main process).
    iterations_here : int
        Iterations this process already ran with this pool (a persistent
        worker's count; 0 for fresh workers), or in the main process.
    """
    if worker_seed is None:
        return -(os.getpid() + 1), int(iterations_here)
    return int(worker_seed) - int(worker_id), int(iterations_here)


class EpochCounter:
    """The next epoch and the epochs of iterations in progress, in shared
    memory.

    Parameters
    ----------
    epoch : int
        The epoch of the first iteration.
    """

    def __init__(self, epoch: int = 0) -> None:
        self._shared: Any = _array(_HEAD + 3 * _RING)
        with self._shared.get_lock():
            self._shared[_NEXT] = int(epoch)
            for i in range(_RING):
                self._shared[_HEAD + 3 * i] = _EMPTY

    # -- pickling: shared while a process starts, by value otherwise --
    def __getstate__(self) -> dict[str, Any]:
        if mp_context.get_spawning_popen() is not None:
            return {"shared": self._shared}
        with self._shared.get_lock():
            return {"values": list(self._shared)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "shared" in state:
            self._shared = state["shared"]
            return
        self._shared = _array(len(state["values"]))
        self._shared[:] = state["values"]

    @property
    def generation(self) -> int:
        """How many times :meth:`set` was called (in any process)."""
        return int(self._shared[_GENERATION])

    @property
    def next(self) -> int:
        """The epoch the next new iteration reads."""
        return int(self._shared[_NEXT])

    def set(self, epoch: int) -> None:
        """The next new iteration (of every reader) reads ``epoch``."""
        with self._shared.get_lock():
            self._shared[_NEXT] = int(epoch)
            self._shared[_GENERATION] += 1
            for i in range(_RING):
                self._shared[_HEAD + 3 * i] = _EMPTY

    def _find(self, key: tuple[int, int]) -> int | None:
        for i in range(_RING):
            base = _HEAD + 3 * i
            if self._shared[base] == key[0] and self._shared[base + 1] == key[1]:
                return int(self._shared[base + 2])
        return None

    def _record(self, key: tuple[int, int], epoch: int) -> None:
        slot = int(self._shared[_CURSOR]) % _RING
        base = _HEAD + 3 * slot
        self._shared[base], self._shared[base + 1], self._shared[base + 2] = key[0], key[1], epoch
        self._shared[_CURSOR] = slot + 1

    def start(self, key: tuple[int, int]) -> int:
        """The epoch of the iteration ``key`` (the first reader of a new
        iteration takes the next epoch and advances it)."""
        with self._shared.get_lock():
            epoch = self._find(key)
            if epoch is None:
                epoch = int(self._shared[_NEXT])
                self._shared[_NEXT] = epoch + 1
                self._record(key, epoch)
            return epoch

    def resume(self, key: tuple[int, int], epoch: int) -> int:
        """The iteration ``key`` resumes ``epoch``; later ones read the
        epochs after it."""
        with self._shared.get_lock():
            if self._find(key) is None:
                self._record(key, int(epoch))
            self._shared[_NEXT] = max(int(self._shared[_NEXT]), int(epoch) + 1)
            return int(epoch)
