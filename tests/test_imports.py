"""Preprocessing (readers, masks, build_table, the torch-free compatibility
names) must not import torch: dask workers and CLI runs should not pay for it."""

from __future__ import annotations

import subprocess
import sys


def test_preprocessing_imports_do_not_load_torch():
    code = (
        "import sys\n"
        "import zarrdask as zd\n"
        "import zarrdask.compat.imageloaders, zarrdask.compat.samplers, zarrdask.dataset\n"
        "from zarrdask.dataset import ChunkFetcher, ShardSpec\n"
        "zd.build_table, zd.open_image, zd.tissue_mask, zd.PatchSampler, zd.ImageLoader\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "zd.PatchDataset\n"
        "assert 'torch' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
