"""Writers that start at the same moment all open the one output."""

from __future__ import annotations

import threading

import numpy as np

from zarrdask.predict.ngff import open_level0
from zarrdask.predict.plan import plan_outputs


def test_writers_creating_the_output_at_once_all_get_it(overlap_table, tmp_path):
    geo = plan_outputs(overlap_table, level=None, chunks=100, storage_options=None)[0]
    for attempt in range(6):
        location = str(tmp_path / f"out{attempt}.ome.zarr")
        barrier = threading.Barrier(6)
        results: list = []

        def open_it(location=location, barrier=barrier, results=results) -> None:
            barrier.wait()
            try:
                results.append(open_level0(location, geo, channels=2, dtype=np.dtype("float32"),
                                           storage_options=None))
            except Exception as exc:  # collected: the assertion below names it
                results.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        errors = [r for r in results if isinstance(r, Exception)]
        assert not errors, f"attempt {attempt}: {errors[0]!r}"
        assert {tuple(r.shape) for r in results} == {(2, 300, 300)}
