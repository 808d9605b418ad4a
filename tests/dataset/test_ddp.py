"""The DDP default under real ``torchrun`` ranks (gloo): every rank runs the
same number of batches, so a collective per batch never waits for a rank
that has stopped. Bounded by the gloo timeout and a hard subprocess timeout."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest

from zarrdask.table import PatchTable

_RANK_SCRIPT = textwrap.dedent('''
    import datetime, json, os, sys

    import torch
    import torch.distributed as dist
    from torch.utils.data import DataLoader

    from zarrdask.dataset import PatchDataset

    table_path, out = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=20))
    rank = dist.get_rank()
    ds = PatchDataset(table_path, shuffle=True, seed=5)  # the default sharding
    loader = DataLoader(ds, batch_size=8, num_workers=2, multiprocessing_context="fork")
    keys, batches = [], 0
    for batch in loader:
        step = torch.ones(1)
        dist.all_reduce(step)  # a training step's gradient sync
        batches += 1
        keys.extend([int(i), int(p[0][0]), int(p[1][0])]
                    for i, p in zip(batch["image_id"], batch["position"].tolist()))
    total = torch.tensor([batches])
    dist.all_reduce(total, op=dist.ReduceOp.MAX)
    with open(os.path.join(out, f"rank{rank}.json"), "w") as fh:
        json.dump({"keys": keys, "batches": batches, "len": len(ds)}, fh)
    dist.destroy_process_group()
''')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


needs_torchrun = pytest.mark.skipif(
    shutil.which("torchrun") is None
    and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
    reason="torchrun not installed")


def _run_two_ranks(script_text: str, slide: str, make_table, tmp_path, *args: str,
                   part_rows: int | None = None) -> None:
    """Run ``script_text`` on 2 torchrun/gloo ranks over a 33-row table of
    ``slide`` (uneven on purpose), bounded by a hard timeout; with
    ``part_rows``, the table is a partitioned folder of parts of that many rows."""
    import zarrdask

    full = make_table([slide], patch=64, stride=64)
    table = PatchTable(full.frame.iloc[:33].reset_index(drop=True), full.meta)
    if part_rows is None:
        path = table.to_parquet(tmp_path / "t33.parquet")
    else:
        import pyarrow as pa

        from zarrdask.table_files import write_folder
        from zarrdask.table_layout import write_layout

        path = str(tmp_path / "t33.parquet")
        rows = pa.Table.from_pandas(table.frame, preserve_index=False)
        write_folder(path, lambda folder: write_layout(folder, rows, table.meta,
                                                       part_rows=part_rows, row_group=part_rows),
                     overwrite=True)
        from zarrdask.table_layout import FolderTable

        assert len(FolderTable(path).partitions) == -(-33 // part_rows)  # read part by part
    script = tmp_path / "rank.py"
    script.write_text(script_text)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(script), str(path),
           str(tmp_path), *args]
    root = os.path.dirname(os.path.dirname(os.path.abspath(zarrdask.__file__)))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]


@needs_torchrun
@pytest.mark.parametrize("part_rows", [None, pytest.param(8, marks=pytest.mark.slow)],
                         ids=["in-memory", "partitioned"])
def test_torchrun_ranks_get_equal_batches_by_default_on_uneven_data(slide3, make_table, tmp_path,
                                                                    part_rows):
    _run_two_ranks(_RANK_SCRIPT, slide3, make_table, tmp_path, part_rows=part_rows)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    # 17 samples per rank (one patch read twice, as DistributedSampler), 8 + 9 per worker
    assert [r["batches"] for r in results] == [3, 3]
    assert [len(r["keys"]) for r in results] == [r["len"] for r in results] == [17, 17]
    keys = [tuple(k) for r in results for k in r["keys"]]
    assert len(set(keys)) == 33 and len(keys) == 34


_LOADER_RANK_SCRIPT = textwrap.dedent('''
    import datetime, json, os, sys

    import torch
    import torch.distributed as dist

    from zarrdask import PatchLoader

    table_path, out, even = sys.argv[1], sys.argv[2], sys.argv[3] == "even"
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=20))
    rank = dist.get_rank()
    loader = PatchLoader(table_path, batch_size=4, threads=2, shuffle=True, seed=5,
                         even_shards=even)
    keys, batches = [], 0
    for batch in loader:
        if even:
            step = torch.ones(1)
            dist.all_reduce(step)  # a training step's gradient sync
        batches += 1
        keys.extend([int(i), int(p[0][0]), int(p[1][0])]
                    for i, p in zip(batch["image_id"], batch["position"].tolist()))
    dist.barrier()
    with open(os.path.join(out, f"loader{rank}.json"), "w") as fh:
        json.dump({"keys": keys, "batches": batches, "len": len(loader)}, fh)
    dist.destroy_process_group()
''')


@needs_torchrun
@pytest.mark.parametrize("mode", ["even", "exact"])
def test_patch_loader_shards_across_torchrun_ranks(slide3, make_table, tmp_path, mode):
    _run_two_ranks(_LOADER_RANK_SCRIPT, slide3, make_table, tmp_path, mode)
    results = [json.loads((tmp_path / f"loader{r}.json").read_text()) for r in range(2)]
    keys = [tuple(k) for r in results for k in r["keys"]]
    assert [r["batches"] for r in results] == [r["len"] for r in results]
    if mode == "even":  # 17 samples per rank, one patch read twice
        assert [len(r["keys"]) for r in results] == [17, 17]
        assert [r["batches"] for r in results] == [5, 5]
        assert len(set(keys)) == 33 and len(keys) == 34
    else:  # every patch exactly once
        assert sorted(len(r["keys"]) for r in results) == [16, 17]
        assert len(set(keys)) == len(keys) == 33
