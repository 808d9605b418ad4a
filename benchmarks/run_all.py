"""Run every ``benchmarks/bench_*.py`` in turn, each in its own process.

A benchmark that fails is reported (its last lines of output) and skipped;
the others still run. The exit status is 1 when any failed.

Usage: ``python benchmarks/run_all.py [--quick] [--only NAME ...] [--timeout S]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def discover(only: list[str] | None = None) -> list[Path]:
    """The benchmark scripts, sorted by name.

    Parameters
    ----------
    only : list of str, optional
        Keep the scripts whose name (``bench_open.py``, ``bench_open`` or
        ``open``) is listed.

    Returns
    -------
    list of Path
    """
    scripts = sorted(HERE.glob("bench_*.py"))
    if only:
        wanted = {o.removesuffix(".py").removeprefix("bench_") for o in only}
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in wanted]
    return scripts


def run_one(script: Path, *, quick: bool, timeout: float) -> tuple[bool, float, str]:
    """Run one benchmark script with this interpreter.

    Parameters
    ----------
    script : Path
        The ``bench_*.py`` file.
    quick : bool
        Pass ``--quick`` through.
    timeout : float
        Seconds before the run is abandoned.

    Returns
    -------
    ok : bool
        Whether it exited with status 0.
    seconds : float
        Wall time.
    message : str
        Why it failed (empty when it did not).
    """
    cmd = [sys.executable, str(script)] + (["--quick"] if quick else [])
    t0 = time.perf_counter()
    try:
        # output goes straight to the terminal; stderr is also kept for the summary
        proc = subprocess.run(cmd, cwd=HERE.parent, timeout=timeout, stderr=subprocess.PIPE,
                              text=True)
    except subprocess.TimeoutExpired:
        return False, time.perf_counter() - t0, f"timed out after {timeout:.0f} s"
    seconds = time.perf_counter() - t0
    if proc.stderr:
        sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or "").strip().splitlines()[-5:])
        return False, seconds, f"exit status {proc.returncode}\n{tail}"
    return True, seconds, ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="run only these benchmarks (e.g. open grid)")
    parser.add_argument("--timeout", type=float, default=7200.0,
                        help="seconds allowed per benchmark (default 7200)")
    args = parser.parse_args(argv)

    scripts = discover(args.only)
    if not scripts:
        print(f"no benchmark matches {args.only}; available: "
              f"{[s.stem for s in discover()]}", file=sys.stderr)
        return 1
    outcomes = []
    for script in scripts:
        print(f"=== {script.name}{' --quick' if args.quick else ''}", flush=True)
        ok, seconds, message = run_one(script, quick=args.quick, timeout=args.timeout)
        if not ok:
            print(f"--- {script.name} FAILED, skipped ({message})", flush=True)
        outcomes.append((script.name, ok, seconds))
    print("=== summary")
    for name, ok, seconds in outcomes:
        print(f"  {name:<24} {'ok' if ok else 'FAILED':<7} {seconds:8.1f} s")
    return 0 if all(ok for _, ok, _ in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
