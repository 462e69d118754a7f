"""Predict the emotion of every utterance of a new conversation with a trained checkpoint.

>>> from merc import Predictor
>>> predictor = Predictor.from_checkpoint()          # the bundled model; or a best.ckpt path
>>> result = predictor.predict("talk.jsonl")        # or a list of {"speaker", "text", ...}
>>> for u in result.utterances:
...     print(u.speaker, u.label, round(u.confidence, 2), u.modality_weights)

The checkpoint's own :class:`~merc.features.spec.FeatureSpec` drives feature extraction: the
text encoder it was trained with, openSMILE audio from each utterance's wav when it was trained
with openSMILE audio, faces in each utterance's video when it was trained with ``--video
fer2013`` (:mod:`merc.features.video`), and the train-split normalisation statistics it stored.
What cannot be recomputed from a conversation file is refused with a one-line message (features
that came precomputed with a corpus, such as IEMOCAP's librosa-8 audio or MOSI's vectors). An
utterance without a wav, in a model trained with audio, is treated as training treated missing
audio: zero-filled and marked absent (i.e. the train mean); so is one without a video, or
without a face in its video, in a model trained with video.

Many conversations: :meth:`Predictor.predict_many` extracts features for a whole batch of
conversations in one text-encoder call and runs the model on ``batch_size`` conversations per
forward pass (the models' logits do not depend on the batch's padding), which is what
``merc predict`` does with many inputs.

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

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from merc.data.conversation import Conversation, Corpus
from merc.data.conversation_file import conversation_from_records, read_conversation
from merc.errors import MercInputError

log = logging.getLogger(__name__)


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


class Predictor:
    """A loaded checkpoint plus its feature extractors, reusable across conversations.

    Args:
        checkpoint: Path of a ``best.ckpt`` written by ``merc train`` (loaded with
            ``torch.load(weights_only=True)``).
        allow_outside_media: Let a conversation file's ``audio``/``video`` paths point outside
            its folder (absolute paths, ``..``, symlinks out). Off by default: a conversation
            file from someone else must not make merc read arbitrary files of this machine.
        device: Torch device of the context model (``cpu``, ``cuda``, ``cuda:1``, ...).
    """

    def __init__(self, checkpoint: str | Path, *, allow_outside_media: bool = False,
                 device: str = "cpu") -> None:
        import torch

        from merc.checkpoint import load_checkpoint

        self.allow_outside_media = bool(allow_outside_media)
        self.checkpoint = Path(checkpoint)
        try:
            self.device = torch.device(device)
        except RuntimeError as e:
            raise MercInputError(device, f"not a torch device ({e})", field="--device") from None
        self.loaded = load_checkpoint(self.checkpoint)
        self.loaded.model.to(self.device)
        self.spec = self.loaded.feature_spec
        self.modalities = self.spec.modalities()
        self.label_names = self.loaded.label_names
        self.model_name = self.loaded.config.model_name
        self._check_spec()
        self._text = None
        self._audio = None
        self._video = None

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None, *,
                        allow_outside_media: bool = False, device: str = "cpu") -> Predictor:
        """Load ``path`` -- a checkpoint, or a ``merc train`` run folder (its best seed on
        *validation*, :func:`merc.checkpoint.resolve_checkpoint`, logged) -- or merc's
        bundled default model when ``path`` is ``None``."""
        if path is None:
            from merc.pretrained import bundled_checkpoint

            path = bundled_checkpoint()
        else:
            from merc.checkpoint import resolve_checkpoint

            path, why = resolve_checkpoint(path)
            if why:
                log.warning("%s", why)
        return cls(path, allow_outside_media=allow_outside_media, device=device)

    def _check_spec(self) -> None:
        """Refuse up front what no conversation file could provide."""
        for m in self.modalities:
            source = getattr(self.spec, m)
            if source == "external":
                raise MercInputError(
                    self.checkpoint, f"this model was trained on {m} features supplied with its "
                    f"corpus, which merc cannot compute from a conversation file; use a model "
                    f"trained with a built-in {m} extractor (text: a sentence-transformers model; "
                    f"audio: --audio eGeMAPSv02; video: --video fer2013)",
                    field=f"feature_spec.{m}")

    def _features(self, convs: list[Conversation], progress: bool) -> list[Conversation]:
        """Extract every modality the checkpoint needs for ``convs`` (text in one encoder call
        for all of them); returns the conversations with their features, normalised."""
        texts = None
        if "text" in self.modalities:
            if self._text is None:
                self._text = _text_encoder(self.spec.text)
            texts = self._text(convs, progress)
        out = []
        for k, conv in enumerate(convs):
            features: dict[str, np.ndarray] = {}
            present: dict[str, np.ndarray] = {}
            if texts is not None:
                features["text"] = texts[k]
            if "audio" in self.modalities:
                features["audio"], present["audio"] = self._audio_features(conv, progress)
            if "video" in self.modalities:
                features["video"], present["video"] = self._video_features(conv, progress)
            out.append(replace(conv, labels=None, features=features, feature_present=present))
        if self.spec.normalize and self.spec.stats:
            from merc.features.normalize import apply_stats

            corpus = Corpus("predict", out, self.label_names, source="predict")
            out = apply_stats(corpus, self.spec.stats).conversations
        return out

    def _audio_features(self, conv: Conversation, progress: bool
                        ) -> tuple[np.ndarray, np.ndarray]:
        """``(n, d)`` openSMILE features of ``conv``'s wavs and the ``(n,)`` present mask."""
        paths = conv.media.get("audio") or [None] * len(conv)
        have = [i for i, p in enumerate(paths) if p]
        if not have:
            raise MercInputError(conv.id, f"this model uses audio ({self.spec.audio} from "
                                 "wav files) but no utterance has an 'audio' path",
                                 field="audio")
        if self._audio is None:
            from merc.features.audio import OpenSmileExtractor

            self._audio = OpenSmileExtractor(self.spec.audio)
        ids = [conv.utterance_name(i) for i in have]
        rows = self._audio.extract([paths[i] for i in have], progress=progress,
                                   origins=[(conv.id, u) for u in ids])
        return _present_rows(conv, have, rows, "no usable audio")

    def _video_features(self, conv: Conversation, progress: bool
                        ) -> tuple[np.ndarray, np.ndarray]:
        """``(n, 406)`` pooled face features of ``conv``'s videos (whole files or
        ``start``/``end`` segments) and the ``(n,)`` present mask: an utterance without a video
        or without a face in any analysed frame is missing, as in training."""
        paths = conv.media.get("video") or [None] * len(conv)
        have = [i for i, p in enumerate(paths) if p]
        if not have:
            raise MercInputError(conv.id, f"this model uses video ({self.spec.video} from "
                                 "video files) but no utterance has a 'video' path",
                                 field="video")
        if self._video is None:
            from merc.features.video import FaceExpressionExtractor

            self._video = FaceExpressionExtractor.from_source(self.spec.video)
        segments = [conv.video_segments[i] if conv.video_segments else None for i in have]
        rows = self._video.extract([paths[i] for i in have], segments, progress=progress,
                                   origins=[(conv.id, conv.utterance_name(i)) for i in have])
        return _present_rows(conv, have, rows, "no video or no face in it")

    def english_only(self) -> bool:
        """Whether the text encoder is the bundled English MiniLM (or fine-tuned from it)."""
        from merc.text.folder import EncoderRecord, is_encoder_folder
        from merc.features.spec import DEFAULT_TEXT_ENCODER

        text = self.spec.text
        if not text or "text" not in self.modalities:
            return False
        if is_encoder_folder(text):
            return EncoderRecord.load(text).base_model == DEFAULT_TEXT_ENCODER
        return text == DEFAULT_TEXT_ENCODER

    def language_warning(self, conv: Conversation) -> str | None:
        """A warning when ``conv`` looks like it is not in English but the encoder only knows
        English: most of its letters are outside the Latin script (a cheap heuristic: it
        catches Chinese, Arabic, Russian...; not French or German, which the encoder's
        sub-words cover poorly too but less blindly)."""
        if not self.english_only():
            return None
        letters = [ch for text in conv.utterances for ch in text if ch.isalpha()]
        if len(letters) < 10:
            return None
        latin = sum(ch.isascii() or "\u00c0" <= ch <= "\u024f" for ch in letters)
        if latin / len(letters) >= 0.5:
            return None
        return (f"conversation {conv.id}: {100 - 100 * latin // len(letters)}% of its letters are "
                "not Latin script, but the text encoder (all-MiniLM-L6-v2) was trained on "
                "English; expect poor predictions (use a model with a multilingual encoder)")

    def unused_media(self, conv: Conversation) -> list[str]:
        """Media kinds ``conv`` names that this model does not use (e.g. wavs for a text-only
        model): they are ignored, and a caller should say so."""
        return [k for k, paths in conv.media.items()
                if k not in self.modalities and any(p for p in paths)]

    def predict(self, conversation: Conversation | str | Path | Sequence[dict],
                progress: bool = False) -> Prediction:
        """Predict every utterance of ``conversation``.

        Args:
            conversation: A :class:`Conversation`, a ``.json``/``.jsonl`` conversation file
                (see :mod:`merc.data.conversation_file`), or a list of utterance dicts (media
                paths relative to the current directory). Files and dicts are validated,
                media paths included, whatever modalities the model uses; a
                :class:`Conversation` is taken as built.
            progress: Show progress bars during feature extraction.
        """
        if isinstance(conversation, (str, Path)):
            conv = read_conversation(conversation, allow_outside_media=self.allow_outside_media)
        elif isinstance(conversation, Conversation):
            conv = conversation
        else:
            conv = conversation_from_records(list(conversation),
                                             allow_outside_media=self.allow_outside_media)
        return self.predict_many([conv], progress=progress)[0]

    def predict_many(self, conversations: Sequence[Conversation], *, batch_size: int = 32,
                     progress: bool = False) -> list[Prediction]:
        """Predict every utterance of each conversation, in order: features for all of them at
        once (one text-encoder call), then ``batch_size`` conversations per forward pass.

        The result for a conversation is the one :meth:`predict` gives it alone (to float
        rounding): padding never changes a real utterance's logits.
        """
        from merc.data.collate import DialogueDataset, collate_dialogues

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        convs = list(conversations)
        ready = self._features(convs, progress)
        data = DialogueDataset(ready, self.label_names, self.modalities)
        results = []
        for start in range(0, len(convs), batch_size):
            idx = range(start, min(start + batch_size, len(convs)))
            batch = collate_dialogues([data[i] for i in idx]).to(self.device)
            results += batch_predictions(
                self.loaded.model, batch, [convs[i] for i in idx], label_names=self.label_names,
                model=self.model_name, checkpoint=str(self.checkpoint),
                modalities=self.modalities)
        return results


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
    from merc.config import MODALITIES  # loaded with the checkpoint already; kept off `import merc`

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


