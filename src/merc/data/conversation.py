"""The typed conversation data model every loader produces and every model consumes.

A :class:`Conversation` is one dialogue: utterances in turn order with their speakers, labels,
per-modality feature arrays and optional media paths. A :class:`Corpus` is a list of
conversations, each tagged with a split, plus the label map. Loaders (one file per on-disk
format) build a ``Corpus``; :func:`Corpus.validate` checks it once so that the engine can rely
on consistent shapes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from merc.errors import MercInputError

SPLITS = ("train", "valid", "test")
"""The three split names. Loaders normalise corpus-specific names (MELD ``dev``) to these."""

MEDIA_KINDS = ("audio", "video")
"""Per-utterance media a conversation may point to (wav / video paths)."""


def split_fingerprint(conversations: Sequence[Conversation]) -> str:
    """16 hex digits over a split's ids, speakers, texts and labels, in dialogue-id order (the
    order a loader lists dialogues in does not change what is evaluated)."""
    h = hashlib.sha256()
    for c in sorted(conversations, key=lambda c: str(c.id)):
        record = [str(c.id), c.utterance_ids, c.speakers, c.utterances, c.labels]
        h.update(json.dumps(record, ensure_ascii=False, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


@dataclass
class Conversation:
    """One dialogue, utterances in turn order.

    Attributes:
        id: Dialogue identifier, unique within the corpus.
        split: One of :data:`SPLITS`.
        speakers: Speaker name per utterance, length ``n``.
        utterances: Transcript text per utterance, length ``n`` (empty strings allowed when a
            corpus has no transcripts).
        labels: Label name per utterance (``None`` for unlabelled conversations, e.g. at
            prediction time).
        utterance_ids: Optional per-utterance ids (``None`` entries where unknown).
        features: Modality name -> float32 array of shape ``(n, d_m)``.
        feature_present: Modality name -> bool array ``(n,)``; ``False`` marks an utterance whose
            feature was missing from the source and was filled with zeros. Absent key = all
            present.
        media: Media kind (``audio``/``video``) -> per-utterance file path or ``None``.
        video_segments: Per utterance ``(start, end)`` seconds into its video (one recording
            shared by several utterances) or ``None`` (the whole file); ``None`` = all whole
            files. Given by the ``start``/``end`` utterance fields.
    """

    id: str
    split: str
    speakers: list[str]
    utterances: list[str]
    labels: list[str] | None = None
    utterance_ids: list[str | None] | None = None
    features: dict[str, np.ndarray] = field(default_factory=dict)
    feature_present: dict[str, np.ndarray] = field(default_factory=dict)
    media: dict[str, list[str | None]] = field(default_factory=dict)
    video_segments: list[tuple[float, float] | None] | None = None

    def __len__(self) -> int:
        return len(self.utterances)

    def utterance_name(self, i: int) -> str:
        """Human-readable name of utterance ``i`` for error messages (id if known, else index)."""
        if self.utterance_ids is not None and self.utterance_ids[i]:
            return str(self.utterance_ids[i])
        return f"#{i}"

    def speaker_indices(self) -> np.ndarray:
        """Speakers as small integers in order of first appearance within this dialogue, ``(n,)``."""
        order: dict[str, int] = {}
        return np.asarray([order.setdefault(s, len(order)) for s in self.speakers], dtype=np.int64)


@dataclass
class Corpus:
    """A set of conversations with their label map.

    Attributes:
        name: Short corpus name (``iemocap``, ``meld``, ...), used for cache keys and reports.
        conversations: All conversations of all splits.
        label_names: The label map: index ``i`` is class ``label_names[i]``.
        source: Path the corpus was read from (used in error messages).
        valid_split: How the validation split was obtained: ``"official"`` or a description of
            the seeded split of train dialogues.
    """

    name: str
    conversations: list[Conversation]
    label_names: list[str]
    source: str = "<memory>"
    valid_split: str = "official"

    def split(self, name: str) -> list[Conversation]:
        """Conversations of split ``name`` (one of :data:`SPLITS`), in corpus order."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return [c for c in self.conversations if c.split == name]

    @property
    def feature_modalities(self) -> list[str]:
        """Modalities with a feature array in every conversation, sorted."""
        if not self.conversations:
            return []
        common = set(self.conversations[0].features)
        for c in self.conversations[1:]:
            common &= set(c.features)
        return sorted(common)

    def feature_dims(self) -> dict[str, int]:
        """Modality -> feature dimension (after :meth:`validate`, consistent across the corpus)."""
        first = self.conversations[0]
        return {m: int(first.features[m].shape[1]) for m in self.feature_modalities}

    def label_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.label_names)}

    def content_hash(self, *, include_features: bool = True) -> str:
        """SHA-256 over everything that defines the corpus content (not its location).

        Used as the feature-cache key: a changed text, label, split, media path or feature value
        changes the hash.
        """
        h = hashlib.sha256()
        h.update(json.dumps([self.name, self.label_names]).encode())
        for c in self.conversations:
            record = [c.id, c.split, c.speakers, c.utterances, c.labels, c.utterance_ids,
                      sorted(c.media.items())]
            if c.video_segments is not None:     # only then: older corpora keep their hash
                record.append(c.video_segments)
            h.update(json.dumps(record, ensure_ascii=False).encode())
            if include_features:
                for m in sorted(c.features):
                    h.update(m.encode())
                    h.update(np.ascontiguousarray(c.features[m]).tobytes())
        return h.hexdigest()

    def counts(self) -> dict[str, dict[str, int]]:
        """Split -> {"dialogues", "utterances"} for summaries."""
        out = {}
        for s in SPLITS:
            convs = self.split(s)
            out[s] = {"dialogues": len(convs), "utterances": sum(len(c) for c in convs)}
        return out

    def validate(self) -> "Corpus":
        """Check arities, splits, labels, feature shapes and values; raise on the first problem.

        Raises:
            MercInputError: one line naming the source file, dialogue, utterance and field.
        """
        labels = set(self.label_names)
        dims: dict[str, tuple[int, str]] = {}
        seen_ids: set[str] = set()
        for c in self.conversations:
            err = _error_factory(self.source, c.id)
            if c.id in seen_ids:
                raise err("duplicate dialogue id", field="dialogue_id")
            seen_ids.add(c.id)
            if c.split not in SPLITS:
                raise err(f"unknown split {c.split!r}; expected one of {SPLITS}", field="split")
            n = len(c.utterances)
            if n == 0:
                raise err("empty dialogue (no utterances)", field="utterances")
            if len(c.speakers) != n:
                raise err(f"{len(c.speakers)} speakers for {n} utterances", field="speakers")
            if c.labels is not None:
                if len(c.labels) != n:
                    raise err(f"{len(c.labels)} labels for {n} utterances", field="labels")
                for i, lab in enumerate(c.labels):
                    if lab not in labels:
                        raise err(f"unknown label {lab!r}; known: {sorted(labels)}",
                                  utterance=c.utterance_name(i), field="label")
            if c.utterance_ids is not None and len(c.utterance_ids) != n:
                raise err(f"{len(c.utterance_ids)} utterance ids for {n} utterances",
                          field="utterance_ids")
            for kind, paths in c.media.items():
                if len(paths) != n:
                    raise err(f"{len(paths)} {kind} paths for {n} utterances", field=kind)
            for m, arr in c.features.items():
                if not isinstance(arr, np.ndarray) or arr.ndim != 2:
                    shape = getattr(arr, "shape", type(arr).__name__)
                    raise err(f"expected a 2-d (utterances, dim) array, got {shape}", field=m)
                if arr.shape[0] != n:
                    raise err(f"{arr.shape[0]} feature rows for {n} utterances "
                              f"(utterance counts differ across modalities)", field=m)
                if m in dims and dims[m][0] != arr.shape[1]:
                    raise err(f"feature dim {arr.shape[1]} differs from {dims[m][0]} "
                              f"in dialogue {dims[m][1]}", field=m)
                dims.setdefault(m, (arr.shape[1], c.id))
                bad = ~np.isfinite(arr)
                if bad.any():
                    i = int(np.argwhere(bad)[0][0])
                    raise err("non-finite value (NaN/inf) in features",
                              utterance=c.utterance_name(i), field=m)
        if not self.split("train"):
            raise MercInputError(self.source, "corpus has no training dialogues", field="split")
        return self


