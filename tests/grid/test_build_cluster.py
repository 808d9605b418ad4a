"""build_table on a real dask.distributed LocalCluster with worker processes,
including a worker that dies in the middle of the build."""

from __future__ import annotations

import os

import pytest
from distributed import WorkerPlugin

from zarrdask.grid.build import build_table


class _KillFirstGridTask(WorkerPlugin):
    """Kills its worker process the first time any worker starts a grid task."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def transition(self, key, start, finish, **kwargs):
        name = key if isinstance(key, str) else str(key)
        if finish == "executing" and name.startswith("grid-"):
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.close(fd)
            os._exit(1)



@pytest.mark.timeout(240)
def test_cluster_build_equals_local_build(client, slide_v3, slide_v2):
    kwargs = {"patch_size": 128, "masks": "tissue", "min_area": 0.25, "chunks_per_task": 2}
    local = build_table([slide_v3, slide_v2], **kwargs)
    remote = build_table([slide_v3, slide_v2], client=client, **kwargs)
    assert remote.equals(local) and len(local) > 0


@pytest.mark.timeout(240)
def test_killed_worker_mid_build_gives_identical_table(client, slide_v3, tmp_path):
    kwargs = {"patch_size": 64, "masks": "tissue", "chunks_per_task": 1}
    clean = build_table(slide_v3, **kwargs)
    marker = str(tmp_path / "killed")
    client.register_plugin(_KillFirstGridTask(marker), name="kill-once")
    try:
        table = build_table(slide_v3, client=client, **kwargs)
    finally:
        client.unregister_worker_plugin("kill-once")
    assert os.path.exists(marker), "no worker was killed: the test did not test anything"
    assert table.hash == clean.hash
    assert table.frame.equals(clean.frame)
    client.wait_for_workers(2, timeout=60)
