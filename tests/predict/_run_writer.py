"""Run a PatchDataset over a table through a deterministic model into a
PredictionWriter: what one process (or DDP rank, from RANK/WORLD_SIZE) of a
real inference job does. Used by the tests as a subprocess.

    python _run_writer.py TABLE OUT [--workers N] [--stop-after B] [--shuffle]

``--stop-after B`` dies abruptly (``os._exit``) after B batches, without
closing the writer: an interrupted job.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from model import toy_model  # noqa: E402

from zarrdask.dataset import PatchDataset  # noqa: E402
from zarrdask.predict import PredictionWriter  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("table")
    parser.add_argument("out")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--stop-after", type=int, default=None)
    parser.add_argument("--shuffle", action="store_true")
    parser.add_argument("--blend", default="gaussian")
    args = parser.parse_args()
    ds = PatchDataset(args.table, shuffle=args.shuffle, seed=1)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=args.workers)
    writer = PredictionWriter(args.table, args.out, channels=2, blend=args.blend, chunks=100)
    for i, batch in enumerate(loader):
        if args.stop_after is not None and i == args.stop_after:
            os._exit(3)
        writer.write(toy_model(batch["images"]), batch["position"], batch["image_id"])
    done = writer.close()
    print("complete" if all(done.values()) else "incomplete", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
