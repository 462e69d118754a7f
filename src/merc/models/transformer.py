"""Transformer-encoder context baseline: self-attention over the utterances of a dialogue."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from merc.config import ModelConfig, require
from merc.data.collate import Batch
from merc.models.registry import ModelOutput, register_model
from merc.modules.fusion import ConcatProjection
from merc.modules.position import sinusoidal_positions


@dataclass
class TransformerConfig(ModelConfig):
    hidden_size: int = 128
    """Model width (d_model)."""
    num_layers: int = 2
    """Encoder layers."""
    num_heads: int = 4
    """Attention heads (must divide hidden_size)."""
    ffn_size: int = 256
    """Feed-forward inner width."""
    dropout: float = 0.3
    """Dropout on inputs, attention and feed-forward."""
    positional: bool = True
    """Add sinusoidal utterance-position encodings."""

    def __post_init__(self) -> None:
        require(self.num_heads >= 1 and self.hidden_size % self.num_heads == 0, "num_heads",
                f"must divide hidden_size ({self.hidden_size}), got {self.num_heads}")
        require(self.num_layers >= 1, "num_layers", f"expected >= 1, got {self.num_layers}")
        require(0.0 <= self.dropout < 1.0, "dropout", f"expected [0, 1), got {self.dropout}")


@register_model("transformer", TransformerConfig)
class TransformerContext(nn.Module):
    """Transformer encoder over the dialogue (full self-attention, padding masked out)."""

    def __init__(self, input_dims: dict[str, int], num_classes: int,
                 config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.fuse = ConcatProjection(input_dims, config.hidden_size, config.dropout)
        layer = nn.TransformerEncoderLayer(config.hidden_size, config.num_heads, config.ffn_size,
                                           config.dropout, batch_first=True)
        # enable_nested_tensor=False: the nested fast path zeroes padded rows differently in eval
        # and train mode; the plain path keeps behaviour identical and is as fast at these sizes.
        self.encoder = nn.TransformerEncoder(layer, config.num_layers,
                                             enable_nested_tensor=False)
        self.head = nn.Sequential(nn.Dropout(config.dropout),
                                  nn.Linear(config.hidden_size, num_classes))

    def forward(self, batch: Batch) -> ModelOutput:
        x = self.fuse(batch.features)                                 # (B, L, H)
        if self.config.positional:
            x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device, x.dtype)
        h = self.encoder(x, src_key_padding_mask=~batch.mask)         # padding never attended
        return ModelOutput(logits=self.head(h), hidden=h)
