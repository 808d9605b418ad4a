"""``zarrdask inspect``, ``zarrdask demo`` and ``zarrdask show``."""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import args as types
from .cluster import Cluster, add_cluster_options, check_dashboard
from .grid import grid_table
from .report import format_summary, table_summary

__all__ = ["add_inspect", "add_demo", "add_show"]


def add_inspect(sub) -> argparse.ArgumentParser:
    """The ``inspect`` subcommand."""
    p = sub.add_parser(
        "inspect", help="print dims, shape, chunks, levels and scale of a source",
        description="Open a source lazily (metadata only) and print its dims, dtype, "
                    "objective power, associated images and, per level, shape, chunks, "
                    "physical scale, um/px and magnification.",
        epilog="examples:\n  zarrdask inspect slide.svs\n"
               "  zarrdask inspect s3://bucket/slide.zarr --storage-options '{\"anon\": true}'\n"
               "  zarrdask inspect slide.ome.tif --json | jq '.levels[].mpp'\n")
    p.add_argument("source", help="path or URL of an image (zarr, OME-NGFF, TIFF, PNG...)")
    p.add_argument("--axes", default=None, help="axes of the stored array, e.g. YXC")
    p.add_argument("--data-group", default=None, help="zarr path or TIFF 'series/level'")
    p.add_argument("--storage-options", type=types.storage_options, default=None,
                   help="fsspec options as a JSON object, e.g. '{\"anon\": true}'")
    p.add_argument("--json", action="store_true", help="print the facts as one JSON object")
    p.set_defaults(func=_cmd_inspect)
    return p


def _cmd_inspect(args: argparse.Namespace) -> int:
    from ..io import open_pyramid
    from ..summary import describe_pyramid, pyramid_summary

    tree = open_pyramid(args.source, axes=args.axes, data_group=args.data_group,
                        storage_options=args.storage_options)
    print(json.dumps(pyramid_summary(tree), indent=2) if args.json else describe_pyramid(tree))
    return 0


def add_demo(sub) -> argparse.ArgumentParser:
    """The ``demo`` subcommand."""
    p = sub.add_parser(
        "demo", help="run the main job on two synthetic slides",
        description="Write a synthetic slide as OME-NGFF zarr and another as a pyramidal "
                    "OME-TIFF, build their tissue-masked patch table on a LocalCluster, and "
                    "stream a few batches to torch. The files it writes are the ones the "
                    "README and the docs use.",
        epilog="examples:\n  zarrdask demo\n  zarrdask demo --size 2048 --workers 1 --batches 2\n")
    p.add_argument("--workdir", default="zarrdask-demo", help="where to write")
    p.add_argument("--size", type=types.at_least(256), default=8192, help="slide edge in pixels")
    p.add_argument("--chunk", type=types.at_least(16), default=512, help="chunk edge in pixels")
    p.add_argument("--seed", type=int, default=0, help="random seed of the synthetic slide")
    p.add_argument("--patch-size", type=types.int_list(1), default=256,
                   help="patch edge in pixels")
    p.add_argument("--batches", type=types.at_least(0), default=3,
                   help="batches to stream at the end")
    add_cluster_options(p, threads=False)
    p.set_defaults(func=_cmd_demo)
    return p


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..datasets import write_synthetic_ome_tiff, write_synthetic_slide
    from ..io import open_pyramid
    from ..summary import describe_pyramid

    check_dashboard(args.dashboard)
    os.makedirs(args.workdir, exist_ok=True)
    slide = os.path.join(args.workdir, "synthetic_slide.zarr")
    tiff = os.path.join(args.workdir, "synthetic_slide.ome.tif")
    print(f"[1/3] writing two synthetic {args.size}x{args.size} RGB slides: OME-NGFF zarr "
          f"(seed {args.seed}) to {slide}, pyramidal OME-TIFF (seed {args.seed + 1}) to {tiff}")
    write_synthetic_slide(slide, size=args.size, chunk=args.chunk, seed=args.seed)
    write_synthetic_ome_tiff(tiff, size=args.size, tile=args.chunk, seed=args.seed + 1)
    for path in (slide, tiff):
        print(describe_pyramid(open_pyramid(path)))

    out = os.path.join(args.workdir, "patches.parquet")
    print(f"[2/3] tissue masks + {args.patch_size} patch grid of both slides on a LocalCluster "
          f"({args.workers} worker processes)", flush=True)
    grid_args = argparse.Namespace(
        patch_size=args.patch_size, stride=None, pad=None, min_area=1, mask="tissue",
        mask_scale=1 / 16, allow_incomplete=False, sampler="grid", seed=args.seed,
        quiet=True, on_error="raise", axes=None, data_group=None, level=None,
        storage_options=None)
    with Cluster(None, args.workers, 1, dashboard=args.dashboard) as client:
        table = grid_table(grid_args, [slide, tiff], client)
    table.to_parquet(out)
    print(format_summary(table_summary(table, out=out)))

    print("[3/3] streaming patches to torch (both formats, channel-first)")
    _demo_stream(out, args.batches)
    return 0


def _demo_stream(table_path: str, batches: int) -> None:
    import torch

    from ..dataset import PatchDataset

    loader = torch.utils.data.DataLoader(PatchDataset(table_path, shuffle=True, seed=0),
                                         batch_size=16, num_workers=2)
    for i, batch in enumerate(loader):
        if i >= batches:
            break
        images = batch["images"]
        print(f"  batch {i}: images {tuple(images.shape)} {images.dtype}, "
              f"first position {batch['position'][0].tolist()}")


def add_show(sub) -> argparse.ArgumentParser:
    """The ``show`` subcommand."""
    p = sub.add_parser(
        "show", help="thumbnail + mask contour + kept patches as PNG (QC)",
        description="Draw each slide's thumbnail with its mask contour and the patches of a "
                    "table (coloured by a column) into PNG files.",
        epilog="examples:\n  zarrdask show slide.svs --mask tissue --out qc.png\n"
               "  zarrdask show a.zarr b.zarr --table patches.parquet --out qc/\n")
    p.add_argument("sources", nargs="+", help="image paths or URLs")
    p.add_argument("--table", default=None, help="coordinate table (Parquet) whose patches to draw")
    p.add_argument("--mask", default=None, help="'tissue' or a mask path/URL")
    p.add_argument("--out", default="qc.png",
                   help="PNG (one slide: 1:1 thumbnail; several: contact sheet) or a folder")
    p.add_argument("--max-side", type=types.at_least(16), default=1024,
                   help="largest thumbnail side in pixels")
    p.add_argument("--color-by", default="coverage", help="table column colouring the boxes")
    p.add_argument("--storage-options", type=types.storage_options, default=None,
                   help="fsspec options as a JSON object")
    p.set_defaults(func=_cmd_show)
    return p


def _cmd_show(args: argparse.Namespace) -> int:
    from ..plot.sheet import show

    for path in show(args.sources, table=args.table, mask=args.mask, out=args.out,
                     max_side=args.max_side, color_by=args.color_by,
                     storage_options=args.storage_options):
        print(path, file=sys.stdout)
    return 0
