"""No-context baseline: each utterance classified from its own features alone."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from merc.config import ModelConfig, require
from merc.data.collate import Batch
from merc.models.registry import ModelOutput, register_model
from merc.modules.fusion import ConcatProjection


@dataclass
class MLPConfig(ModelConfig):
    hidden_size: int = 256
    """Width of the hidden layers."""
    num_layers: int = 2
    """Number of hidden layers (>= 1), the first being the fused input projection."""
    dropout: float = 0.3
    """Dropout on the inputs and between layers."""

    def __post_init__(self) -> None:
        require(self.hidden_size >= 1, "hidden_size", f"expected >= 1, got {self.hidden_size}")
        require(self.num_layers >= 1, "num_layers", f"expected >= 1, got {self.num_layers}")
        require(0.0 <= self.dropout < 1.0, "dropout", f"expected [0, 1), got {self.dropout}")


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
