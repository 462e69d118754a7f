"""bc-LSTM (Poria et al., 2017): a bidirectional LSTM over the utterances of a dialogue."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from merc.config import ModelConfig, require
from merc.data.collate import Batch
from merc.models.registry import ModelOutput, register_model
from merc.modules.fusion import ConcatProjection


@dataclass
class BcLSTMConfig(ModelConfig):
    hidden_size: int = 128
    """LSTM hidden size per direction (the fused input projection has the same width)."""
    num_layers: int = 1
    """Stacked LSTM layers."""
    dropout: float = 0.3
    """Dropout on the inputs, on the LSTM output and between stacked layers."""

    def __post_init__(self) -> None:
        require(self.hidden_size >= 1, "hidden_size", f"expected >= 1, got {self.hidden_size}")
        require(self.num_layers >= 1, "num_layers", f"expected >= 1, got {self.num_layers}")
        require(0.0 <= self.dropout < 1.0, "dropout", f"expected [0, 1), got {self.dropout}")


@register_model("bc-lstm", BcLSTMConfig)
class BcLSTM(nn.Module):
    """bc-LSTM: early-fused utterance features -> BiLSTM over the dialogue -> classifier.

    Padded positions are excluded with packed sequences, so a dialogue's outputs do not depend on
    how much padding its batch adds (the backward direction starts at the real last utterance).
    """

    def __init__(self, input_dims: dict[str, int], num_classes: int,
                 config: BcLSTMConfig) -> None:
        super().__init__()
        self.config = config
        self.fuse = ConcatProjection(input_dims, config.hidden_size, config.dropout)
        self.lstm = nn.LSTM(config.hidden_size, config.hidden_size, num_layers=config.num_layers,
                            batch_first=True, bidirectional=True,
                            dropout=config.dropout if config.num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(2 * config.hidden_size, num_classes)

    def forward(self, batch: Batch) -> ModelOutput:
        x = self.fuse(batch.features)                                 # (B, L, H)
        lengths = batch.lengths.cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        h, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])  # (B, L, 2H)
        h = self.dropout(h)
        return ModelOutput(logits=self.head(h), hidden=h)
