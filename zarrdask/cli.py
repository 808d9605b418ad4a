"""Command line: ``zarrdask demo``, ``zarrdask inspect``, ``zarrdask grid``.

Argument parsing only; every command calls the public API.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["main"]


_SCHEDULER_TIMEOUT = 10  # seconds to reach --scheduler


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``zarrdask grid: error: ...``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _storage_options(text: str | dict | None) -> dict | None:
    """``--storage-options``: a JSON object."""
    if text is None or isinstance(text, dict):
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not valid JSON ({exc.msg} at character {exc.pos}); pass an object "
            "such as '{\"anon\": true}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"{text!r} is a JSON {type(value).__name__}; pass an object such as "
            "'{\"anon\": true}'")
    return value


def _int_list(minimum: int):
    """An ``argparse`` type: one int or a list ``256,256`` / ``256x256``, each >= minimum."""

    def parse(text: str) -> int | list[int]:
        parts = [v.strip() for v in str(text).replace("x", ",").split(",")]
        try:
            values = [int(v) for v in parts]
        except ValueError:
            values = []
        if not values or any(v < minimum for v in values):
            kind = "a positive integer" if minimum > 0 else "a non-negative integer"
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {kind} or a list of them like 256,256")
        return values[0] if len(values) == 1 else values

    return parse


def _size_list(minimum: int):
    """Like :func:`_int_list`, but each entry may also be a length in
    micrometres (``128um``, ``64um,64um``, ``0.128mm``)."""
    ints = _int_list(minimum)

    def parse(text: str) -> int | str | list[int | str]:
        from .grid.physical import parse_length

        parts = [v.strip() for v in str(text).split(",")]
        if not any(parse_length(p) is not None for p in parts):
            return ints(text)
        values: list[int | str] = []
        for part in parts:
            length = parse_length(part)
            if length is not None and (length > 0 or minimum == 0):
                values.append(part)
                continue
            try:
                number = int(part)
            except ValueError:
                number = minimum - 1
            if number < minimum:
                raise argparse.ArgumentTypeError(
                    f"{text!r}: {part!r} is not a length such as 128um or an integer >= "
                    f"{minimum}")
            values.append(number)
        return values[0] if len(values) == 1 else values

    return parse


def _level(text: str) -> int | str:
    """A level index (``1``) or a magnification (``20x``)."""
    from .io.level_select import parse_magnification

    if parse_magnification(text) is not None:
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a level index (0 is the finest) or a magnification such as 20x")
    return value


def _at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= {minimum}")
        return value

    return parse


def _float_or_nan(text: str) -> float:
    """``float(text)``, NaN when it is not a number (NaN fails every check)."""
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _positive_float(text: str) -> float:
    value = _float_or_nan(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def _min_area(text: str) -> float:
    value = _float_or_nan(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a fraction (< 1) or a pixel count (>= 1)")
    return int(value) if value >= 1 and value.is_integer() else value


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .io import open_pyramid
    from .summary import describe_pyramid

    tree = open_pyramid(args.source, axes=args.axes, data_group=args.data_group,
                        storage_options=_storage_options(args.storage_options))
    print(describe_pyramid(tree))
    return 0


class _SchedulerError(Exception):
    """``--scheduler`` cannot be used (unreachable, no workers)."""


def _probe(address: str) -> None:
    """Fail fast on a TCP address nothing listens on (distributed itself
    retries until its timeout)."""
    import socket

    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port

    protocol, location = parse_address(address)
    if protocol not in ("tcp", "tls"):
        return
    host, port = parse_host_port(location, 8786)
    with socket.create_connection((host, port), timeout=_SCHEDULER_TIMEOUT):
        pass


def _connect(address: str, wait_workers: float):
    """A client of the scheduler at ``address``, with at least one worker
    within ``wait_workers`` seconds."""
    from distributed import Client

    try:
        _probe(address)
        client = Client(address, timeout=_SCHEDULER_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as exc:
        reason = " ".join(str(exc).split()) or f"no answer within {_SCHEDULER_TIMEOUT} s"
        raise _SchedulerError(
            f"argument --scheduler: cannot reach a dask scheduler at {address} "
            f"({type(exc).__name__}: {reason}); "
            "start one with `dask scheduler` and pass its address (tcp://host:8786), or omit "
            "--scheduler for a local cluster") from None
    try:
        client.wait_for_workers(1, timeout=wait_workers)
    except (OSError, TimeoutError) as exc:
        client.close()
        raise _SchedulerError(
            f"argument --scheduler: the scheduler at {address} has no worker after "
            f"{wait_workers:g} s (--wait-workers); start one with `dask worker {address}`"
        ) from exc
    return client


class _Cluster:
    """A distributed client on ``--scheduler`` or on a new LocalCluster."""

    def __init__(self, scheduler: str | None, workers: int, threads: int, *,
                 wait_workers: float = 60) -> None:
        self.scheduler, self.workers, self.threads = scheduler, workers, threads
        self.wait_workers = wait_workers
        self.cluster = None

    def __enter__(self):
        from distributed import Client, LocalCluster

        if self.scheduler:
            self.client = _connect(self.scheduler, self.wait_workers)
        else:
            self.cluster = LocalCluster(n_workers=self.workers, threads_per_worker=self.threads,
                                        processes=True, dashboard_address=None)
            self.client = Client(self.cluster)
        return self.client

    def __exit__(self, *exc) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _by_axis(value: object) -> object:
    """``256,128`` as ``{"y": 256, "x": 128}`` (three values: z, y, x): a
    list on the command line names the last spatial axes."""
    if isinstance(value, list) and 2 <= len(value) <= 3:
        return dict(zip("zyx"[-len(value):], value, strict=True))
    return value


def _grid_table(args: argparse.Namespace, sources: list, client) -> object:
    from .grid.build import build_table

    masks = args.mask if args.mask not in (None, "none") else None
    mask_mpp = getattr(args, "mask_mpp", None)
    tissue = ({"mask_scale": args.mask_scale} if masks == "tissue" and mask_mpp is None
              else None)
    specs = [
        {"source": s, "axes": args.axes, "data_group": args.data_group, "level": args.level,
         "storage_options": _storage_options(args.storage_options)}
        for s in sources
    ]
    return build_table(
        specs, patch_size=_by_axis(args.patch_size), stride=_by_axis(args.stride),
        pad=_by_axis(args.pad),
        mpp=getattr(args, "mpp", None), mask_mpp=mask_mpp, min_area=args.min_area, masks=masks, tissue_options=tissue,
        allow_incomplete_patches=args.allow_incomplete, sampler=args.sampler, seed=args.seed,
        client=client, progress=not args.quiet, on_error=args.on_error,
    )


def _cmd_grid(args: argparse.Namespace) -> int:
    from .table_files import check_writable

    if args.level is not None and args.mpp is not None:
        from .errors import OptionError

        raise OptionError(f"--level {args.level} and --mpp {args.mpp:g} both given; pass one "
                          "(--mpp chooses the level of each slide)")
    check_writable(args.out)  # before any compute, naming --out
    sources = _grid_sources(args)
    with _Cluster(args.scheduler, args.workers, args.threads,
                  wait_workers=args.wait_workers) as client:
        if getattr(args, "cohort", False):
            table = _grid_cohort(args, sources, client)
            print(f"<partitioned table: {len(table)} patches of {table.num_images} image(s), "
                  f"{table.manifest['meta']['build']}>\nwritten to {args.out}")
            return 0
        table = _grid_table(args, sources, client)
    table.to_parquet(args.out)
    print(f"{table!r}\nwritten to {args.out}")
    return 0


def _grid_sources(args: argparse.Namespace) -> list:
    """``zarrdask grid`` sources: the arguments and ``--files-from`` lines,
    glob patterns and folders expanded (:mod:`zarrdask.grid.inputs`)."""
    from .errors import OptionError
    from .grid.inputs import expand_sources, read_file_list

    given = list(args.sources or [])
    if getattr(args, "files_from", None):
        given += read_file_list(args.files_from)
    if not given:
        raise OptionError("no image given; pass paths, URLs or glob patterns, or "
                          "--files-from LIST (one per line, - for standard input)")
    return expand_sources(given, storage_options=_storage_options(args.storage_options))


def _grid_cohort(args: argparse.Namespace, sources: list, client) -> object:
    from .grid.cohort import build_cohort

    masks = args.mask if args.mask not in (None, "none") else None
    return build_cohort(
        [{"source": s, "axes": args.axes, "data_group": args.data_group, "level": args.level}
         for s in sources], out=args.out, patch_size=_by_axis(args.patch_size),
        stride=_by_axis(args.stride), pad=_by_axis(args.pad), mpp=args.mpp,
        mask_mpp=args.mask_mpp, min_area=args.min_area, masks=masks,
        tissue_options={"mask_scale": args.mask_scale} if masks and args.mask_mpp is None else None,
        allow_incomplete_patches=args.allow_incomplete, sampler=args.sampler, seed=args.seed,
        storage_options=_storage_options(args.storage_options), client=client,
        images_per_task=args.images_per_task, on_error=args.on_error, progress=not args.quiet)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .datasets import write_synthetic_ome_tiff, write_synthetic_slide
    from .io import open_pyramid
    from .summary import describe_pyramid
    from .table import read_table

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
          f"({args.workers} worker processes)")
    grid_args = argparse.Namespace(
        patch_size=args.patch_size, stride=None, pad=None, min_area=1, mask="tissue",
        mask_scale=1 / 16, allow_incomplete=False, sampler="grid", seed=args.seed,
        quiet=True, on_error="raise", axes=None, data_group=None, level=None,
        storage_options=None)
    with _Cluster(None, args.workers, 1) as client:
        table = _grid_table(grid_args, [slide, tiff], client)
    table.to_parquet(out)
    table = read_table(out)
    total = len(table.frame)
    frac = float(table.frame["coverage"].mean()) if total else 0.0
    per_image = table.frame.groupby("image_id").size().to_dict()
    print(f"{table!r}\n  written to {out}; patches per image {per_image}; mean tissue "
          f"coverage of kept patches {frac:.2f}")

    print("[3/3] streaming patches to torch (both formats, channel-first)")
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
    parser = _Parser(prog="zarrdask", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="print dims, shape, chunks, levels and scale of a source")
    p.add_argument("source", help="path or URL of an image (zarr, OME-NGFF, TIFF, PNG...)")
    p.add_argument("--axes", default=None, help="axes of the stored array, e.g. YXC")
    p.add_argument("--data-group", default=None, help="zarr path or TIFF 'series/level'")
    p.add_argument("--storage-options", type=_storage_options, default=None,
                   help="fsspec options as a JSON object")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("grid", help="build a coordinate table (Parquet) on a dask cluster")
    p.add_argument("sources", nargs="*",
                   help="image paths or URLs, glob patterns ('s3://bucket/*.zarr') or folders")
    p.add_argument("--files-from", default=None, metavar="LIST",
                   help="read sources from LIST, one path or URL per line (- for stdin)")
    p.add_argument("--cohort", action="store_true",
                   help="build on the workers in batches into a partitioned table, reusing "
                        "unchanged images of the table at --out")
    p.add_argument("--images-per-task", type=_at_least(1), default=None,
                   help="with --cohort: images per task (default 256; fewer, for at least "
                        "16 tasks, in small cohorts)")
    p.add_argument("--patch-size", type=_size_list(1), required=True,
                   help="pixels (256 or 256,256) or micrometres (128um or 64um,64um)")
    p.add_argument("--stride", type=_size_list(1), default=None,
                   help="default: the patch size (pixels or um, like --patch-size)")
    p.add_argument("--pad", type=_size_list(0), default=None,
                   help="pixels added on each side at read time")
    p.add_argument("--min-area", type=_min_area, default=1,
                   help="fraction (<1) or pixel count (>=1)")
    p.add_argument("--mask", default=None, choices=["tissue", "none"], help="mask to apply")
    p.add_argument("--mask-scale", type=_positive_float, default=1 / 16,
                   help="tissue mask scale")
    p.add_argument("--mask-mpp", type=_positive_float, default=None,
                   help="tissue-mask resolution in um per pixel (instead of --mask-scale)")
    p.add_argument("--allow-incomplete", action="store_true", help="keep edge patches")
    p.add_argument("--sampler", default="grid", choices=["grid", "blue-noise"])
    p.add_argument("--seed", type=int, default=0, help="seed of random samplers")
    p.add_argument("--axes", default=None, help="axes of the stored arrays, e.g. YXC")
    p.add_argument("--data-group", default=None, help="zarr path or TIFF 'series/level'")
    p.add_argument("--level", type=_level, default=None,
                   help="pyramid level to read: an index, or a magnification such as 20x")
    p.add_argument("--mpp", type=_positive_float, default=None,
                   help="read the level closest to (not coarser than) this many um per pixel")
    p.add_argument("--storage-options", type=_storage_options, default=None,
                   help="fsspec options as a JSON object")
    p.add_argument("--on-error", default="raise", choices=["raise", "skip"])
    p.add_argument("--out", required=True, help="output Parquet path")
    p.add_argument("--scheduler", default=None, help="address of a running dask scheduler")
    p.add_argument("--wait-workers", type=_positive_float, default=60,
                   help="seconds to wait for a worker on --scheduler (default 60)")
    p.add_argument("--workers", type=_at_least(1), default=2,
                   help="LocalCluster worker processes")
    p.add_argument("--threads", type=_at_least(1), default=1,
                   help="threads per LocalCluster worker")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_grid)

    p = sub.add_parser("demo", help="run the main job on a synthetic slide")
    p.add_argument("--workdir", default="zarrdask-demo", help="where to write (default ./zarrdask-demo)")
    p.add_argument("--size", type=int, default=8192, help="slide edge in pixels")
    p.add_argument("--chunk", type=int, default=512, help="chunk edge in pixels")
    p.add_argument("--seed", type=int, default=0, help="random seed of the synthetic slide")
    p.add_argument("--patch-size", type=_int_list(1), default=256, help="patch edge in pixels")
    p.add_argument("--workers", type=_at_least(1), default=2,
                   help="LocalCluster worker processes")
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
    except (ZarrdaskError, _SchedulerError) as exc:
        message = " ".join(str(exc).split())
        print(f"zarrdask {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
