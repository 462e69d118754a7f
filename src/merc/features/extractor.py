"""Turn a loaded corpus into a corpus with exactly the features a :class:`FeatureSpec` asks for.

Per modality the spec says ``None`` (drop it), ``"external"`` (keep what the loader supplied)
or an extractor (compute it, through the on-disk :class:`~merc.features.cache.FeatureCache`).
Extraction runs once over the whole corpus (one batched text-encoder call, one pass over the
wavs) and is split back per conversation. The cache is checked before any heavy import, so a
repeated run costs a hash of the inputs plus one ``np.load``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from merc.data.conversation import Corpus
from merc.errors import MercInputError
from merc.features.audio import OpenSmileExtractor
from merc.features.cache import FeatureCache, hash_files, hash_texts
from merc.text.folder import FinetunedTextEncoder, is_encoder_folder
from merc.features.spec import (AUDIO_OPENSMILE_SETS, DEFAULT_TEXT_ENCODER, FeatureSpec,
                                parse_video_source)
from merc.text.encoder import TextEncoder

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


def build_features(corpus: Corpus, spec: FeatureSpec, cache_dir: str | Path | None = None,
                   progress: bool = True) -> Corpus:
    """Return a new corpus whose conversations carry exactly ``spec.modalities()`` features.

    Args:
        corpus: Loaded corpus; not modified.
        spec: Feature sources per modality.
        cache_dir: Feature cache root; ``None`` = ``$MERC_CACHE_DIR`` or ``~/.cache/merc/features``.
        progress: Show progress bars during extraction.

    Returns:
        A new :class:`Corpus` (same conversations' metadata) where each conversation has
        ``features[m]`` float32 ``(n_utterances, d_m)`` for every enabled modality ``m`` and no
        other feature; ``feature_present`` is kept for external features and reset (all present)
        for computed ones, except that audio rows openSMILE could not analyse (too short) are
        zero-filled and marked absent, and so are video rows where no frame shows a face (an
        utterance without a video path, too).

    Raises:
        MercInputError: one line naming the file, dialogue, utterance and field for external
            features that are missing, audio paths that are absent or unreadable, transcripts
            that are all empty, or a spec value with no extractor.
    """
    modalities = spec.modalities()
    _check_spec(spec)
    cache = FeatureCache(cache_dir)
    convs = corpus.conversations
    if not convs:
        return replace(corpus, conversations=[])
    computed: dict[str, list[np.ndarray]] = {}
    computed_present: dict[str, list[np.ndarray | None]] = {}
    for m in modalities:
        source = getattr(spec, m)
        if source == "external":
            _require_external(corpus, m)
        elif m == "text":
            computed[m] = _split(_text_matrix(corpus, source, cache, progress), corpus)
        elif m in ("audio", "video"):
            matrix = (_audio_matrix if m == "audio" else video_matrix)(corpus, source, cache,
                                                                       progress)
            computed[m], computed_present[m] = _split_unusable(matrix, corpus, _UNUSABLE[m])

    new_convs = []
    for i, c in enumerate(convs):
        features = {}
        present = {}
        for m in modalities:
            if m in computed:
                features[m] = computed[m][i]
                mask = computed_present.get(m, [None] * len(convs))[i]
                if mask is not None:
                    present[m] = mask
            else:
                features[m] = c.features[m]
                if m in c.feature_present:
                    present[m] = c.feature_present[m]
        # New dicts: the input conversation keeps its own features (including dropped ones).
        new_convs.append(replace(c, features=features, feature_present=present))
    return replace(corpus, conversations=new_convs)


def _check_spec(spec: FeatureSpec) -> None:
    if spec.video not in (None, "external") and parse_video_source(spec.video) is None:
        raise MercInputError("FeatureSpec", f"video={spec.video!r} is not available; expected "
                             f"{_CHOICES['video']}", field="video")
    if spec.audio not in (None, "external", *AUDIO_OPENSMILE_SETS):
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


def _split(matrix: np.ndarray, corpus: Corpus) -> list[np.ndarray]:
    """Split corpus-order rows ``(N, ...)`` back into per-conversation blocks ``(n_i, ...)``."""
    bounds = np.cumsum([len(c) for c in corpus.conversations])[:-1]
    return np.split(matrix, bounds) if corpus.conversations else []


def _text_matrix(corpus: Corpus, model: str, cache: FeatureCache, progress: bool) -> np.ndarray:
    """Embeddings of all utterances in corpus order, ``(N, d)``."""
    texts = [t for c in corpus.conversations for t in c.utterances]
    if texts and not any(t.strip() for t in texts):
        first = corpus.conversations[0]
        raise MercInputError(corpus.source, "the corpus has no transcripts (all utterance texts "
                             f"are empty), so FeatureSpec.text={model!r} cannot be computed; use "
                             "text=None", dialogue=first.id, field="text")
    if is_encoder_folder(model):
        # A fine-tuned merc encoder formats each utterance with its dialogue context and
        # speakers, so those are part of the inputs (and of the cache key); with cross-fitted
        # encoders, so are a dialogue's id and split (they choose the fold encoder).
        ctx = FinetunedTextEncoder(model)
        keyed = [f"{c.split}\0{c.id}\0{len(c)}\0"
                 + "\0".join(f"{s}\0{t}" for s, t in zip(c.speakers, c.utterances))
                 for c in corpus.conversations]
        return cache.get_or_compute(ctx.name, ctx.settings(), hash_texts(keyed), len(texts),
                                    lambda: ctx.encode(corpus.conversations, progress=progress))
    encoder = TextEncoder(model)
    return cache.get_or_compute(encoder.name, encoder.settings(), hash_texts(texts), len(texts),
                                lambda: encoder.encode(texts, progress=progress,
                                                       names=_utterance_names(corpus),
                                                       source=corpus.source))


_UNUSABLE = {
    "audio": "openSMILE could not analyse %d of %d audio files (too short?); their audio "
             "features are zero-filled and marked missing",
    "video": "no face in any analysed frame of %d of %d utterances' video; their video "
             "features are zero-filled and marked missing",
}
"""Warning for computed rows the extractor left non-finite (``%d of %d`` utterances)."""


def _split_unusable(matrix: np.ndarray, corpus: Corpus, warning: str
                    ) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Per-conversation blocks of a computed ``(N, d)`` matrix whose non-finite rows (an
    utterance the extractor could not analyse) are zero-filled, and per conversation the
    ``(n,)`` present mask, ``None`` when all are present; logs ``warning`` with the count."""
    ok = np.isfinite(matrix).all(axis=1)
    if not ok.all():
        log.warning(warning, int((~ok).sum()), len(ok))
        matrix = np.where(ok[:, None], matrix, np.float32(0))
    return _split(matrix, corpus), [None if p.all() else p for p in _split(ok, corpus)]


def _audio_matrix(corpus: Corpus, feature_set: str, cache: FeatureCache,
                  progress: bool) -> np.ndarray:
    """openSMILE functionals of all utterances' wavs in corpus order, ``(N, d)`` (NaN rows for
    files too short to analyse)."""
    paths: list[str] = []
    origins: list[tuple[str, str]] = []
    for c in corpus.conversations:
        media = c.media.get("audio")
        for i in range(len(c)):
            path = media[i] if media is not None and i < len(media) else None
            if not path:
                raise MercInputError(corpus.source, f"no wav path for this utterance, needed by "
                                     f"FeatureSpec.audio={feature_set!r} (use 'external' or None "
                                     f"if the corpus has no audio)", dialogue=c.id,
                                     utterance=c.utterance_name(i), field="audio")
            paths.append(os.fspath(path))
            origins.append((c.id, c.utterance_name(i)))
    try:
        inputs_hash = hash_files(paths)
    except OSError:
        # Find the offending file to name its record; stat again only on this error path.
        for path, (dialogue, utterance) in zip(paths, origins):
            if not os.path.isfile(path):
                raise MercInputError(path, "audio file not found", dialogue=dialogue,
                                     utterance=utterance, field="audio") from None
        raise
    extractor = OpenSmileExtractor(feature_set)
    return cache.get_or_compute(
        extractor.name, extractor.settings(), inputs_hash, len(paths),
        lambda: extractor.extract(paths, progress=progress, origins=origins))


def _utterance_names(corpus: Corpus) -> list[str]:
    """``"dialogue X, utterance Y"`` for every utterance in corpus order (truncation warning)."""
    return [f"dialogue {c.id}, utterance {c.utterance_name(i)}"
            for c in corpus.conversations for i in range(len(c))]


def video_matrix(corpus: Corpus, extractor_name: str, cache: FeatureCache, progress: bool,
                 extractor=None) -> np.ndarray:
    """Pooled face features of all utterances' videos in corpus order, ``(N, 406)``; NaN rows
    for utterances without a video path or without a face in any analysed frame.

    Utterances name one video file each, or one shared recording with ``start``/``end``
    (``Conversation.video_segments``). The cache key covers the videos' *contents*, the
    segments and the extractor's settings (:func:`merc.features.video.hash_video_inputs`).

    Raises:
        MercInputError: no utterance has a video, or a video is missing or undecodable.
    """
    from merc.features.video import POOLED_DIM, FaceExpressionExtractor, hash_video_inputs

    paths, segments, origins, rows = [], [], [], []
    n = 0
    for c in corpus.conversations:
        media = c.media.get("video")
        for i in range(len(c)):
            path = media[i] if media is not None and i < len(media) else None
            if path:
                paths.append(os.fspath(path))
                segments.append(c.video_segments[i] if c.video_segments else None)
                origins.append((c.id, c.utterance_name(i)))
                rows.append(n)
            n += 1
    if not paths:
        first = corpus.conversations[0]
        raise MercInputError(corpus.source, f"no utterance has a 'video' path, needed by "
                             f"FeatureSpec.video={extractor_name!r} (use 'external' or None)",
                             dialogue=first.id, field="video")
    for path, (dialogue, utterance) in zip(paths, origins):
        if not os.path.isfile(path):
            raise MercInputError(path, "video file not found", dialogue=dialogue,
                                 utterance=utterance, field="video")
    extractor = extractor or FaceExpressionExtractor.from_source(extractor_name)
    found = cache.get_or_compute(
        extractor.name, extractor.settings(), hash_video_inputs(paths, segments), len(paths),
        lambda: extractor.extract(paths, segments, progress=progress, origins=origins))
    out = np.full((n, POOLED_DIM), np.nan, dtype=np.float32)
    out[rows] = found
    return out
