"""What a prediction is: :class:`Prediction` per conversation, :class:`UtterancePrediction` per
utterance, and how a model's output becomes them.

Output schema (:meth:`Prediction.to_dict`, written by ``merc predict --out``; stable, fields
are only ever added)::

    {"id": "<conversation id>", "model": "<registered model name>", "checkpoint": "<path>",
     "labels": [...], "modalities": [...],
     "utterances": [{"id", "speaker", "text", "label", "confidence",
                     "probs": {label: p}, "modality_weights": {modality: w} | null,
                     "gold": "<label from the input>" (only when the input had one)}]}

``probs`` is the softmax over the model's classes; ``confidence`` is the probability of the
predicted ``label``. ``modality_weights`` are the per-utterance fusion weights of models that
have them (Broad Mamba's PFM: each the sigmoid probability a modality's own classifier gives its
predicted class, in (0, 1); see :mod:`merc.models.broad_mamba`), ``null`` for other models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from merc.config import MODALITIES
from merc.data.conversation import Conversation
from merc.errors import MercInputError


@dataclass
class UtterancePrediction:
    """The prediction for one utterance."""

    id: str
    speaker: str
    text: str
    label: str
    """Predicted emotion (the arg-max of ``probs``)."""
    confidence: float
    """``probs[label]``."""
    probs: dict[str, float]
    """Softmax probability per class, in the model's label order."""
    modality_weights: dict[str, float] | None = None
    """Fusion weight per modality (PFM), or ``None`` for models without one."""
    gold: str | None = None
    """The input's own label for this utterance (never seen by the model), if it had one."""


@dataclass
class Prediction:
    """Predictions for a whole conversation."""

    model: str
    """Registered model name of the checkpoint."""
    checkpoint: str
    labels: list[str]
    modalities: list[str]
    utterances: list[UtterancePrediction] = field(default_factory=list)
    id: str = "conversation"
    """The conversation's id (from the input; a file's name when it gave none)."""

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON schema of the module docstring."""
        def utterance(u: UtterancePrediction) -> dict[str, Any]:
            d = {"id": u.id, "speaker": u.speaker, "text": u.text, "label": u.label,
                 "confidence": u.confidence, "probs": u.probs,
                 "modality_weights": u.modality_weights}
            if u.gold is not None:
                d["gold"] = u.gold
            return d

        return {"id": self.id, "model": self.model, "checkpoint": self.checkpoint,
                "labels": self.labels, "modalities": self.modalities,
                "utterances": [utterance(u) for u in self.utterances]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Prediction":
        """Rebuild a :class:`Prediction` from :meth:`to_dict`'s output.

        Raises:
            ValueError: a missing field or a value of the wrong type (one line).
        """
        try:
            utts = [UtterancePrediction(
                id=str(u["id"]), speaker=str(u["speaker"]), text=str(u["text"]),
                label=str(u["label"]), confidence=float(u["confidence"]),
                probs={str(k): float(v) for k, v in u["probs"].items()},
                modality_weights=({str(k): float(v) for k, v in u["modality_weights"].items()}
                                  if u.get("modality_weights") else None),
                gold=None if u.get("gold") is None else str(u["gold"]))
                for u in d["utterances"]]
            return cls(model=str(d["model"]), checkpoint=str(d["checkpoint"]),
                       labels=[str(x) for x in d["labels"]],
                       modalities=[str(x) for x in d["modalities"]], utterances=utts,
                       id=str(d.get("id", "conversation")))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"not a merc prediction: {type(e).__name__} {e}") from None


def batch_predictions(net, batch, convs: Sequence[Conversation], *,
                      label_names: Sequence[str], model: str, checkpoint: str,
                      modalities: Sequence[str]) -> list[Prediction]:
    """Run the network ``net`` (eval mode; ``model`` is its registered name) on ``batch``,
    the collated ``convs`` in order, and return one :class:`Prediction` per conversation
    (softmax probabilities and fusion weights cut to its real utterances). Shared by
    :meth:`Predictor.predict_many` and ``merc evaluate --predictions``."""
    import torch

    with torch.no_grad():
        out = net(batch)
        probs = torch.softmax(out.logits.float(), dim=-1).cpu().numpy()        # (B, L, C)

    results = []
    for b, conv in enumerate(convs):
        n = len(conv)
        # Canonical modality order (text, audio, video) in the output, table and timeline,
        # whatever order the model keeps its weights in.
        weights = ({m: out.modality_weights[m][b, :n].float().cpu().numpy()
                    for m in sorted(out.modality_weights, key=MODALITIES.index)}
                   if out.modality_weights is not None else None)
        results.append(build_prediction(conv, probs[b, :n], weights, label_names=label_names,
                                        model=model, checkpoint=checkpoint,
                                        modalities=modalities))
    return results


def build_prediction(conv: Conversation, probs: np.ndarray,
                     weights: dict[str, np.ndarray] | None, *, label_names: Sequence[str],
                     model: str, checkpoint: str, modalities: Sequence[str],
                     gold: Sequence[str | None] | None = None) -> Prediction:
    """The :class:`Prediction` of ``conv`` from its ``(n, C)`` probabilities and ``(n,)``
    fusion weights per modality (or ``None``); ``gold`` defaults to ``conv.labels``.

    Raises:
        MercInputError: a non-finite probability (never handed on, never written as JSON).
    """
    if not np.isfinite(probs).all():
        i = int(np.argwhere(~np.isfinite(probs))[0][0])
        raise MercInputError(checkpoint, "the model produced non-finite probabilities "
                             "(NaN/inf)", dialogue=conv.id,
                             utterance=conv.utterance_name(i), field="probs")
    result = Prediction(model=model, checkpoint=checkpoint, labels=list(label_names),
                        modalities=list(modalities), id=str(conv.id))
    gold = gold if gold is not None else (conv.labels or [None] * len(conv))
    for i in range(len(conv)):
        k = int(probs[i].argmax())
        result.utterances.append(UtterancePrediction(
            id=conv.utterance_name(i), speaker=conv.speakers[i], text=conv.utterances[i],
            label=label_names[k], confidence=float(probs[i, k]),
            probs={lab: float(p) for lab, p in zip(label_names, probs[i])},
            modality_weights=({m: float(w[i]) for m, w in weights.items()}
                              if weights is not None else None),
            gold=gold[i]))
    return result