def _error_factory(source: str, dialogue: str):
    def make(message: str, *, utterance: object | None = None, field: str | None = None):
        return MercInputError(source, message, dialogue=dialogue, utterance=utterance, field=field)
    return make


def ensure_validation_split(corpus: Corpus, fraction: float = 0.1, seed: int = 0) -> Corpus:
    """Return ``corpus`` with a validation split, never taken from test.

    If the corpus has official validation dialogues they are kept unchanged. Otherwise a seeded
    ``fraction`` of the *train dialogues* (whole dialogues, so no context leaks) becomes
    ``valid``; the chosen ids are recorded in :attr:`Corpus.valid_split`.
    """
    if corpus.split("valid"):
        return corpus
    train = corpus.split("train")
    if len(train) < 2:
        raise MercInputError(corpus.source, "need at least 2 training dialogues to carve a "
                             "validation split", field="split")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    # At least one dialogue goes to valid and at least one stays in train.
    k = min(len(train) - 1, max(1, round(fraction * len(train))))
    chosen = {train[i].id for i in rng.choice(len(train), size=k, replace=False)}
    convs = [replace(c, split="valid") if c.id in chosen else c for c in corpus.conversations]
    note = f"seeded: {k} of {len(train)} train dialogues (fraction={fraction}, seed={seed})"
    return replace(corpus, conversations=convs, valid_split=note)


def resolve_path(path: str | Path, what: str) -> Path:
    """Return ``path`` as a Path, raising a one-line error if it does not exist."""
    p = Path(path).expanduser()
    if not p.exists():
        raise MercInputError(p, f"{what} not found")
    return p
