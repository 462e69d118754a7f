"""bc-LSTM (Poria et al., 2017): a bidirectional LSTM over the utterances of a dialogue.

``causal=True`` (variant ``causal``) keeps the forward direction only: an utterance's output
depends on it and the utterances before it, and :meth:`BcLSTM.step` streams a live
conversation from the LSTM's ``(h, c)`` state (``2 x (num_layers, 1, H)``, fixed size).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
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
    causal: bool = False
    """Forward LSTM only (past context: the live model); the head then reads ``H`` units."""

    def __post_init__(self) -> None:
        require(self.hidden_size >= 1, "hidden_size", f"expected >= 1, got {self.hidden_size}")
        require(self.num_layers >= 1, "num_layers", f"expected >= 1, got {self.num_layers}")
        require(0.0 <= self.dropout < 1.0, "dropout", f"expected [0, 1), got {self.dropout}")


@register_model("bc-lstm", BcLSTMConfig, variants={
    # Live conversations: past context only, streamed by step().
    "causal": {"causal": True},
})
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
        directions = 1 if config.causal else 2
        self.lstm = nn.LSTM(config.hidden_size, config.hidden_size, num_layers=config.num_layers,
                            batch_first=True, bidirectional=not config.causal,
                            dropout=config.dropout if config.num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(directions * config.hidden_size, num_classes)

    def forward(self, batch: Batch) -> ModelOutput:
        x = self.fuse(batch.features)                                 # (B, L, H)
        lengths = batch.lengths.cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        h, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])  # (B, L, dH)
        h = self.dropout(h)
        return ModelOutput(logits=self.head(h), hidden=h)

    def init_stream(self, device=None, dtype=torch.float32) -> dict:
        """A live conversation's state before its first utterance (causal model only): the
        LSTM's ``(h, c)``, ``None`` until the first step (PyTorch's zero initial state)."""
        if not self.config.causal:
            raise ValueError("streaming needs the causal configuration (model.causal=true, "
                             "variant 'causal'): the bidirectional LSTM reads the future")
        return {"t": 0, "hc": None}

    @torch.no_grad()
    def step(self, features: dict[str, torch.Tensor], state: dict
             ) -> tuple[torch.Tensor, None]:
        """One utterance (eval mode): ``features`` modality -> ``(1, D_m)``; ``state`` updated
        in place. Returns ``logits (1, C)`` -- equal, to float rounding, to :meth:`forward`'s
        for this utterance -- and ``None`` (no fusion weights)."""
        x = self.fuse({m: f.unsqueeze(1) for m, f in features.items()})          # (1, 1, H)
        out, state["hc"] = self.lstm(x, state["hc"])                             # (1, 1, H)
        state["t"] += 1
        return self.head(self.dropout(out[:, 0])), None
