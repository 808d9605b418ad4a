"""Command line: ``zarrdask demo``, ``zarrdask inspect``, ``zarrdask grid``.

Argument parsing only; every command calls the public API.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _storage_options(text: str | None) -> dict | None:
    return json.loads(text) if text else None


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .io import open_pyramid
    from .summary import describe_pyramid

    tree = open_pyramid(args.source, axes=args.axes, data_group=args.data_group,
                        storage_options=_storage_options(args.storage_options))
    print(describe_pyramid(tree))
    return 0


def _ints(text: str | None) -> int | list[int] | None:
    if text is None:
        return None
    values = [int(v) for v in str(text).replace("x", ",").split(",") if v.strip()]
    return values[0] if len(values) == 1 else values


def _min_area(text: str) -> float:
    value = float(text)
    return int(value) if value >= 1 and value.is_integer() else value


class _Cluster:
    """A distributed client on ``--scheduler`` or on a new LocalCluster."""

    def __init__(self, scheduler: str | None, workers: int, threads: int) -> None:
        self.scheduler, self.workers, self.threads = scheduler, workers, threads
        self.cluster = None

    def __enter__(self):
        from distributed import Client, LocalCluster

        if self.scheduler:
            self.client = Client(self.scheduler)
        else:
            self.cluster = LocalCluster(n_workers=self.workers, threads_per_worker=self.threads,
                                        processes=True, dashboard_address=None)
            self.client = Client(self.cluster)
        return self.client

    def __exit__(self, *exc) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _grid_table(args: argparse.Namespace, sources: list, client) -> object:
    from .grid.build import build_table

    masks = args.mask if args.mask not in (None, "none") else None
    tissue = {"mask_scale": args.mask_scale} if masks == "tissue" else None
    specs = [
        {"source": s, "axes": args.axes, "data_group": args.data_group, "level": args.level,
         "storage_options": _storage_options(args.storage_options)}
        for s in sources
    ]
    return build_table(
        specs, patch_size=_ints(args.patch_size), stride=_ints(args.stride), pad=_ints(args.pad),
        min_area=_min_area(args.min_area), masks=masks, tissue_options=tissue,
        allow_incomplete_patches=args.allow_incomplete, sampler=args.sampler, seed=args.seed,
        client=client, progress=not args.quiet, on_error=args.on_error,
    )


def _cmd_grid(args: argparse.Namespace) -> int:
    with _Cluster(args.scheduler, args.workers, args.threads) as client:
        table = _grid_table(args, args.sources, client)
    table.to_parquet(args.out)
    print(f"{table!r}\nwritten to {args.out}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .datasets import write_synthetic_slide
    from .io import open_pyramid
    from .summary import describe_pyramid
    from .table import read_table

    os.makedirs(args.workdir, exist_ok=True)
    slide = os.path.join(args.workdir, "synthetic_slide.zarr")
    print(f"[1/3] writing a synthetic {args.size}x{args.size} RGB slide (seed {args.seed}) to {slide}")
    write_synthetic_slide(slide, size=args.size, chunk=args.chunk, seed=args.seed)
    print(describe_pyramid(open_pyramid(slide)))

    out = os.path.join(args.workdir, "patches.parquet")
    print(f"[2/3] tissue mask + {args.patch_size} patch grid on a LocalCluster "
          f"({args.workers} worker processes)")
    grid_args = argparse.Namespace(
        patch_size=args.patch_size, stride=None, pad=None, min_area="1", mask="tissue",
        mask_scale=1 / 16, allow_incomplete=False, sampler="grid", seed=args.seed,
        quiet=True, on_error="raise", axes=None, data_group=None, level=None,
        storage_options=None)
    with _Cluster(None, args.workers, 1) as client:
        table = _grid_table(grid_args, [slide], client)
    table.to_parquet(out)
    table = read_table(out)
    total = len(table.frame)
    frac = float(table.frame["coverage"].mean()) if total else 0.0
    print(f"{table!r}\n  written to {out}; mean tissue coverage of kept patches {frac:.2f}")

    print("[3/3] streaming patches to torch")
    _demo_stream(out, args.batches)
    return 0


def _demo_stream(table_path: str, batches: int) -> None:
    try:
        from .dataset import PatchDataset
    except ImportError:  # the streaming dataset is optional for the demo
        print("  (zarrdask.dataset is not available in this build)")
        return
    import torch

    loader = torch.utils.data.DataLoader(PatchDataset(table_path, shuffle=True, seed=0),
                                         batch_size=16, num_workers=2)
    for i, batch in enumerate(loader):
        images = batch["images"]
        print(f"  batch {i}: images {tuple(images.shape)} {images.dtype}, "
              f"first position {batch['position'][0].tolist()}")
        if i + 1 >= batches:
            break


def _cmd_show(args: argparse.Namespace) -> int:
    from .plot.sheet import show

    for path in show(args.sources, table=args.table, mask=args.mask, out=args.out,
                     max_side=args.max_side, color_by=args.color_by,
                     storage_options=_storage_options(args.storage_options)):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``zarrdask`` argument parser."""
    parser = argparse.ArgumentParser(prog="zarrdask", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="print dims, shape, chunks, levels and scale of a source")
    p.add_argument("source", help="path or URL of an image (zarr, OME-NGFF, TIFF, PNG...)")
    p.add_argument("--axes", default=None, help="axes of the stored array, e.g. YXC")
    p.add_argument("--data-group", default=None, help="zarr path or TIFF 'series/level'")
    p.add_argument("--storage-options", default=None, help="fsspec options as JSON")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("grid", help="build a coordinate table (Parquet) on a dask cluster")
    p.add_argument("sources", nargs="+", help="image paths or URLs")
    p.add_argument("--patch-size", required=True, help="e.g. 256 or 256,256")
    p.add_argument("--stride", default=None, help="default: the patch size")
    p.add_argument("--pad", default=None, help="pixels added on each side at read time")
    p.add_argument("--min-area", default="1", help="fraction (<1) or pixel count (>=1)")
    p.add_argument("--mask", default=None, choices=["tissue", "none"], help="mask to apply")
    p.add_argument("--mask-scale", type=float, default=1 / 16, help="tissue mask scale")
    p.add_argument("--allow-incomplete", action="store_true", help="keep edge patches")
    p.add_argument("--sampler", default="grid", choices=["grid", "blue-noise"])
    p.add_argument("--seed", type=int, default=0, help="seed of random samplers")
    p.add_argument("--axes", default=None, help="axes of the stored arrays, e.g. YXC")
    p.add_argument("--data-group", default=None, help="zarr path or TIFF 'series/level'")
    p.add_argument("--level", type=int, default=None, help="pyramid level to read")
    p.add_argument("--storage-options", default=None, help="fsspec options as JSON")
    p.add_argument("--on-error", default="raise", choices=["raise", "skip"])
    p.add_argument("--out", required=True, help="output Parquet path")
    p.add_argument("--scheduler", default=None, help="address of a running dask scheduler")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    p.add_argument("--threads", type=int, default=1, help="threads per LocalCluster worker")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_grid)

    p = sub.add_parser("demo", help="run the main job on a synthetic slide")
    p.add_argument("--workdir", default="zarrdask-demo", help="where to write (default ./zarrdask-demo)")
    p.add_argument("--size", type=int, default=8192, help="slide edge in pixels")
    p.add_argument("--chunk", type=int, default=512, help="chunk edge in pixels")
    p.add_argument("--seed", type=int, default=0, help="random seed of the synthetic slide")
    p.add_argument("--patch-size", default="256", help="patch edge in pixels")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    p.add_argument("--batches", type=int, default=3, help="batches to stream at the end")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("show", help="thumbnail + mask contour + kept patches as PNG (QC)")
    p.add_argument("sources", nargs="+", help="image paths or URLs")
    p.add_argument("--table", default=None, help="coordinate table (Parquet) whose patches to draw")
    p.add_argument("--mask", default=None, help="'tissue' or a mask path/URL")
    p.add_argument("--out", default="qc.png",
                   help="PNG (one slide: 1:1 thumbnail; several: contact sheet) or a folder")
    p.add_argument("--max-side", type=int, default=1024, help="largest thumbnail side")
    p.add_argument("--color-by", default="coverage", help="table column colouring the boxes")
    p.add_argument("--storage-options", default=None, help="fsspec options as JSON")
    p.set_defaults(func=_cmd_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``zarrdask`` console script."""
    args = build_parser().parse_args(argv)
    from .errors import ZarrdaskError

    try:
        return args.func(args)
    except ZarrdaskError as exc:
        print(f"zarrdask {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
