"""Padded dialogue batches with masks.

A batch holds ``B`` dialogues padded to the longest one, ``L`` utterances. Everything a model may
read is in :class:`Batch`; models must ignore padded positions (``mask == False``), and the
registry test checks that padding never changes a real utterance's output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from merc.data.conversation import Conversation

IGNORE_INDEX = -100
"""Label value at padded or unlabelled positions (ignored by the loss and the metrics)."""


@dataclass
class Batch:
    """A padded batch of dialogues.

    Attributes:
        features: Modality -> ``(B, L, D_m)`` float tensor, zeros at padding.
        mask: ``(B, L)`` bool, ``True`` at real utterances.
        speakers: ``(B, L)`` long, speaker index within each dialogue (order of first
            appearance), 0 at padding.
        labels: ``(B, L)`` long, class index, :data:`IGNORE_INDEX` at padding/unlabelled.
        present: Modality -> ``(B, L)`` bool, ``False`` where the source lacked the feature
            (zero-filled) or at padding.
        dialogue_ids: The ``B`` dialogue ids, in batch order.
    """

    features: dict[str, torch.Tensor]
    mask: torch.Tensor
    speakers: torch.Tensor
    labels: torch.Tensor
    present: dict[str, torch.Tensor] = field(default_factory=dict)
    dialogue_ids: list[str] = field(default_factory=list)

    @property
    def lengths(self) -> torch.Tensor:
        """``(B,)`` number of real utterances per dialogue."""
        return self.mask.sum(dim=1)

    def select(self, modalities: Sequence[str]) -> dict[str, torch.Tensor]:
        """``modality -> (B, L, D_m)`` for ``modalities``; ``KeyError`` naming the ones this
        batch lacks (a model built for more modalities than the data has)."""
        missing = [m for m in modalities if m not in self.features]
        if missing:
            raise KeyError(f"batch lacks modalities {missing} the model was built for "
                           f"({list(modalities)})")
        return {m: self.features[m] for m in modalities}

    def valid(self, modality: str) -> torch.Tensor:
        """``(B, L)`` bool: real utterances whose ``modality`` feature is present (a modality
        without a ``present`` entry counts as present at every real utterance)."""
        if modality not in self.present:
            return self.mask
        return self.mask & self.present[modality].to(self.mask.device)

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(
            features={m: x.to(device) for m, x in self.features.items()},
            mask=self.mask.to(device), speakers=self.speakers.to(device),
            labels=self.labels.to(device),
            present={m: x.to(device) for m, x in self.present.items()},
            dialogue_ids=list(self.dialogue_ids))


class DialogueDataset(Dataset):
    """Conversations as tensors, one item per dialogue (features must already be extracted)."""

    def __init__(self, conversations: Sequence[Conversation], label_names: Sequence[str],
                 modalities: Sequence[str]) -> None:
        index = {name: i for i, name in enumerate(label_names)}
        self.modalities = list(modalities)
        self.items = []
        for c in conversations:
            missing = [m for m in self.modalities if m not in c.features]
            if missing:
                raise KeyError(f"dialogue {c.id}: features {missing} not extracted")
            labels = ([index[x] if x is not None else IGNORE_INDEX for x in c.labels]
                      if c.labels is not None else [IGNORE_INDEX] * len(c))
            self.items.append({
                "id": c.id,
                "features": {m: torch.from_numpy(np.ascontiguousarray(c.features[m],
                                                                      dtype=np.float32))
                             for m in self.modalities},
                "present": {m: torch.from_numpy(c.feature_present.get(m, np.ones(len(c), bool)))
                            for m in self.modalities},
                "speakers": torch.from_numpy(c.speaker_indices()),
                "labels": torch.tensor(labels, dtype=torch.long),
            })

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def collate_dialogues(items: Sequence[dict]) -> Batch:
    """Pad a list of :class:`DialogueDataset` items into a :class:`Batch`."""
    B = len(items)
    L = max(len(it["labels"]) for it in items)
    modalities = list(items[0]["features"])
    mask = torch.zeros(B, L, dtype=torch.bool)
    speakers = torch.zeros(B, L, dtype=torch.long)
    labels = torch.full((B, L), IGNORE_INDEX, dtype=torch.long)
    feats = {m: torch.zeros(B, L, items[0]["features"][m].shape[1]) for m in modalities}
    present = {m: torch.zeros(B, L, dtype=torch.bool) for m in modalities}
    for b, it in enumerate(items):
        n = len(it["labels"])
        mask[b, :n] = True
        speakers[b, :n] = it["speakers"]
        labels[b, :n] = it["labels"]
        for m in modalities:
            feats[m][b, :n] = it["features"][m]
            present[m][b, :n] = it["present"][m]
    return Batch(features=feats, mask=mask, speakers=speakers, labels=labels, present=present,
                 dialogue_ids=[it["id"] for it in items])
