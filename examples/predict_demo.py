"""Run a tiny torch model over the demo slide and write its prediction as
OME-NGFF, then reopen it.

    python examples/predict_demo.py [--workdir DIR] [--size 2048] [--workers 2]

Steps: write a synthetic slide (``zarrdask.datasets.write_synthetic_slide``),
build a tissue-masked table of overlapping padded patches, stream them with
``PatchDataset`` through a small convolutional network (seeded, untrained:
the point is the plumbing), blend the per-pixel "tissue probability" with a
Gaussian window into ``DIR/predictions/<slide>.ome.zarr``, and reopen the
result (with its pyramid) with ``zarrdask.open_pyramid``.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

import zarrdask as zds
from zarrdask.dataset import PatchDataset
from zarrdask.datasets import write_synthetic_slide


class TinySegmenter(torch.nn.Module):
    """Two 3x3 convolutions and a sigmoid: RGB in, one probability map out
    (same size as the input patch, padding included)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 1, 3, padding=1), torch.nn.Sigmoid())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.float() / 255.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="predict_demo")
    parser.add_argument("--size", type=int, default=2048, help="slide side in pixels")
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    os.makedirs(args.workdir, exist_ok=True)
    slide = write_synthetic_slide(os.path.join(args.workdir, "slide.zarr"), size=args.size,
                                  chunk=min(512, args.size), seed=args.seed)
    table = zds.build_table([slide], patch_size=args.patch, stride=args.patch * 3 // 4,
                            pad=args.patch // 8, masks="tissue", allow_incomplete_patches=True)
    print(f"table: {table!r}")

    torch.manual_seed(args.seed)
    model = TinySegmenter().eval()
    loader = torch.utils.data.DataLoader(PatchDataset(table), batch_size=16,
                                         num_workers=args.workers)
    out = os.path.join(args.workdir, "predictions")
    with zds.PredictionWriter(table, out, channels=1, blend="gaussian") as writer, \
            torch.no_grad():
        for batch in loader:
            writer.write(model(batch["images"]), batch["position"], batch["image_id"])
    path = writer.outputs[0]
    print(f"wrote {path} (complete: {writer.complete[0]})")

    pyramid = zds.open_pyramid(path)
    level0 = pyramid["0"]["image"]
    values = level0.values
    covered = np.isfinite(values)
    print(f"reopened: levels {list(pyramid.children)}, level 0 {dict(level0.sizes)}, "
          f"pixel {level0.x.attrs['scale']} {level0.x.attrs['units']}")
    print(f"predicted {covered.mean():.1%} of the slide; probability range "
          f"[{np.nanmin(values):.3f}, {np.nanmax(values):.3f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
