"""Several writers at once, and reruns, give the bytes of one sequential run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zarrdask.dataset import PatchDataset
from zarrdask.predict import PredictionWriter

from .conftest import tree_bytes

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from model import toy_model  # noqa: E402


def _sequential(table_path, out) -> dict[str, bytes]:
    loader = torch.utils.data.DataLoader(PatchDataset(table_path), batch_size=4)
    with PredictionWriter(table_path, out, channels=2, blend="gaussian", chunks=100) as writer:
        for batch in loader:
            writer.write(toy_model(batch["images"]), batch["position"], batch["image_id"])
    assert writer.complete == {0: True}
    return tree_bytes(writer.outputs[0])


@pytest.fixture(scope="module")
def reference(overlap_table_path, tmp_path_factory) -> dict[str, bytes]:
    return _sequential(overlap_table_path, tmp_path_factory.mktemp("reference"))


def _script(table, out, *args, env=None, check=True) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(HERE.parents[1]), full_env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(HERE / "_run_writer.py"), table, str(out), *args],
                          env=full_env, capture_output=True, text=True, timeout=240)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_a_rerun_rewrites_the_same_bytes(overlap_table_path, reference, tmp_path):
    _sequential(overlap_table_path, tmp_path)
    assert tree_bytes(tmp_path / "slide.ome.zarr") == _sequential(overlap_table_path, tmp_path)
    assert tree_bytes(tmp_path / "slide.ome.zarr") == reference


def test_two_dataloader_workers_shuffled_give_the_sequential_bytes(overlap_table_path, reference,
                                                                  tmp_path):
    proc = _script(overlap_table_path, tmp_path, "--workers", "2", "--shuffle")
    assert proc.stdout.strip() == "complete"
    assert tree_bytes(tmp_path / "slide.ome.zarr") == reference


def test_two_processes_writing_at_once_give_the_sequential_bytes(overlap_table_path, reference,
                                                                tmp_path):
    # two ranks of one job (RANK/WORLD_SIZE shard the dataset), started together;
    # their shares meet inside output chunks, which neither can finish alone
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, str(HERE / "_run_writer.py"), overlap_table_path,
                               str(tmp_path), "--shuffle"],
                              env={**env, "RANK": str(r), "WORLD_SIZE": "2"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    outputs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=240)
            assert p.returncode == 0, err[-3000:]
            outputs.append(out.strip())
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert "complete" in outputs  # the last to close finished the image
    assert tree_bytes(tmp_path / "slide.ome.zarr") == reference
    assert not (tmp_path / ".zarrdask-predict").exists()


def test_an_interrupted_run_rerun_gives_the_same_bytes(overlap_table_path, reference, tmp_path):
    killed = _script(overlap_table_path, tmp_path, "--stop-after", "6", check=False)
    assert killed.returncode == 3, killed.stderr[-3000:]
    partial = tree_bytes(tmp_path / "slide.ome.zarr")
    assert partial != reference  # some chunks were written, the pyramid was not
    proc = _script(overlap_table_path, tmp_path, "--shuffle")
    assert proc.stdout.strip() == "complete"
    assert tree_bytes(tmp_path / "slide.ome.zarr") == reference


def test_a_rank_that_closes_early_leaves_the_rest_to_the_last(overlap_table_path, reference,
                                                             tmp_path):
    first = _script(overlap_table_path, tmp_path, env={"RANK": "0", "WORLD_SIZE": "2"})
    assert first.stdout.strip() == "incomplete"
    assert (tmp_path / ".zarrdask-predict").exists()
    second = _script(overlap_table_path, tmp_path, env={"RANK": "1", "WORLD_SIZE": "2"})
    assert second.stdout.strip() == "complete"
    assert tree_bytes(tmp_path / "slide.ome.zarr") == reference


def _ddp_rank(rank: int, world: int, port: int, table_path: str, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        # even_shards: the last rank re-reads rows of the other, so some rows
        # reach the writer from both ranks
        ds = PatchDataset(table_path, even_shards=True, shuffle=True, seed=3)
        loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2,
                                             multiprocessing_context="fork")
        with PredictionWriter(table_path, out, channels=2, blend="gaussian",
                              chunks=100) as writer:
            for batch in loader:
                writer.write(toy_model(batch["images"]), batch["position"], batch["image_id"])
            dist.barrier()  # both ranks have written everything; they close at once
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(240)
def test_two_gloo_ranks_with_dataloader_workers_give_the_sequential_bytes(
        overlap_table_path, reference, tmp_path):
    import socket

    import torch.multiprocessing as tmp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tmp.spawn(_ddp_rank, args=(2, port, overlap_table_path, str(tmp_path)), nprocs=2, join=True)
    assert tree_bytes(tmp_path / "slide.ome.zarr") == reference
    assert not (tmp_path / ".zarrdask-predict").exists()
