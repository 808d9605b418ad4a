"""PatchLoader keeps freed batch and chunk buffers in the process (glibc's
mmap and trim thresholds raised): fewer page faults per patch, counted by
the kernel in fresh processes (the setting is process-wide and one-way)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from zarrdask.datasets import write_synthetic_slide

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")

PROBE = textwrap.dedent("""
    import json, resource, sys
    import zarrdask as zd
    from zarrdask.dataset.allocator import keep_freed_buffers
    path, keep = sys.argv[1], sys.argv[2] == "on"
    loader = zd.PatchLoader(zd.build_table(path, patch_size=256), batch_size=16, threads=2,
                            keep_buffers=keep)
    for batch in loader:  # the first epoch opens, imports and applies the setting
        pass
    before, n = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, 0
    for _ in range(3):
        for batch in loader:
            n += len(batch["images"])
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(json.dumps({"faults_per_patch": faults / n, "n": n,
                      "applied": keep_freed_buffers() if keep else None}))
""")


def _probe(path, keep: str, env=None) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, str(path), keep], capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(300)
def test_kept_buffers_cut_the_page_faults_per_patch(tmp_path):
    # 3 MB batches (16 x 3 x 256 x 256) and 768 KB chunks, as on a real slide
    path = write_synthetic_slide(tmp_path / "s.zarr", size=2048, chunk=512, levels=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    kept, default = _probe(path, "on", env), _probe(path, "off", env)
    assert kept["applied"] is True and kept["n"] == default["n"] == 3 * 64
    # measured 6-9 against 27-56 per patch
    assert kept["faults_per_patch"] < default["faults_per_patch"] / 2, (kept, default)


def test_an_allocator_set_by_the_environment_is_left_alone():
    code = "from zarrdask.dataset.allocator import keep_freed_buffers as k; print(k(), k())"
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "1048576"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.stdout.split() == ["False", "False"], out.stderr
    env.pop("MALLOC_TRIM_THRESHOLD_")
    env.pop("GLIBC_TUNABLES", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env={k: v for k, v in env.items() if not k.startswith("MALLOC_")})
    assert out.stdout.split() == ["True", "True"], out.stderr