def _text_encoder(name: str):
    """``conversations, progress -> [(n_i, d) per conversation]`` for text encoder ``name``,
    one encoder call for all of them.

    The bundled MiniLM runs through the light :class:`merc.text.bert.MiniLMEncoder` (same
    embeddings as sentence-transformers to float rounding, without importing it: seconds faster
    to start); a ``merc finetune`` encoder folder through
    :class:`~merc.text.folder.FinetunedTextEncoder`, which formats each utterance
    with its context and speakers exactly as in training; others through sentence-transformers.
    """
    from merc.text.folder import FinetunedTextEncoder, is_encoder_folder
    from merc.features.spec import DEFAULT_TEXT_ENCODER
    from merc.text.encoder import TextEncoder, bundled_model_dir

    def flat(convs):
        return ([u for c in convs for u in c.utterances], [n for c in convs for n in _names(c)],
                ", ".join(str(c.id) for c in convs[:3]) + (" ..." if len(convs) > 3 else ""))

    def split(matrix, convs):
        bounds = np.cumsum([0] + [len(c) for c in convs])
        return [matrix[bounds[k]:bounds[k + 1]] for k in range(len(convs))]

    if name == DEFAULT_TEXT_ENCODER:
        from merc.text.bert import MiniLMEncoder

        fast = MiniLMEncoder(bundled_model_dir())

        def encode_minilm(convs, progress):
            texts, names, source = flat(convs)
            return split(fast.encode(texts, names, source), convs)

        return encode_minilm
    if is_encoder_folder(name):
        ctx = FinetunedTextEncoder(name)
        return lambda convs, progress: split(ctx.encode(convs, progress=progress), convs)
    encoder = TextEncoder(name)

    def encode_st(convs, progress):
        texts, names, source = flat(convs)
        return split(encoder.encode(texts, progress=progress, names=names, source=source), convs)

    return encode_st


def _present_rows(conv: Conversation, have: list[int], rows: np.ndarray, what: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    """An extractor's ``rows (len(have), d)`` for utterances ``have`` of ``conv`` placed into an
    ``(n, d)`` matrix and its ``(n,)`` present mask: utterances without the medium, and rows the
    extractor left non-finite (too short a wav, no face), are zero and missing, as in training;
    a warning counts them (``what`` says what they lack)."""
    out = np.zeros((len(conv), rows.shape[1]), dtype=np.float32)
    mask = np.zeros(len(conv), dtype=bool)
    ok = np.isfinite(rows).all(axis=1)
    out[np.asarray(have)[ok]] = rows[ok]
    mask[np.asarray(have)[ok]] = True
    if not mask.all():
        log.warning("%s: %d of %d utterances have %s; treated as missing (as in training)",
                    conv.id, int((~mask).sum()), len(conv), what)
    return out, mask


def _names(conv: Conversation) -> list[str]:
    """``"dialogue X, utterance Y"`` per utterance, for the truncation warning."""
    return [f"dialogue {conv.id}, utterance {conv.utterance_name(i)}" for i in range(len(conv))]
