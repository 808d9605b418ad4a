"""The grid graph's layout and execution: which chunks each grid task covers,
running the tasks (local threads or a distributed client, with an optional
progress bar) and assembling their rows into one ordered frame."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import dask
import numpy as np
import pandas as pd

from ..table import position_columns

__all__ = ["task_boxes", "expected_tasks", "run_tasks", "assemble"]


def task_boxes(roi_start: dict, roi_stop: dict, chunk_shape: dict, dims: Sequence[str],
                chunks_per_task: int) -> list[tuple[dict, dict]]:
    """Boxes of up to ``chunks_per_task`` chunks covering the ROI, in
    row-major chunk order: runs along the last dim, or, when a whole row of
    chunks is shorter than that, blocks of whole rows (so a 4096² image in
    512² chunks is 4 tasks of 16 chunks at the default, not 8 of 8)."""
    ranges = []
    for d in dims:
        c = chunk_shape[d]
        ranges.append(range(roi_start[d] // c, (roi_stop[d] - 1) // c + 1))
    n_last = len(ranges[-1])
    rows = max(1, chunks_per_task // n_last) if len(dims) > 1 else 1
    # runs of chunk indices per dim: the last dim in runs of chunks_per_task,
    # the one before in blocks of ``rows``, the others one by one
    runs = [[(i, i + 1) for i in r] for r in ranges]
    runs[-1] = [(j, min(j + chunks_per_task, ranges[-1].stop))
                for j in range(ranges[-1].start, ranges[-1].stop, chunks_per_task)]
    if len(dims) > 1:
        r = ranges[-2]
        runs[-2] = [(i, min(i + rows, r.stop)) for i in range(r.start, r.stop, rows)]
    boxes = []
    for idx in itertools.product(*runs):
        start, stop = {}, {}
        for d, (i0, i1) in zip(dims, idx, strict=True):
            start[d] = max(i0 * chunk_shape[d], roi_start[d])
            stop[d] = min(i1 * chunk_shape[d], roi_stop[d])
        boxes.append((start, stop))
    return boxes


def run_tasks(tasks: list, *, client: Any, progress: bool) -> list[dict]:
    """Compute delayed grid tasks on ``client`` (or local threads), with an
    optional progress bar; results in task order."""
    if not tasks:
        return []
    if client is not None:
        if progress:
            return _run_with_progress(tasks, client)
        return client.gather(client.compute(tasks))
    if progress:
        from dask.callbacks import Callback
        from tqdm.auto import tqdm

        class _Bar(Callback):
            def _start_state(self, dsk, state):
                self.bar = tqdm(total=sum(len(state[k]) for k in ("ready", "waiting", "running")),
                                desc="grid", unit="task")

            def _posttask(self, key, result, dsk, state, worker_id):
                self.bar.update()

            def _finish(self, dsk, state, errored):
                self.bar.close()

        with _Bar():
            return list(dask.compute(*tasks, scheduler="threads"))
    return list(dask.compute(*tasks, scheduler="threads"))


def _stage_tasks(tasks: list, prefix: str) -> list:
    """The distinct tasks named ``prefix-...`` that ``tasks`` depend on (the
    per-image masks the grid tasks share), as delayed objects."""
    from dask.delayed import Delayed

    found: dict = {}
    for task in tasks:
        graph = task.__dask_graph__()
        for key in graph:
            if isinstance(key, str) and key.startswith(prefix) and key not in found:
                found[key] = Delayed(key, graph)
    return list(found.values())


def _run_with_progress(tasks: list, client: Any) -> list[dict]:
    """Grid tasks on ``client`` with one bar over both stages: the per-image
    masks first (``masks``), then the grid tasks (``grid``). The masks are
    submitted under their own keys, so the scheduler computes each once."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    masks = client.compute(_stage_tasks(tasks, "mask-"))
    futures = client.compute(tasks)
    bar = tqdm(total=len(masks) + len(futures), desc="masks" if masks else "grid", unit="task")
    mask_keys, left = {f.key for f in masks}, len(masks)
    for future in as_completed([*masks, *futures]):
        if future.key in mask_keys:
            left -= 1
        bar.update()
        if not left and bar.desc != "grid":
            bar.set_description("grid")
    bar.close()
    del masks
    return client.gather(futures)


def assemble(parts: list[dict], dims: Sequence[str]) -> pd.DataFrame:
    """The rows of all grid tasks, ordered by image, chunk, then position."""
    positions = position_columns(dims)
    cols = ["image_id", *positions, "chunk_id", "coverage"]
    if not parts:
        return pd.DataFrame({c: np.array([], dtype=np.int64) for c in cols})
    data = {c: np.concatenate([p[c] for p in parts]) for c in cols}
    order = np.lexsort([data[c] for c in reversed(["image_id", "chunk_id", *positions])])
    return pd.DataFrame({c: data[c][order] for c in cols})


def expected_tasks(shape: Mapping[str, int], chunks: Mapping[str, int], chunks_per_task: int) -> int:
    """Number of grid tasks for one image (for progress estimates and tests)."""
    dims = list(shape)
    grid = [math.ceil(shape[d] / chunks[d]) for d in dims]
    n = math.ceil(grid[-1] / chunks_per_task)
    if len(dims) > 1:
        rows = max(1, chunks_per_task // grid[-1])
        n *= math.ceil(grid[-2] / rows) * math.prod(grid[:-2])
    return n
