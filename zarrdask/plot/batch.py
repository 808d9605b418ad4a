"""A batch of patches, drawn with their image and position (and label)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["batch"]


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _as_hwc(patch: np.ndarray) -> np.ndarray:
    if patch.ndim == 3 and patch.shape[0] in (1, 3, 4) and patch.shape[-1] not in (1, 3, 4):
        patch = np.moveaxis(patch, 0, -1)  # (c, y, x) -> (y, x, c)
    if patch.ndim == 3 and patch.shape[-1] == 1:
        patch = patch[..., 0]
    if patch.ndim == 3 and patch.shape[-1] > 3:
        patch = patch[..., :3]
    if patch.dtype != np.uint8:
        patch = patch.astype(np.float64)
        lo, hi = np.nanmin(patch), np.nanmax(patch)
        patch = (patch - lo) / (hi - lo if hi > lo else 1.0)
    return patch


def batch(samples: Mapping[str, Any], *, key: str = "images", label_key: str | None = "labels",
          max_patches: int = 32, ncols: int = 8, size: float = 1.6) -> Any:
    """A grid of a batch's patches titled with ``image_id``, the position
    (``y0,x0`` read-level pixels) and, when given, a scalar label.

    Parameters
    ----------
    samples : mapping
        A collated batch from :class:`zarrdask.dataset.PatchDataset`
        (``images`` ``(B, C, H, W)``, ``position``, ``image_id``...).
    key : str
        The modality drawn.
    label_key : str, optional
        Shown in the title when the batch has it and it is one value per patch;
        label *maps* ``(B, H, W)`` are drawn as a contour instead.
    max_patches, ncols : int
    size : float
        Inches per patch.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    images = _numpy(samples[key])[:max_patches]
    n = len(images)
    positions = _numpy(samples["position"])[:n] if "position" in samples else None
    ids = _numpy(samples["image_id"])[:n] if "image_id" in samples else None
    labels = _numpy(samples[label_key])[:n] if label_key and label_key in samples else None
    cols = max(1, min(ncols, n))
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(size * cols, size * rows + 0.3))
    for k in range(n):
        ax = fig.add_subplot(rows, cols, k + 1)
        patch = _as_hwc(images[k])
        ax.imshow(patch, cmap=None if patch.ndim == 3 else "gray", interpolation="nearest")
        title = []
        if ids is not None:
            title.append(f"img {int(ids[k])}")
        if positions is not None:
            title.append(",".join(str(int(v)) for v in positions[k].reshape(len(positions[k]), -1)[:, 0]))
        if labels is not None:
            lab = np.squeeze(labels[k])
            if lab.ndim == 0:
                title.append(f"label {lab.item():g}")
            elif lab.ndim == 2 and lab.min() != lab.max():
                ax.contour(lab.astype(float), levels=[0.5], colors=["#00ffff"], linewidths=0.8,
                           extent=(-0.5, lab.shape[1] - 0.5, lab.shape[0] - 0.5, -0.5),
                           origin="upper")
        ax.set_title(" ".join(title), fontsize=6)
        ax.set_axis_off()
    fig.tight_layout()
    return fig
