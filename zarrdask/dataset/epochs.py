"""Which epoch an iteration reads, shared between a dataset and the copies
of it that DataLoader workers hold (persistent or not).

The state lives in shared memory (a :func:`multiprocessing.RawArray`
created with the dataset, inherited by forked workers and passed to spawned
ones): one *next epoch* per reader slot (the DataLoader worker id; the main
process is slot 0). :meth:`EpochCounter.set` (``set_epoch``) writes every
slot; each iteration reads its slot's epoch and advances the slot by one.
So

* ``set_epoch(n)`` before an iteration reaches every worker, also workers
  kept alive by ``persistent_workers=True``;
* without ``set_epoch`` each new iteration reads the next epoch (``0, 1,
  2...``), whether the workers are new, persistent or absent;
* resuming an epoch (``load_state_dict``) reads that epoch and moves the
  slot past it.

Outside of a process start (``pickle.dumps`` of a dataset, a dask task) the
counter pickles by value: the copy no longer shares its state.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing import context as mp_context
from typing import Any

from ..errors import DatasetError

__all__ = ["EpochCounter", "MAX_READERS"]

#: Reader slots (DataLoader workers per process) the shared state holds.
MAX_READERS = 1024


class EpochCounter:
    """The next epoch of each reader slot, in shared memory.

    Parameters
    ----------
    epoch : int
        The first epoch of every slot.
    """

    def __init__(self, epoch: int = 0) -> None:
        # slots 0..MAX_READERS-1: next epoch per reader; the last: set_epoch calls
        self._shared: Any = multiprocessing.RawArray("q", MAX_READERS + 1)
        for i in range(MAX_READERS):
            self._shared[i] = int(epoch)

    # -- pickling: shared while a process starts, by value otherwise --
    def __getstate__(self) -> dict[str, Any]:
        if mp_context.get_spawning_popen() is not None:
            return {"shared": self._shared}
        return {"values": list(self._shared)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "shared" in state:
            self._shared = state["shared"]
            return
        self._shared = multiprocessing.RawArray("q", MAX_READERS + 1)
        self._shared[:] = state["values"]

    @staticmethod
    def _slot(reader: int) -> int:
        if not 0 <= reader < MAX_READERS:
            raise DatasetError(
                f"DataLoader worker {reader} is beyond the {MAX_READERS} workers a PatchDataset "
                "supports; use fewer workers"
            )
        return reader

    @property
    def generation(self) -> int:
        """How many times :meth:`set` was called (in any process)."""
        return int(self._shared[MAX_READERS])

    def set(self, epoch: int) -> None:
        """The next iteration of every reader reads ``epoch``."""
        for i in range(MAX_READERS):
            self._shared[i] = int(epoch)
        self._shared[MAX_READERS] += 1

    def peek(self, reader: int) -> int:
        """The epoch the next iteration of ``reader`` reads."""
        return int(self._shared[self._slot(reader)])

    def start(self, reader: int) -> int:
        """The epoch of a new iteration of ``reader`` (the slot advances)."""
        slot = self._slot(reader)
        epoch = int(self._shared[slot])
        self._shared[slot] = epoch + 1
        return epoch

    def resume(self, reader: int, epoch: int) -> int:
        """A new iteration of ``reader`` that resumes ``epoch``."""
        self._shared[self._slot(reader)] = int(epoch) + 1
        return int(epoch)
