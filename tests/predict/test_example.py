"""examples/predict_demo.py runs end to end on a small slide."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import zarrdask as zds

ROOT = Path(__file__).parents[2]


def test_predict_demo_writes_and_reopens_a_prediction(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "predict_demo.py"), "--workdir", str(tmp_path),
         "--size", "512", "--patch", "64", "--workers", "2"],
        env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "complete: True" in proc.stdout
    path = tmp_path / "predictions" / "slide.ome.zarr"
    prediction = zds.open_image(str(path))
    slide = zds.open_image(str(tmp_path / "slide.zarr"))
    assert prediction.sizes == {"c": 1, "y": 512, "x": 512}
    np.testing.assert_allclose(prediction.coords["x"].values, slide.coords["x"].values)
    values = prediction.values
    predicted = np.isfinite(values)
    assert 0 < predicted.mean() < 1  # tissue patches only
    assert ((values[predicted] > 0) & (values[predicted] < 1)).all()  # sigmoid probabilities
