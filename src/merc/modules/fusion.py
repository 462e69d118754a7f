"""Multimodal fusion blocks."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class ConcatProjection(nn.Module):
    """Early fusion: concatenate modalities (sorted by name) and project to ``hidden_size``.

    Input: modality -> ``(B, L, D_m)``; output ``(B, L, hidden_size)``.
    """

    def __init__(self, input_dims: Mapping[str, int], hidden_size: int, dropout: float) -> None:
        super().__init__()
        self.modalities = sorted(input_dims)
        self.proj = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(sum(input_dims[m] for m in self.modalities), hidden_size),
            nn.ReLU(),
        )

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        missing = [m for m in self.modalities if m not in features]
        if missing:
            raise KeyError(f"batch lacks modalities {missing} the model was built for")
        return self.proj(torch.cat([features[m] for m in self.modalities], dim=-1))
