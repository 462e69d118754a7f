"""The one road from conversations to per-utterance features, for training and prediction alike.

:class:`FeatureExtractor` turns a corpus (a training corpus, or the conversations handed to
``merc predict`` / ``merc serve``) and a :class:`~merc.features.spec.FeatureSpec` into the
features each model input needs: ``merc train``, ``merc extract``, ``merc evaluate``, the benches,
:class:`merc.predict.Predictor` and the server all call :meth:`FeatureExtractor.extract`, so a
new encoder, backend or modality is written once and training and serving cannot drift apart.

Per modality the spec says ``None`` (drop it), ``"external"`` (keep what the loader supplied) or
an extractor (compute it). Extraction runs once over the whole corpus (one batched text-encoder
call, one pass over the wavs and videos) and is split back per conversation. With a cache
(training) the on-disk :class:`~merc.features.cache.FeatureCache` is checked before any heavy
import, so a repeated run costs a hash of the inputs plus one ``np.load``; prediction runs
without one (a user's conversations are not written to disk).

**One missing-row rule.** An utterance without the medium (no wav / video path), or whose file
the extractor cannot analyse (a wav too short for openSMILE, a video without a face), gets a zero
row marked absent in ``feature_present`` -- what the models already do with a corpus' missing
vectors -- and one warning counts them. No utterance with the medium at all, a named file that
is missing or unreadable, or all-empty transcripts are errors (one line naming the record).

**One text-encoder dispatch** (:func:`text_encoder`): a ``merc finetune`` folder through
:class:`merc.text.folder.FinetunedTextEncoder` (each utterance formatted with its dialogue
context exactly as in fine-tuning), any other model through sentence-transformers
(:class:`merc.text.encoder.TextEncoder`) -- except the bundled MiniLM when the extractor runs
without a cache (prediction), which goes through merc's own BERT port
(:class:`merc.text.encoder.BundledMiniLM`): no sentence-transformers import, seconds faster to
start, embeddings equal to float rounding (max 2.5e-7 on IEMOCAP). Training keeps
sentence-transformers for it because switching moves trained figures (IEMOCAP bc-LSTM seed 0
test W-F1 64.05 -> 64.19): one implementation for both is a change of results, not of structure.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from merc.data.conversation import Corpus
from merc.errors import MercInputError
from merc.features.cache import FeatureCache, hash_files, hash_texts
from merc.features.spec import (AUDIO_OPENSMILE_SETS, DEFAULT_TEXT_ENCODER, EXTERNAL, FeatureSpec,
                                TextSource, parse_video_source)

log = logging.getLogger(__name__)

_CHOICES = {
    "text": f"None, 'external', a sentence-transformers model (default "
            f"{DEFAULT_TEXT_ENCODER!r}) or a `merc finetune` encoder folder to embed the "
            f"transcripts",
    "audio": f"None, 'external', or an openSMILE set {list(AUDIO_OPENSMILE_SETS)} computed from "
             f"the utterances' wav paths",
    "video": "None, 'external', or 'fer2013' (faces in the utterances' videos, FER-2013 "
             "expression CNN; 'fer2013:FPS' sets the frames analysed per second, default 5)",
}



_UNUSABLE = {
    "audio": "no wav, or one too short for openSMILE",
    "video": "no video, or no face in any analysed frame",
}
"""Why a computed row can be missing, per modality (the warning says it)."""


class FeatureExtractor:
    """Per-utterance features for a :class:`FeatureSpec`, one instance per spec.

    Args:
        spec: Feature sources per modality (normalisation is not applied here: training fits
            it on the train split, prediction applies the checkpoint's statistics).
        cache_dir: Feature cache root (``None`` = ``$MERC_CACHE_DIR`` or
            ``~/.cache/merc/features``); ignored when ``cache`` is False.
        cache: Read and write the on-disk cache (training); prediction passes False.

    The encoders are loaded on first use and kept, so one extractor serves many calls (a
    server's requests, ``merc predict``'s chunks) without reloading a model.
    """

    def __init__(self, spec: FeatureSpec, *, cache_dir: str | Path | None = None,
                 cache: bool = True) -> None:
        _check_spec(spec)
        self.spec = spec
        self.cache = FeatureCache(cache_dir) if cache else None
        self._text = None
        self._audio = None
        self._video = None

    def extract(self, corpus: Corpus, *, progress: bool = False) -> Corpus:
        """A new corpus whose conversations carry exactly ``spec.modalities()`` features.

        Returns:
            A new :class:`Corpus` (same conversations' metadata) where each conversation has
            ``features[m]`` float32 ``(n_utterances, d_m)`` for every enabled modality ``m`` and
            no other feature; ``feature_present[m]`` ``(n,)`` bool is kept for external features
            and set for computed ones that have missing rows (absent = all present).

        Raises:
            MercInputError: one line naming the file, dialogue, utterance and field for external
                features that are missing, media files that are absent or unreadable, no
                utterance with a needed medium, or transcripts that are all empty.
        """
        convs = corpus.conversations
        if not convs:
            return replace(corpus, conversations=[])
        computed: dict[str, list[np.ndarray]] = {}
        masks: dict[str, list[np.ndarray | None]] = {}
        for m in self.spec.modalities():
            if self.spec.is_external(m):
                _require_external(corpus, m)
                continue
            matrix = {"text": self._text_matrix, "audio": self._audio_matrix,
                      "video": self._video_matrix}[m](corpus, progress)
            computed[m], masks[m] = _missing_rows(matrix, corpus, m)
        out = []
        for i, c in enumerate(convs):
            features, present = {}, {}
            for m in self.spec.modalities():
                if m in computed:
                    features[m] = computed[m][i]
                    if masks[m][i] is not None:
                        present[m] = masks[m][i]
                else:
                    features[m] = c.features[m]
                    if m in c.feature_present:
                        present[m] = c.feature_present[m]
            # New dicts: the input conversation keeps its own features (including dropped ones).
            out.append(replace(c, features=features, feature_present=present))
        return replace(corpus, conversations=out)

    def _cached(self, extractor, inputs_hash, n: int, compute) -> np.ndarray:
        if self.cache is None:
            return compute()
        return self.cache.get_or_compute(extractor.name, extractor.settings(), inputs_hash(), n,
                                         compute)

    def _text_matrix(self, corpus: Corpus, progress: bool) -> np.ndarray:
        """Embeddings of all utterances in corpus order, ``(N, d)``."""
        source = self.spec.text
        texts = [t for c in corpus.conversations for t in c.utterances]
        if texts and not any(t.strip() for t in texts):
            first = corpus.conversations[0]
            raise MercInputError(corpus.source, "the corpus has no transcripts (all utterance "
                                 f"texts are empty), so FeatureSpec.text={source!r} cannot be "
                                 "computed; use text=None", dialogue=first.id, field="text")
        if self._text is None:
            self._text = text_encoder(self.spec.text_source, fast_start=self.cache is None)
        enc = self._text
        if enc.contextual:
            # A fine-tuned merc encoder formats each utterance with its dialogue context and
            # speakers, so those are part of the inputs (and of the cache key); with cross-fitted
            # encoders, so are a dialogue's id and split (they choose the fold encoder).
            keyed = lambda: hash_texts([  # noqa: E731
                f"{c.split}\0{c.id}\0{len(c)}\0"
                + "\0".join(f"{s}\0{t}" for s, t in zip(c.speakers, c.utterances))
                for c in corpus.conversations])
            return self._cached(enc, keyed, len(texts),
                                lambda: enc.encode(corpus.conversations, progress=progress))
        return self._cached(enc, lambda: hash_texts(texts), len(texts),
                            lambda: enc.encode(texts, progress=progress,
                                               names=_utterance_names(corpus),
                                               source=corpus.source))

    def _audio_matrix(self, corpus: Corpus, progress: bool) -> np.ndarray:
        """openSMILE functionals of all utterances' wavs in corpus order, ``(N, d)``; NaN rows
        for utterances without a wav or with one too short to analyse."""
        from merc.features.audio import OpenSmileExtractor

        paths, origins, rows, n = _media(corpus, "audio", self.spec.audio)
        if self.cache is not None:
            for path, (dialogue, utterance) in zip(paths, origins):
                if not os.path.isfile(path):
                    raise MercInputError(path, "audio file not found", dialogue=dialogue,
                                         utterance=utterance, field="audio")
        if self._audio is None:
            self._audio = OpenSmileExtractor(self.spec.audio)
        extractor = self._audio
        found = self._cached(extractor, lambda: hash_files(paths), len(paths),
                             lambda: extractor.extract(paths, progress=progress, origins=origins))
        out = np.full((n, found.shape[1]), np.nan, dtype=np.float32)
        out[rows] = found
        return out

    def _video_matrix(self, corpus: Corpus, progress: bool) -> np.ndarray:
        if self._video is None:
            from merc.features.video import FaceExpressionExtractor

            self._video = FaceExpressionExtractor.from_source(self.spec.video)
        return video_matrix(corpus, self.spec.video, self.cache, progress, self._video)


def build_features(corpus: Corpus, spec: FeatureSpec, cache_dir: str | Path | None = None,
                   progress: bool = True) -> Corpus:
    """``FeatureExtractor(spec, cache_dir=cache_dir).extract(corpus)`` (see there)."""
    return FeatureExtractor(spec, cache_dir=cache_dir).extract(corpus, progress=progress)


def text_encoder(source: TextSource, *, fast_start: bool = False):
    """The encoder for text source ``source`` -- the one dispatch (module docstring);
    ``fast_start``: the bundled MiniLM through merc's BERT port (prediction).

    Every encoder has ``name`` and ``settings()`` (the cache key), ``dim`` and ``contextual``:
    True for a ``merc finetune`` folder, whose ``encode(conversations, progress=)`` reads whole
    dialogues; otherwise ``encode(texts, progress=, names=, source=)`` embeds texts one by one.
    """
    if source.kind == "folder":
        from merc.text.folder import FinetunedTextEncoder

        return FinetunedTextEncoder(source.name)
    if source.kind == "bundled" and fast_start:
        from merc.text.encoder import BundledMiniLM

        return BundledMiniLM()
    from merc.text.encoder import TextEncoder

    return TextEncoder(source.name)


def _check_spec(spec: FeatureSpec) -> None:
    if spec.video not in (None, EXTERNAL) and parse_video_source(spec.video) is None:
        raise MercInputError("FeatureSpec", f"video={spec.video!r} is not available; expected "
                             f"{_CHOICES['video']}", field="video")
    if spec.audio not in (None, EXTERNAL, *AUDIO_OPENSMILE_SETS):
        raise MercInputError("FeatureSpec", f"audio={spec.audio!r} is not available; expected "
                             f"{_CHOICES['audio']}", field="audio")
    if spec.text is not None and not str(spec.text).strip():
        raise MercInputError("FeatureSpec", f"empty text encoder name; expected "
                             f"{_CHOICES['text']}", field="text")


def _require_external(corpus: Corpus, m: str) -> None:
    for c in corpus.conversations:
        if m not in c.features:
            hint = _CHOICES[m]
            if m == "audio" and not any(c.media.get("audio") for c in corpus.conversations):
                hint += " (this corpus has no wav paths, so only None)"
            raise MercInputError(corpus.source, f"FeatureSpec.{m}='external' but the corpus "
                                 f"supplies no {m} features for this dialogue; use {hint}",
                                 dialogue=c.id, field=m)



def _missing_rows(matrix: np.ndarray, corpus: Corpus, modality: str
                  ) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """The one missing-row rule: per-conversation blocks of a computed ``(N, d)`` matrix whose
    non-finite rows (no medium, or one the extractor could not analyse) are zero-filled, and per
    conversation the ``(n,)`` present mask (``None`` when all are present); one warning counts
    the missing rows."""
    ok = np.isfinite(matrix).all(axis=1)
    if not ok.all():
        log.warning("%s: %d of %d utterances have no usable %s (%s); zero-filled and marked "
                    "missing", corpus.source, int((~ok).sum()), len(ok), modality,
                    _UNUSABLE.get(modality, "not computable"))
        matrix = np.where(ok[:, None], matrix, np.float32(0))
    return _split(matrix, corpus), [None if p.all() else p for p in _split(ok, corpus)]


def _split(matrix: np.ndarray, corpus: Corpus) -> list[np.ndarray]:
    """Split corpus-order rows ``(N, ...)`` back into per-conversation blocks ``(n_i, ...)``."""
    bounds = np.cumsum([len(c) for c in corpus.conversations])[:-1]
    return np.split(matrix, bounds) if corpus.conversations else []


def _media(corpus: Corpus, kind: str, source: str
           ) -> tuple[list[str], list[tuple[str, str]], list[int], int]:
    """The ``kind`` media paths of all utterances that have one, with their ``(dialogue,
    utterance)`` origins, their row in corpus order, and the number of utterances.

    Raises:
        MercInputError: no utterance has a ``kind`` path.
    """
    paths, origins, rows = [], [], []
    n = 0
    for c in corpus.conversations:
        media = c.media.get(kind)
        for i in range(len(c)):
            path = media[i] if media is not None and i < len(media) else None
            if path:
                paths.append(os.fspath(path))
                origins.append((c.id, c.utterance_name(i)))
                rows.append(n)
            n += 1
    if not paths:
        first = corpus.conversations[0]
        file = "wav" if kind == "audio" else "video"
        raise MercInputError(corpus.source, f"no utterance has an '{kind}' path ({file} file), "
                             f"needed by FeatureSpec.{kind}={source!r} (use 'external' or None "
                             f"if the corpus has no {kind})", dialogue=first.id, field=kind)
    return paths, origins, rows, n


def _utterance_names(corpus: Corpus) -> list[str]:
    """``"dialogue X, utterance Y"`` for every utterance in corpus order (truncation warning)."""
    return [f"dialogue {c.id}, utterance {c.utterance_name(i)}"
            for c in corpus.conversations for i in range(len(c))]


def video_matrix(corpus: Corpus, extractor_name: str, cache: FeatureCache | None,
                 progress: bool, extractor=None) -> np.ndarray:
    """Pooled face features of all utterances' videos in corpus order, ``(N, 406)``; NaN rows
    for utterances without a video path or without a face in any analysed frame.

    Utterances name one video file each, or one shared recording with ``start``/``end``
    (``Conversation.video_segments``). The cache key covers the videos' *contents*, the
    segments and the extractor's settings (:func:`merc.features.video.hash_video_inputs`).

    Raises:
        MercInputError: no utterance has a video, or a video is missing or undecodable.
    """
    from merc.features.video import POOLED_DIM, FaceExpressionExtractor, hash_video_inputs

    paths, origins, rows, n = _media(corpus, "video", extractor_name)
    where = [(c, i) for c in corpus.conversations for i in range(len(c))]
    segments = [where[r][0].video_segments[where[r][1]] if where[r][0].video_segments else None
                for r in rows]
    for path, (dialogue, utterance) in zip(paths, origins):
        if not os.path.isfile(path):
            raise MercInputError(path, "video file not found", dialogue=dialogue,
                                 utterance=utterance, field="video")
    extractor = extractor or FaceExpressionExtractor.from_source(extractor_name)
    compute = lambda: extractor.extract(paths, segments, progress=progress,  # noqa: E731
                                        origins=origins)
    found = compute() if cache is None else cache.get_or_compute(
        extractor.name, extractor.settings(), hash_video_inputs(paths, segments), len(paths),
        compute)
    out = np.full((n, POOLED_DIM), np.nan, dtype=np.float32)
    out[rows] = found
    return out
