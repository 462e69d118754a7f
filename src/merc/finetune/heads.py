"""The classifier heads ``merc finetune`` trains on top of the encoder (``finetune.head``).

* ``linear``: dropout and a linear layer on each utterance's vector, alone.
* ``gru``: :class:`DialogueHead`, a bidirectional GRU over each dialogue's utterance vectors
  (the end-to-end context head).

Either head's weights are kept in the encoder folder as :data:`HEAD_FILE`.

Both map utterance vectors ``v (N, d)`` to ``(N, n_classes)`` logits through :func:`_logits`;
:func:`_head_predict` takes the argmax, batching whole dialogues for the GRU head
(:func:`dialogue_batches`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

HEAD_FILE = "head.safetensors"
"""The trained head in an encoder folder (``gru``: the joint model ``merc evaluate`` scores;
``linear``: what a distillation teacher predicts with)."""


class DialogueHead(nn.Module):
    """The end-to-end context head (``finetune.head=gru``): a bidirectional GRU over each
    dialogue's utterance vectors; the classifier reads every utterance's own vector beside its
    GRU state (bc-LSTM's shape, Poria et al. 2017, on a GRU), so the encoder is trained through a
    context model instead of a per-utterance classifier (issue G item 3b).

    Args:
        dim: Utterance vector width ``d``.
        n_classes: Output classes.
        dropout: Dropout on ``[v ; GRU state]`` before the classifier.
    """

    def __init__(self, dim: int, n_classes: int, dropout: float) -> None:
        super().__init__()
        self.gru = nn.GRU(dim, dim // 2, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(dim + 2 * (dim // 2), n_classes)

    def forward(self, v: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        """``v (B, d)``: the utterance vectors of whole dialogues laid end to end, ``sizes``
        their utterance counts (summing to ``B``) -> ``(B, n_classes)`` logits. No dialogue sees
        another's utterances (packed sequences: no padding enters the GRU)."""
        lengths = torch.as_tensor(sizes)
        padded = nn.utils.rnn.pad_sequence(list(torch.split(v, list(sizes))), batch_first=True)
        packed = nn.utils.rnn.pack_padded_sequence(padded, lengths, batch_first=True,
                                                   enforce_sorted=False)
        ctx, _ = self.gru(packed)
        ctx, _ = nn.utils.rnn.pad_packed_sequence(ctx, batch_first=True,
                                                  total_length=padded.shape[1])
        real = (torch.arange(padded.shape[1]) < lengths[:, None]).to(v.device)   # (D, L)
        return self.out(self.dropout(torch.cat([v, ctx[real]], -1)))


def make_head(kind: str, dim: int, n_classes: int, dropout: float) -> nn.Module:
    """A fresh head of ``kind`` (``finetune.head``): :class:`DialogueHead` for ``gru``, else
    dropout and a linear layer ``d -> n_classes``."""
    if kind == "gru":
        return DialogueHead(dim, n_classes, dropout)
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, n_classes))


def _logits(head: nn.Module, v: torch.Tensor, sizes: list[int] | None) -> torch.Tensor:
    """Float32 ``(N, n_classes)`` logits of ``head`` over utterance vectors ``v (N, d)``
    (``sizes``: utterances per dialogue, for the GRU head only; it runs outside autocast:
    float32 recurrence)."""
    if isinstance(head, DialogueHead):
        with torch.autocast(v.device.type, enabled=False):
            return head(v.float(), sizes)
    return head(v).float()


def _head_predict(head: nn.Module, v: torch.Tensor, sizes: list[int]) -> np.ndarray:
    """``(N,)`` argmax of ``head`` over utterance vectors ``v (N, d)`` of dialogues of
    ``sizes``."""
    if not isinstance(head, DialogueHead):
        return _logits(head, v, None).argmax(-1).cpu().numpy()
    return np.concatenate([_logits(head, v[idx], part).argmax(-1).cpu().numpy()
                           for idx, part in dialogue_batches(sizes, 512)])


def dialogue_batches(sizes: list[int], batch_size: int,
                     generator: np.random.Generator | None = None
                     ) -> list[tuple[np.ndarray, list[int]]]:
    """Batches of whole dialogues for the ``gru`` head: dialogues (shuffled with ``generator``)
    are added to a batch until it holds at least ``batch_size`` utterances (a longer dialogue is
    a batch of its own). Each batch: the indices of its utterances in the flat input list, and
    the utterance count of each of its dialogues."""
    starts = np.cumsum([0] + list(sizes))
    order = (np.arange(len(sizes)) if generator is None else generator.permutation(len(sizes)))
    groups: list[list[int]] = [[]]
    filled = 0
    for d in order:
        if not sizes[d]:
            continue
        if filled >= batch_size:
            groups.append([])
            filled = 0
        groups[-1].append(int(d))
        filled += sizes[d]
    return [(np.concatenate([np.arange(starts[d], starts[d + 1]) for d in g]),
             [sizes[d] for d in g]) for g in groups if g]
