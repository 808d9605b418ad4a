"""Run a script with zarrdataset 0.2.2 in its own virtual environment.

zarrdataset 0.2.2 needs zarr 2, which zarrdask (zarr 3) cannot share an
environment with, so the comparison runs in ``benchmarks/.venv-zarrdataset``,
created once::

    python -m venv benchmarks/.venv-zarrdataset
    benchmarks/.venv-zarrdataset/bin/pip install zarrdataset==0.2.2 'zarr<3' torch==2.13.0

(``torch==2.13.0`` is the CPU wheel the project's machines provide locally;
any other version would download gigabytes.)

Usage::

    python benchmarks/zarrdataset_venv.py SCRIPT [ARGS...]   # create if needed, run
    python benchmarks/zarrdataset_venv.py --create           # only create
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import venv

__all__ = ["VENV", "REQUIREMENTS", "ensure_venv", "venv_python", "run_in_venv"]

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(HERE, ".venv-zarrdataset")
REQUIREMENTS = ["zarrdataset==0.2.2", "zarr<3", "torch==2.13.0"]


def venv_python(path: str = VENV) -> str:
    """The interpreter of the virtual environment at ``path``."""
    return os.path.join(path, "bin", "python")


def _ready(path: str) -> bool:
    python = venv_python(path)
    if not os.path.exists(python):
        return False
    check = subprocess.run(
        [python, "-c", "import zarrdataset, zarr, torch; assert zarr.__version__.startswith('2')"],
        capture_output=True, text=True,
    )
    return check.returncode == 0


def ensure_venv(path: str = VENV, *, quiet: bool = True) -> str:
    """Create the environment with zarrdataset 0.2.2 unless it is ready.

    Parameters
    ----------
    path : str
        Where the environment lives.
    quiet : bool
        Hide pip's output (shown on failure).

    Returns
    -------
    str
        Its Python interpreter.

    Raises
    ------
    RuntimeError
        When pip cannot install the requirements (the message holds pip's output).
    """
    if _ready(path):
        return venv_python(path)
    venv.EnvBuilder(with_pip=True, clear=os.path.exists(path)).create(path)
    cmd = [venv_python(path), "-m", "pip", "install", "--disable-pip-version-check", *REQUIREMENTS]
    done = subprocess.run(cmd, capture_output=quiet, text=True)
    if done.returncode != 0:
        output = (done.stdout or "") + (done.stderr or "")
        raise RuntimeError(
            f"could not install {' '.join(REQUIREMENTS)} into {path}:\n{output[-4000:]}\n"
            "check that the package index is reachable and that torch 2.13.0 is available "
            "(a local CPU wheel)"
        )
    return venv_python(path)


def run_in_venv(script: str, *args: str, path: str = VENV, timeout: float | None = None
                ) -> subprocess.CompletedProcess:
    """Run ``script`` with ``args`` in the environment (created if needed).

    Returns
    -------
    subprocess.CompletedProcess
        With captured text ``stdout``/``stderr``.
    """
    python = ensure_venv(path)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([python, script, *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--create", action="store_true", help="only create the environment")
    parser.add_argument("script", nargs="?", help="script to run inside the environment")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the script")
    ns = parser.parse_args(argv)
    if ns.create or not ns.script:
        print(ensure_venv(quiet=False))
        return 0
    done = run_in_venv(ns.script, *ns.args)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
