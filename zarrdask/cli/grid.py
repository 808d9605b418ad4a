"""``zarrdask grid``: a coordinate table (Parquet) of many images on a dask cluster."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from . import args as types
from .args import UsageError
from .cluster import Cluster, add_cluster_options, check_dashboard
from .report import format_summary, table_summary

__all__ = ["add_parser", "grid_table", "check_grid_args"]

EXAMPLES = """\
examples:
  zarrdask grid slide.svs --patch-size 256 --mask tissue --out patches.parquet
  zarrdask grid a.zarr b.ome.tif --patch-size 128um --mpp 0.5 --mask tissue --out t.parquet
  zarrdask grid slide.zarr --patch-size 256,128 --stride 128 --out t.parquet
  zarrdask grid volume.zarr --spatial-axes ZYX --patch-size 16,64,64 --out t.parquet
  zarrdask grid s3://bucket/slide.zarr --storage-options '{"anon": true}' \\
      --patch-size 512 --out t.parquet
  zarrdask grid *.svs --patch-size 256 --mask tissue --scheduler tcp://head:8786 --out t.parquet
  zarrdask grid *.svs --patch-size 256 --dashboard --out t.parquet   # prints the dashboard link
  zarrdask grid slide.zarr --patch-size 256 --json --quiet --out t.parquet   # summary as JSON

