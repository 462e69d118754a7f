"""No-context baseline: each utterance classified from its own features alone."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from merc.data.collate import Batch
from merc.models.registry import ModelOutput, register_model
from merc.modules.fusion import ConcatProjection


@dataclass
class MLPConfig:
    hidden_size: int = 256
    """Width of the hidden layers."""
    num_layers: int = 2
    """Number of hidden layers (>= 1), the first being the fused input projection."""
    dropout: float = 0.3
    """Dropout on the inputs and between layers."""


@register_model("mlp", MLPConfig)
class MLP(nn.Module):
    """No-context MLP over concatenated modalities (ignores the dialogue)."""

    def __init__(self, input_dims: dict[str, int], num_classes: int, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        self.fuse = ConcatProjection(input_dims, config.hidden_size, config.dropout)
        layers: list[nn.Module] = []
        for _ in range(config.num_layers - 1):
            layers += [nn.Dropout(config.dropout), nn.Linear(config.hidden_size, config.hidden_size),
                       nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(config.dropout),
                                  nn.Linear(config.hidden_size, num_classes))

    def forward(self, batch: Batch) -> ModelOutput:
        h = self.body(self.fuse(batch.features))  # (B, L, H); utterances never mix
        return ModelOutput(logits=self.head(h), hidden=h)
