"""What a prediction is: :class:`Prediction` per conversation, :class:`UtterancePrediction` per
utterance, and how a model's output becomes them.

Output schema (:meth:`Prediction.to_dict`, written by ``merc predict --out``; stable, fields
are only ever added)::

    {"id": "<conversation id>", "model": "<registered model name>", "checkpoint": "<path>",
     "labels": [...], "modalities": [...],
     "utterances": [{"id", "speaker", "text", "label", "confidence",
                     "probs": {label: p}, "modality_weights": {modality: w} | null,
                     "gold": "<label from the input>" (only when the input had one)}],
     "warnings": ["<one line>", ...] (only when there is something to say)}

``probs`` is the softmax over the model's classes, its logits divided by the checkpoint's
temperature (fitted on the validation split by ``merc train``; :mod:`merc.calibration`), which
brings confidences closer to how often the label is right; ``confidence`` is the probability of
the predicted ``label``. ``modality_weights`` are the per-utterance fusion weights of models that
have them (Broad Mamba's PFM: each the sigmoid probability a modality's own classifier gives its
predicted class, in (0, 1); see :mod:`merc.models.broad_mamba`), ``null`` for other models. With
a single modality there is nothing to fuse: the value is kept here (the schema does not change
with the model) but means only that classifier's confidence, and the table, HTML and PNG views
(:mod:`merc.predict.timeline`) leave it out.

An utterance's ``id`` is the input's, else :func:`~merc.data.conversation_file.default_utterance_id`
(``u0``, ``u1``, ...). ``gold`` is the input's label as given, never mapped: a gold label that is
not among ``labels`` (IEMOCAP's ``neu`` against a MELD model's ``neutral``) cannot be compared
with ``label``, and ``warnings`` says so in one line (how many, and the first one); ``merc
predict`` prints the same on stderr and ``merc serve`` returns it with the result. Added after
the schema was first published: ``warnings``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from merc.config import MODALITIES
from merc.data.conversation import Conversation
from merc.data.conversation_file import default_utterance_id
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

    def to_dict(self) -> dict[str, Any]:
        """One utterance of the stable JSON schema (``gold`` only when the input had one)."""
        d = {"id": self.id, "speaker": self.speaker, "text": self.text, "label": self.label,
             "confidence": self.confidence, "probs": self.probs,
             "modality_weights": self.modality_weights}
        if self.gold is not None:
            d["gold"] = self.gold
        return d


def calibrated_probs(logits, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / temperature)`` over the last axis of a torch tensor, as float32 numpy:
    every prediction (batched, live) turns a checkpoint's logits into probabilities with
    :func:`merc.calibration.softmax`, the rule its temperature was fitted and its ECE measured
    with."""
    from merc.calibration import softmax

    return softmax(logits.detach().float().cpu().numpy(), temperature).astype(np.float32)


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
    warnings: list[str] = field(default_factory=list)
    """One line per thing a reader of the result must know (e.g. gold labels the model does
    not know); written only when there is one."""

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON schema of the module docstring."""
        d = {"id": self.id, "model": self.model, "checkpoint": self.checkpoint,
             "labels": self.labels, "modalities": self.modalities,
             "utterances": [u.to_dict() for u in self.utterances]}
        if self.warnings:
            d["warnings"] = list(self.warnings)
        return d

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
                       id=str(d.get("id", "conversation")),
                       warnings=[str(w) for w in d.get("warnings") or []])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"not a merc prediction: {type(e).__name__} {e}") from None


def batch_predictions(net, batch, convs: Sequence[Conversation], *,
                      label_names: Sequence[str], model: str, checkpoint: str,
                      modalities: Sequence[str], temperature: float = 1.0) -> list[Prediction]:
    """Run the network ``net`` (eval mode; ``model`` is its registered name) on ``batch``,
    the collated ``convs`` in order, and return one :class:`Prediction` per conversation
    (softmax probabilities of ``logits / temperature`` -- the checkpoint's validation-fitted
    temperature, :mod:`merc.calibration` -- and fusion weights, cut to its real utterances).
    Shared by :meth:`Predictor.predict_many` and ``merc evaluate --predictions``."""
    import torch

    with torch.no_grad():
        out = net(batch)
    probs = calibrated_probs(out.logits, temperature)                         # (B, L, C)

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
    ids = [conv.utterance_ids[i] if conv.utterance_ids and conv.utterance_ids[i]
           else default_utterance_id(i) for i in range(len(conv))]
    if not np.isfinite(probs).all():
        i = int(np.argwhere(~np.isfinite(probs))[0][0])
        raise MercInputError(checkpoint, "the model produced non-finite probabilities "
                             "(NaN/inf)", dialogue=conv.id, utterance=ids[i], field="probs")
    result = Prediction(model=model, checkpoint=checkpoint, labels=list(label_names),
                        modalities=list(modalities), id=str(conv.id))
    gold = gold if gold is not None else (conv.labels or [None] * len(conv))
    # Kept as given, never mapped (neu -> neutral would be a guess), but never passed on
    # silently either: a reader comparing gold with label must learn they cannot match.
    foreign = unknown_gold_labels([(None, ids[i], g) for i, g in enumerate(gold)], label_names)
    if foreign:
        result.warnings.append(foreign)
    for i in range(len(conv)):
        k = int(probs[i].argmax())
        result.utterances.append(UtterancePrediction(
            id=ids[i], speaker=conv.speakers[i], text=conv.utterances[i],
            label=label_names[k], confidence=float(probs[i, k]),
            probs={lab: float(p) for lab, p in zip(label_names, probs[i])},
            modality_weights=({m: float(w[i]) for m, w in weights.items()}
                              if weights is not None else None),
            gold=gold[i]))
    return result


def unknown_gold_labels(gold: Sequence[tuple[str | None, str, str | None]],
                        label_names: Sequence[str]) -> str | None:
    """One line about the gold labels that are not among the model's ``label_names``, or
    ``None``: ``gold`` holds ``(dialogue or None, utterance id, gold label or None)``.

    >>> unknown_gold_labels([("d", "u0", "neu"), ("d", "u1", "joy")], ["joy", "neutral"])
    "1 gold label is not among the model's labels ['joy', 'neutral'] (first: 'neu', dialogue d, \
utterance u0); it is kept as given and is not comparable to the predictions"
    """
    known = set(label_names)
    bad = [(d, u, g) for d, u, g in gold if g is not None and g not in known]
    if not bad:
        return None
    dialogue, utterance, label = bad[0]
    where = f"dialogue {dialogue}, " if dialogue is not None else ""
    one = len(bad) == 1
    return (f"{len(bad)} gold label{' is' if one else 's are'} not among the model's labels "
            f"{list(label_names)} (first: {label!r}, {where}utterance {utterance}); "
            f"{'it is' if one else 'they are'} kept as given and {'is' if one else 'are'} not "
            "comparable to the predictions")
