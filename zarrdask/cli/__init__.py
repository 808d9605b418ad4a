"""Command line: ``zarrdask inspect``, ``zarrdask grid``, ``zarrdask show``,
``zarrdask demo``.

Argument parsing only; every command calls the public API. Bad arguments
end with one line and exit status 2 before any cluster starts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from .args import Parser, UsageError
from .cluster import SchedulerError
from .commands import add_demo, add_inspect, add_show
from .grid import add_parser as add_grid

__all__ = ["main", "build_parser"]

EXAMPLES = """\
examples:
  zarrdask demo                       # synthetic slides -> table -> torch batches
  zarrdask inspect slide.svs          # levels, chunks, um/px, magnification
  zarrdask grid *.svs --patch-size 256 --mask tissue --out patches.parquet
  zarrdask show slide.svs --table patches.parquet --out qc.png

'zarrdask COMMAND --help' lists the options of a command with their defaults.
Documentation: docs/ in the repository (mkdocs site: ./dev docs).
"""


def _version() -> str:
    """``zarrdask X (Python Y, dask Z, torch T)`` without importing them."""
    from importlib.metadata import PackageNotFoundError, version

    from .._version import __version__

    parts = [f"Python {sys.version.split()[0]}"]
    for name in ("dask", "distributed", "zarr", "torch"):
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} not installed")
    return f"zarrdask {__version__} ({', '.join(parts)})"


def build_parser() -> Parser:
    """The ``zarrdask`` argument parser."""
    parser = Parser(prog="zarrdask",
                    description="Patch datasets for deep learning from very large images: "
                                "inspect sources, build coordinate tables on a dask cluster, "
                                "draw QC pictures, run the demo.",
                    epilog=EXAMPLES)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=Parser)
    add_inspect(sub)
    add_grid(sub)
    add_demo(sub)
    add_show(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``zarrdask`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"zarrdask {args.command}"
    from ..errors import ZarrdaskError

    try:
        if getattr(args, "check", None) is not None:
            args.check(args)  # before any cluster starts
        return args.func(args)
    except UsageError as exc:
        print(f"{prog}: error: {exc} (see {prog} --help)", file=sys.stderr)
        return 2
    except BrokenPipeError:  # stdout closed early (| head): not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - closed at exit
        return 0
    except (ZarrdaskError, SchedulerError) as exc:
        message = " ".join(str(exc).split())
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