Patch sizes given as a list name the last spatial axes (256,128 is y=256, x=128)
unless --spatial-axes names them.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``grid`` subcommand and its options."""
    p = sub.add_parser(
        "grid", help="build a coordinate table (Parquet) on a dask cluster",
        description="Open every source, compute tissue masks and the patch grid as one dask "
                    "graph on a LocalCluster or --scheduler, and write the coordinate table.",
        epilog=EXAMPLES)
    p.add_argument("sources", nargs="*",
                   help="image paths or URLs, glob patterns ('s3://bucket/*.zarr') or folders")
    p.add_argument("--files-from", default=None, metavar="LIST",
                   help="read sources from LIST, one path or URL per line ('-' for standard "
                        "input; blank lines and '#' comments skipped)")
    p.add_argument("--cohort", action="store_true",
                   help="build on the workers in batches into a partitioned table, reusing "
                        "unchanged images of the table at --out (docs: Cohort scale)")
    p.add_argument("--images-per-task", type=types.at_least(1), default=None,
                   help="with --cohort: images per task (default: 256, fewer so that small "
                        "cohorts still make at least 16 tasks)")
    p.add_argument("--patch-size", type=types.size_list(1), required=True,
                   help="pixels (256 or 256,256) or micrometres (128um or 64um,64um)")
    p.add_argument("--stride", type=types.size_list(1), default=None,
                   help="step between patches, like --patch-size (default: the patch size)")
    p.add_argument("--pad", type=types.size_list(0), default=None,
                   help="pixels (or um) added on each side at read time (default: 0)")
    p.add_argument("--spatial-axes", type=types.spatial_axes, default=None,
                   help="axes the patch spans, e.g. YX or ZYX; list values of --patch-size, "
                        "--stride and --pad are given in this order (default: the last "
                        "axes of ZYX, as many as values)")
    p.add_argument("--min-area", type=types.min_area, default=1,
                   help="mask coverage a patch needs: a fraction of the window (<1) or a "
                        "pixel count (>=1)")
    p.add_argument("--mask", default=None, choices=["tissue", "none"],
                   help="tissue: keep patches on tissue (Otsu on a low-resolution level); "
                        "none: every patch (default: none)")
    p.add_argument("--mask-scale", type=types.positive_float, default=1 / 16,
                   help="resolution of the tissue mask relative to the image")
    p.add_argument("--mask-mpp", type=types.positive_float, default=None,
                   help="tissue-mask resolution in um per pixel (instead of --mask-scale)")
    p.add_argument("--labels", action="append", default=None, metavar="PATH_OR_GEOJSON",
                   help="labels (GeoJSON annotations, a label image): once per source in "
                        "order ('none' for none), or one pattern like 'ann/{stem}.geojson'")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="also keep patches that run past the image border (padded at read time)")
    p.add_argument("--sampler", default="grid", choices=["grid", "blue-noise"],
                   help="grid: a regular grid; blue-noise: seeded random positions at least "
                        "a patch apart (Poisson disc)")
    p.add_argument("--seed", type=int, default=0, help="seed of random samplers")
    p.add_argument("--axes", default=None, help="axes of the stored arrays, e.g. YXC")
    p.add_argument("--data-group", default=None, help="zarr path or TIFF 'series/level'")
    p.add_argument("--level", type=types.level, default=None,
                   help="pyramid level to read: an index, or a magnification such as 20x")
    p.add_argument("--mpp", type=types.positive_float, default=None,
                   help="read the level closest to (not coarser than) this many um per pixel")
    p.add_argument("--storage-options", type=types.storage_options, default=None,
                   help="fsspec options as a JSON object, e.g. '{\"anon\": true}'")
    p.add_argument("--on-error", default="raise", choices=["raise", "skip"],
                   help="an image that cannot be opened: raise (stop, naming it) or skip "
                        "(go on; it is listed in the summary and the table's meta)")
    p.add_argument("--out", required=True, help="output Parquet path")
    p.add_argument("--scheduler", default=None,
                   help="address of a running dask scheduler, e.g. tcp://head:8786 "
                        "(default: start a LocalCluster)")
    p.add_argument("--wait-workers", type=types.positive_float, default=60,
                   help="seconds to wait for a worker on --scheduler")
    add_cluster_options(p, threads=True)
    p.add_argument("--json", action="store_true",
                   help="print a JSON summary (per-image patches, coverage, level, um/px, "
                        "timings) on stdout instead of the text table")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_grid, check=check_grid_args)
    return p


def _by_axis(value: object, axes: str | None) -> object:
    """A list of values as a dict keyed by axis: ``256,128`` names the last
    axes of ZYX (``{"y": 256, "x": 128}``), or ``axes`` in order."""
    if not isinstance(value, list):
        return value
    names = (axes or "zyx"[-len(value):]).lower()
    return dict(zip(names, value, strict=True))


def check_grid_args(args: argparse.Namespace) -> None:
    """Checks that need several options or the file system, before any
    cluster starts: :class:`UsageError` (exit 2, one line) on the first problem."""
    if args.level is not None and args.mpp is not None:
        raise UsageError(f"--level {args.level} and --mpp {args.mpp:g} both given; pass one "
                         "(--mpp chooses the level of each slide)")
    for flag in ("patch_size", "stride", "pad"):
        value = getattr(args, flag)
        if not isinstance(value, list):
            continue
        option = f"argument --{flag.replace('_', '-')}: {len(value)} values"
        if args.spatial_axes and len(value) != len(args.spatial_axes):
            raise UsageError(f"{option} for --spatial-axes {args.spatial_axes}; give one value, "
                             "or one per axis in that order")
        if not args.spatial_axes and len(value) > 3:
            raise UsageError(f"{option}, more than z, y, x; name the axes with --spatial-axes")
    from ..table_files import check_writable

    check_writable(args.out)  # naming --out (a ZarrdaskError)
    from ..grid.label_files import labels_for_sources

    args.sources = grid_sources(args)  # globs, folders and --files-from expanded
    if args.cohort and args.labels:
        raise UsageError("argument --labels: not available with --cohort yet; build labelled "
                         "tables without --cohort (or join slide-level labels afterwards with "
                         "zarrdask.join_image_labels)")
    args.labels = labels_for_sources(args.labels, args.sources)  # one labels source per image
    check_dashboard(args.dashboard)
    if args.on_error == "raise":
        for source in args.sources:
            if "://" not in source and not os.path.exists(source):
                raise UsageError(f"argument sources: {source} does not exist (or pass "
                                 "--on-error skip to go on without it)")


def grid_sources(args: argparse.Namespace) -> list:
    """``zarrdask grid`` sources: the arguments and the ``--files-from`` lines,
    glob patterns and folders expanded (:mod:`zarrdask.grid.inputs`)."""
    from ..grid.inputs import expand_sources, read_file_list

    given = list(args.sources or [])
    if args.files_from:
        given += read_file_list(args.files_from)
    if not given:
        raise UsageError("no image given; pass paths, URLs or glob patterns, or "
                         "--files-from LIST (one per line, - for standard input)")
    return expand_sources(given, storage_options=types.storage_options(args.storage_options))


def _grid_options(args: argparse.Namespace, client) -> dict:
    """The grid and mask options of ``args`` that ``build_table`` and
    ``build_cohort`` share (``demo`` passes a namespace without the µm options)."""
    masks = args.mask if args.mask not in (None, "none") else None
    mask_mpp = getattr(args, "mask_mpp", None)
    axes = getattr(args, "spatial_axes", None)
    return dict(
        patch_size=_by_axis(args.patch_size, axes), stride=_by_axis(args.stride, axes),
        pad=_by_axis(args.pad, axes), mpp=getattr(args, "mpp", None), mask_mpp=mask_mpp,
        min_area=args.min_area, masks=masks,
        tissue_options=({"mask_scale": args.mask_scale} if masks == "tissue" and mask_mpp is None
                        else None),
        allow_incomplete_patches=args.allow_incomplete, sampler=args.sampler, seed=args.seed,
        client=client, progress=not args.quiet, on_error=args.on_error,
    )


def grid_cohort(args: argparse.Namespace, sources: list, client) -> object:
    """``build_cohort`` with the options of ``args`` (``--cohort``)."""
    from ..grid.cohort import build_cohort

    return build_cohort(
        [{"source": s, "axes": args.axes, "data_group": args.data_group, "level": args.level}
         for s in sources], out=args.out,
        storage_options=types.storage_options(args.storage_options),
        images_per_task=args.images_per_task, **_grid_options(args, client))


def grid_table(args: argparse.Namespace, sources: list, client) -> object:
    """``build_table`` with the options of ``args`` (also used by ``demo``)."""
    from ..grid.build import build_table

    specs = [
        {"source": s, "axes": args.axes, "data_group": args.data_group, "level": args.level,
         "storage_options": types.storage_options(args.storage_options)}
        for s in sources
    ]
    axes = getattr(args, "spatial_axes", None)
    extra = {"spatial_axes": axes} if axes else {}
    return build_table(specs, labels=getattr(args, "labels", None),
                       **_grid_options(args, client), **extra)


def _cmd_grid(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    log = sys.stderr if args.json else sys.stdout
    with Cluster(args.scheduler, args.workers, args.threads, wait_workers=args.wait_workers,
                 dashboard=args.dashboard, log=log) as client:
        ready = time.perf_counter()
        if args.cohort:
            return _report_cohort(args, grid_cohort(args, args.sources, client), start, ready)
        table = grid_table(args, args.sources, client)
        built = time.perf_counter()
    written = time.perf_counter()  # after the cluster closed
    table.to_parquet(args.out)
    done = time.perf_counter()
    timings = {"cluster": ready - start, "build": built - ready, "write": done - written,
               "total": done - start}
    summary = table_summary(table, out=args.out, timings=timings)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def _report_cohort(args: argparse.Namespace, table: object, start: float, ready: float) -> int:
    """The summary of a ``--cohort`` build (a partitioned table, already written)."""
    build = table.manifest["meta"]["build"]
    done = time.perf_counter()
    if args.json:
        print(json.dumps({"out": args.out, "patches": len(table), "images": table.num_images,
                          "build": build, "timings_s": {"cluster": ready - start,
                                                        "build": done - ready,
                                                        "total": done - start}},
                         indent=2, default=str))
    else:
        print(f"<partitioned table: {len(table)} patches of {table.num_images} image(s), "
              f"{build}>\nwritten to {args.out}")
    return 0
