"""Command line: ``zarrdask demo``, ``zarrdask inspect``.

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


def _cmd_demo(args: argparse.Namespace) -> int:
    from .datasets import write_synthetic_slide
    from .io import open_pyramid
    from .summary import describe_pyramid

    os.makedirs(args.workdir, exist_ok=True)
    slide = os.path.join(args.workdir, "synthetic_slide.zarr")
    print(f"writing a synthetic {args.size}x{args.size} RGB slide (seed {args.seed}) to {slide}")
    write_synthetic_slide(slide, size=args.size, chunk=args.chunk, seed=args.seed)
    print(describe_pyramid(open_pyramid(slide)))
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

    p = sub.add_parser("demo", help="run the main job on a synthetic slide")
    p.add_argument("--workdir", default="zarrdask-demo", help="where to write (default ./zarrdask-demo)")
    p.add_argument("--size", type=int, default=8192, help="slide edge in pixels")
    p.add_argument("--chunk", type=int, default=512, help="chunk edge in pixels")
    p.add_argument("--seed", type=int, default=0, help="random seed of the synthetic slide")
    p.set_defaults(func=_cmd_demo)
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
