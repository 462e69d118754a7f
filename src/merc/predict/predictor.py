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

The output schema is :mod:`merc.predict.results`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path


from merc.data.conversation import Conversation, Corpus
from merc.data.conversation_file import conversation_from_records, read_conversation
from merc.errors import MercInputError
from merc.predict.results import (Prediction, UtterancePrediction,  # noqa: F401  (re-exported)
                                  batch_predictions, build_prediction)

log = logging.getLogger(__name__)

CHUNK_UTTERANCES = 1024
"""Most utterances per feature-extraction call of :meth:`Predictor.predict_stream` (besides
``8 * batch_size`` conversations): a corpus such as IEMOCAP's 7,433 utterances in 151 dialogues
is then several chunks, so progress is reported while it runs, not only at the end."""


def usable_device(spec: str):
    """``spec`` (``cpu``, ``cuda``, ``cuda:N``, ``mps``) as a ``torch.device`` this machine can
    use, checked before any model is moved there (torch answers an unusable one with an
    ``AssertionError`` traceback from deep inside ``Module.to``).

    Raises:
        MercInputError: field ``--device``: not a device, CUDA/MPS not available, an index past
            the visible GPUs, or a device type merc does not predict on.
    """
    import torch

    def bad(message: str) -> MercInputError:
        return MercInputError(spec, message, field="--device")

    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError, ValueError) as e:
        raise bad(f"not a torch device ({' '.join(str(e).split())})") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise bad("CUDA is not available (this torch build has no CUDA support, or no GPU "
                      "is visible); use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise bad(f"device index {device.index} out of range: {count} CUDA device(s) "
                      f"visible (cuda:0 to cuda:{count - 1})")
        return device
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise bad("MPS (Apple GPU) is not available on this machine; use --device cpu")
        return device
    raise bad(f"merc predicts on cpu, cuda, cuda:N or mps, not {device.type!r}")


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
        from merc.checkpoint import load_checkpoint

        self.allow_outside_media = bool(allow_outside_media)
        self.checkpoint = Path(checkpoint)
        self.device = usable_device(device)
        self.loaded = load_checkpoint(self.checkpoint)
        self.loaded.model.to(self.device)
        self.spec = self.loaded.feature_spec
        self.modalities = self.spec.modalities()
        self.label_names = self.loaded.label_names
        self.model_name = self.loaded.config.model_name
        self._check_spec()
        self._extractor = None

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None, *,
                        allow_outside_media: bool = False, device: str = "cpu") -> Predictor:
        """Load ``path`` -- a checkpoint, a ``merc train`` run folder (its best seed on
        *validation*, :func:`merc.checkpoint.resolve_checkpoint`, logged) or the name of a
        pretrained model -- or merc's default model when ``path`` is ``None``."""
        if path is None:
            from merc.pretrained import bundled_checkpoint

            path = bundled_checkpoint()
        else:
            from merc.checkpoint import resolve_checkpoint

            path, why = resolve_checkpoint(path)
            if why:
                log.warning("%s", why)
        return cls(path, allow_outside_media=allow_outside_media, device=device)

    @classmethod
    def from_pretrained(cls, name: str, *, allow_outside_media: bool = False,
                        device: str = "cpu") -> Predictor:
        """Load the zoo model ``name`` (``merc models --pretrained`` lists them).

        Raises:
            MercInputError: no such model, or the base encoder it needs is not on this machine
                (the message names the command to run).
        """
        from merc.pretrained import get_pretrained

        model = get_pretrained(name)
        model.require_available()
        return cls(model.checkpoint, allow_outside_media=allow_outside_media, device=device)

    def session(self, conversation_id: str = "live", **options):
        """A :class:`~merc.predict.live.LiveSession`: feed one utterance at a time with
        ``session.add({"speaker", "text", ...})`` and get its prediction at once, in time
        independent of how many came before (causal models only).

        ``options``: :class:`~merc.predict.live.LiveSession`'s keyword arguments (``base_dir``,
        ``source``, ``max_chars``).

        Raises:
            MercInputError: the model or its text encoder reads ahead.
        """
        from merc.predict.live import LiveSession

        return LiveSession(self, conversation_id, **options)

    def _check_spec(self) -> None:
        """Refuse up front what no conversation file could provide."""
        for m in self.modalities:
            if self.spec.is_external(m):
                raise MercInputError(
                    self.checkpoint, f"this model was trained on {m} features supplied with its "
                    f"corpus, which merc cannot compute from a conversation file; use a model "
                    f"trained with a built-in {m} extractor (text: a sentence-transformers model; "
                    f"audio: --audio eGeMAPSv02; video: --video fer2013)",
                    field=f"feature_spec.{m}")

    def _features(self, convs: list[Conversation], progress: bool) -> list[Conversation]:
        """Every modality the checkpoint needs for ``convs``, through the one feature path
        (:class:`merc.features.extractor.FeatureExtractor`, as in training; no disk cache),
        normalised with the checkpoint's train-split statistics."""
        from merc.features.extractor import FeatureExtractor

        for conv in convs:
            self._require_media(conv)
        if self._extractor is None:
            self._extractor = FeatureExtractor(self.spec, cache=False)
        source = ", ".join(str(c.id) for c in convs[:3]) + (" ..." if len(convs) > 3 else "")
        corpus = Corpus("predict", [replace(c, labels=None) for c in convs], self.label_names,
                        source=source)
        ready = self._extractor.extract(corpus, progress=progress)
        if self.spec.normalize and self.spec.stats:
            from merc.features.normalize import apply_stats

            ready = apply_stats(ready, self.spec.stats)
        return ready.conversations

    def _require_media(self, conv: Conversation) -> None:
        """A conversation handed to a model that hears or sees must name at least one wav /
        video: otherwise the user most likely forgot them (one line, before any extraction)."""
        for kind, what in (("audio", "wav files"), ("video", "video files")):
            if kind in self.modalities and not any(conv.media.get(kind) or ()):
                raise MercInputError(conv.id, f"this model uses {kind} "
                                     f"({getattr(self.spec, kind)} from {what}) but no "
                                     f"utterance has an '{kind}' path", field=kind)

    def english_only(self) -> bool:
        """Whether the text encoder is the bundled English MiniLM (or fine-tuned from it)."""
        from merc.features.spec import DEFAULT_TEXT_ENCODER
        from merc.text.record import EncoderRecord

        source = self.spec.text_source
        if source is None:
            return False
        if source.kind == "folder":
            return EncoderRecord.load(source.name).base_model == DEFAULT_TEXT_ENCODER
        return source.kind == "bundled"

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

    def predict_stream(self, conversations: Iterable[Conversation], *, batch_size: int = 32,
                       chunk: int | None = None, progress: bool = False,
                       report: Callable[[int, int], None] | None = None
                       ) -> Iterator[Prediction]:
        """Predictions of ``conversations``, in order, produced chunk by chunk: what
        ``merc predict`` runs for one or a million conversations.

        Args:
            batch_size: Conversations per forward pass.
            chunk: Conversations per feature-extraction call (one text-encoder call each);
                default ``8 * batch_size``, which bounds memory on a million conversations. A
                chunk also ends before it passes :data:`CHUNK_UTTERANCES` utterances.
            progress: One bar over utterances for many conversations; the extractors' own bars
                for a single one.
            report: Called as ``report(utterances done, utterances in all)`` after each chunk
                (``merc predict`` prints plain progress lines with it when stderr is not a
                terminal, where a bar would be noise).
        """
        convs = list(conversations)
        chunk = chunk or batch_size * 8
        many = len(convs) > 1
        total = sum(len(c) for c in convs)
        bar = None
        if progress and many:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="utt", desc="predict")
        done = 0
        try:
            for part in _chunks(convs, chunk, CHUNK_UTTERANCES):
                yield from self.predict_many(part, batch_size=batch_size,
                                             progress=progress and not many)
                size = sum(len(c) for c in part)
                done += size
                if bar is not None:
                    bar.update(size)
                if report is not None:
                    report(done, total)
        finally:
            if bar is not None:
                bar.close()

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
                modalities=self.modalities, temperature=self.loaded.temperature)
        return results


def _chunks(convs: Sequence[Conversation], max_convs: int, max_utterances: int
            ) -> Iterator[list[Conversation]]:
    """``convs`` in order, in runs of at most ``max_convs`` conversations and (unless one
    conversation alone is longer) ``max_utterances`` utterances."""
    part: list[Conversation] = []
    size = 0
    for conv in convs:
        if part and (len(part) >= max_convs or size + len(conv) > max_utterances):
            yield part
            part, size = [], 0
        part.append(conv)
        size += len(conv)
    if part:
        yield part
