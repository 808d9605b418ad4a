"""Run zarrdataset's own test suite against zarrdask (and against zarrdataset 0.2.2).

Everything happens outside the project, in a work folder (default
``/work/zds-suite``):

* ``upstream/``: zarrdataset's repository at ``HEAD`` (0.2.2), unpacked from
  a bare git directory (``git archive``).
* ``baseline/``: a copy of its ``tests/``, run as it is by the installed
  zarrdataset 0.2.2 (zarr 2) in its own virtual environment
  (:mod:`zarrdataset_venv`); the copy keeps the repository's own
  ``zarrdataset/`` source off the path.
* ``ported/``: a copy of its ``tests/`` whose data helpers (``tests/utils.py``)
  have their zarr-2 calls replaced by zarr-3 ones (the data and every assertion
  unchanged), run by zarrdask through a shim package.
* ``shim/zarrdataset/``: a package named ``zarrdataset`` that re-exports
  zarrdask (``from zarrdask import *``) and maps the private modules the suite
  reloads (``_zarrdataset``, ``_imageloaders``) to zarrdask's compat modules.
* ``conftest.py`` in both copies: leaves out the tests whose parameters
  name an ``http(s)://`` source (the machine has no network); ``test_connect_s3``
  stays, it sends nothing.

Usage::

    python benchmarks/zarrdataset_suite.py prepare --mirror BARE_GIT_DIR
    python benchmarks/zarrdataset_suite.py zarrdask [PYTEST ARGS...]
    python benchmarks/zarrdataset_suite.py baseline [PYTEST ARGS...]

``zarrdask`` runs with this checkout first on ``PYTHONPATH``; ``baseline``
creates ``<work>/.venv-zarrdataset`` when needed. Each prints pytest's
summary; ``-rfE`` style options pass through.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_WORK = Path(os.environ.get("ZDS_SUITE_DIR", "/work/zds-suite"))

# zarr-2 calls of zarrdataset's tests/utils.py and their zarr-3 replacements.
PORTS = [
    ("zarr.MemoryStore()", "zarr.storage.MemoryStore()"),
    ("main_grp.create_dataset(", "_create_dataset(main_grp, "),
    ("zarr.copy_all(z_groups, z_grp_dst)", "_copy_all(z_groups, z_grp_dst)"),
    # zarr 2 took an int key (data_group=0); zarr 3 wants a str
    ('z_groups[image_specs["data_group"]][:],\n            metadata={"axes": None}',
     'z_groups[str(image_specs["data_group"])][:],\n            metadata={"axes": None}'),
]

# Helpers appended to the ported tests/utils.py: zarr 3 has neither
# Group.create_dataset(data=..., dtype=...) nor zarr.copy_all.
HELPERS = '''

def _create_dataset(group, name, *, data, dtype, chunks):
    """zarr 2's ``Group.create_dataset(name, data=, dtype=, chunks=)`` in zarr 3."""
    return group.create_array(str(name), data=np.asarray(data, dtype=dtype), chunks=chunks)


def _copy_all(source, dest):
    """zarr 2's ``zarr.copy_all`` in zarr 3: every group and array, same chunks."""
    for path, node in source.members(max_depth=None):
        if isinstance(node, zarr.Array):
            dest.create_array(path, data=node[:], chunks=node.chunks)
        else:
            dest.require_group(path)
'''

SHIM = '''"""zarrdataset resolved to zarrdask (made by benchmarks/zarrdataset_suite.py)."""
from zarrdask import *  # noqa: F401,F403
from zarrdask import connect_s3, isconsolidated, map_axes_order, parse_metadata  # noqa: F401
from zarrdask import parse_rois, scale_coords, select_axes, translate2roi  # noqa: F401
from zarrdask.compat import imageloaders as _imageloaders  # noqa: F401
from zarrdask.compat import zarrdataset as _zarrdataset  # noqa: F401
'''

CONFTEST = '''"""Leave out the tests that read http(s):// sources (no network here).

test_connect_s3 stays: it only builds a client for its URL and sends nothing.
"""

OFFLINE = ("test_connect_s3",)


def _remote(value):
    if isinstance(value, str):
        return value.startswith(("http://", "https://"))
    if isinstance(value, dict):
        src = value.get("source")
        return isinstance(src, str) and src.startswith(("http://", "https://"))
    if isinstance(value, (list, tuple)):
        return any(_remote(v) for v in value)
    return False


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        spec = getattr(item, "callspec", None)
        remote = (spec is not None and item.originalname not in OFFLINE
                  and any(_remote(v) for v in spec.params.values()))
        (drop if remote else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
'''


def port_utils(text: str) -> str:
    """``tests/utils.py`` with its zarr-2 calls replaced by zarr-3 ones."""
    for old, new in PORTS:
        if old not in text:
            raise SystemExit(f"tests/utils.py has no {old!r}: the upstream helpers changed")
        text = text.replace(old, new)
    return text + HELPERS


def prepare(mirror: Path, work: Path) -> None:
    """Unpack upstream, make the ported copy and the shim."""
    upstream = work / "upstream"
    if upstream.exists():
        shutil.rmtree(upstream)
    upstream.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(mirror), "archive", "HEAD"],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(upstream, filter="data")
    baseline = work / "baseline"
    if baseline.exists():
        shutil.rmtree(baseline)
    shutil.copytree(upstream / "tests", baseline / "tests")
    (baseline / "conftest.py").write_text(CONFTEST)

    ported = work / "ported"
    if ported.exists():
        shutil.rmtree(ported)
    shutil.copytree(upstream / "tests", ported / "tests")
    utils = ported / "tests" / "utils.py"
    utils.write_text(port_utils(utils.read_text()))
    (ported / "conftest.py").write_text(CONFTEST)

    shim = work / "shim" / "zarrdataset"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "__init__.py").write_text(SHIM)
    print(f"prepared {upstream}, {baseline}, {ported}, {shim.parent}")


def _pytest(python: str, cwd: Path, env: dict, args: list[str]) -> int:
    cmd = [python, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider", *args]
    return subprocess.run(cmd, cwd=cwd, env=env).returncode


def run_zarrdask(work: Path, args: list[str]) -> int:
    """The ported suite with ``zarrdataset`` resolving to this checkout's zarrdask."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(work / "shim")]))
    return _pytest(sys.executable, work / "ported", env, args)


def run_baseline(work: Path, args: list[str]) -> int:
    """The upstream suite (zarr-2 helpers) with zarrdataset 0.2.2 in its own venv."""
    sys.path.insert(0, str(HERE))
    from zarrdataset_venv import ensure_venv

    python = ensure_venv(str(work / ".venv-zarrdataset"))
    if subprocess.run([python, "-c", "import pytest, tqdm"], capture_output=True).returncode:
        subprocess.run([python, "-m", "pip", "install", "-q", "pytest", "tqdm"], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return _pytest(python, work / "baseline", env, args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["prepare", "zarrdask", "baseline"])
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="the work folder")
    parser.add_argument("--mirror", type=Path, help="zarrdataset's bare git directory")
    ns, rest = parser.parse_known_args(argv)
    if ns.command == "prepare":
        if ns.mirror is None:
            parser.error("prepare needs --mirror")
        prepare(ns.mirror, ns.work)
        return 0
    if ns.command == "zarrdask":
        return run_zarrdask(ns.work, rest)
    return run_baseline(ns.work, rest)


if __name__ == "__main__":
    raise SystemExit(main())
