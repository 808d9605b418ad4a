"""A deterministic toy model (2 channels from RGB) whose output depends on
the whole patch (its mean), so overlapping patches predict different values
for the same pixel and the blend is a real weighted mean."""

from __future__ import annotations

import torch


def toy_model(images: torch.Tensor) -> torch.Tensor:
    x = images.float() / 255.0
    context = x.mean(dim=(1, 2, 3), keepdim=True)[:, 0]
    return torch.stack([torch.sin(7.0 * x[:, 0]) + context, x.mean(dim=1) ** 3 - context], dim=1)
