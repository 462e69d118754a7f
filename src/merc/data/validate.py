"""Checks shared by the training JSONL (:mod:`merc.data.jsonl`) and the ``merc predict``
conversation file (:mod:`merc.data.conversation_file`).

Both formats hold the same kind of utterance records, so the rules that decide what a record may
contain live here once: unknown fields (with a "did you mean" for typos such as ``txt``), label
strings, and media paths (resolved against the file's folder and refused when they leave it).
Corpus-level rules that only training needs (ids unique across dialogues, labels seen in train,
more than one class) are here too so that every JSONL-based loader gets them.

Every problem is a :class:`~merc.errors.MercInputError`: one line naming the file, dialogue,
utterance and field.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from merc.errors import MercInputError

log = logging.getLogger(__name__)

ErrorFactory = Callable[..., MercInputError]
"""``make(message, utterance=..., field=...) -> MercInputError`` bound to a file and dialogue."""


class DuplicateKey(ValueError):
    """A JSON object naming one key twice (raised by :func:`loads_json`)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {key!r} in one JSON object (the earlier value would "
                         "be silently dropped)")
        self.key = key


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise DuplicateKey(key)
        obj[key] = value
    return obj


def loads_json(text: str) -> Any:
    """``json.loads`` that refuses an object with a key given twice.

    Python's json keeps the last value and drops the earlier one without a word
    (``{"text": "yes", "text": "no"}`` is "no"); merc's YAML loader already refuses duplicates,
    and so do both JSON formats people write by hand.

    Raises:
        json.JSONDecodeError: not JSON.
        DuplicateKey: a duplicate key (its ``key`` names it).
    """
    return json.loads(text, object_pairs_hook=_refuse_duplicates)


def check_fields(record: dict, allowed: Iterable[str], make: ErrorFactory, *,
                 utterance: object | None = None, what: str = "field") -> None:
    """Refuse any key of ``record`` not in ``allowed``.

    An unknown field is almost always a typo whose data would otherwise be silently lost (a
    ``"txt"`` trains audio-only; a ``"lable"`` removes a dialogue from the metrics), so it is an
    error naming the field, with the closest allowed name when there is one.
    """
    allowed = list(allowed)
    for key, value in record.items():
        if isinstance(value, str):
            _check_encodable(value, make, utterance=utterance, field=str(key))
        if key in allowed:
            continue
        close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise make(f"unknown {what}{hint} (allowed: {', '.join(allowed)})", utterance=utterance,
                   field=str(key))


def _check_encodable(value: str, make: ErrorFactory, *, utterance: object | None,
                     field: str) -> None:
    """Refuse a lone UTF-16 surrogate (JSON ``"\\ud800"``): valid JSON, but not text; the
    tokenizer, hashing and every UTF-8 writer would fail on it later with a traceback."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise make(f"lone surrogate {value[e.start]!r} at character {e.start} is not valid "
                   "Unicode text (a broken \\ud800-\\udfff escape?)", utterance=utterance,
                   field=field) from None


def check_label_text(label: str, make: ErrorFactory, *, utterance: object | None = None) -> None:
    """Refuse ``""`` and labels with surrounding whitespace (``"joy "``).

    Either would silently become a class of its own beside ``"joy"``.
    """
    if not label.strip():
        raise make("empty label; omit the field (or use null) for an unlabelled utterance",
                   utterance=utterance, field="label")
    if label != label.strip():
        raise make(f"label {label!r} has surrounding whitespace; write {label.strip()!r}",
                   utterance=utterance, field="label")


def resolve_media(value: str, base: Path, make: ErrorFactory, *, kind: str,
                  utterance: object | None = None, allow_outside: bool = False,
                  check_readable: bool = True) -> str:
    """Resolve a media path as written in a conversation file; return the absolute path.

    ``value`` is taken relative to ``base`` (the conversation file's folder). Unless
    ``allow_outside``, a path that leaves ``base`` -- absolute, with ``..``, or through a symlink
    pointing outside -- is refused *before* anything about the target is looked up, so the
    answer says nothing about files outside the folder. With ``check_readable``, a missing file
    and an unreadable one give the same message. Messages quote ``value`` as written, never the
    resolved path (which would echo the server's directory layout).
    """
    base_real = Path(os.path.realpath(base))
    # realpath follows every symlink on the way, so a link inside the folder that points out of
    # it is caught like a literal "../".
    target = Path(os.path.realpath(base_real / value))
    if not allow_outside and not target.is_relative_to(base_real):
        raise make(f"media path {value!r} leaves the conversation file's folder (absolute, '..' "
                   "or a symlink out of it); move the file beside the conversation or pass "
                   "--allow-outside-media (Predictor(allow_outside_media=True))",
                   utterance=utterance, field=kind)
    if check_readable:
        try:
            with open(target, "rb") as f:
                f.read(1)
        except OSError:
            raise make(f"cannot read {kind} file {value!r} (missing, not a file, or not "
                       "readable)", utterance=utterance, field=kind) from None
    return str(target)


def check_corpus(corpus) -> None:
    """Corpus-level rules for a loaded JSONL corpus (see :func:`merc.data.jsonl.load_jsonl`).

    * an ``utterance_id`` used in two dialogues (they would share one feature row);
    * in a labelled corpus, a dialogue without labels (it would vanish from the metrics);
    * a label used in test that no training utterance has (the model cannot predict it; in
      valid it is a warning);
    * fewer than two classes among the training labels (nothing to learn).
    """
    src = corpus.source
    seen: dict[str, str] = {}
    for c in corpus.conversations:
        for i, uid in enumerate(c.utterance_ids or []):
            if uid is None:
                continue
            if uid in seen:
                raise MercInputError(src, f"utterance_id {uid!r} is also used in dialogue "
                                     f"{seen[uid]}; ids must be unique across the corpus (they "
                                     "join the feature files)",
                                     dialogue=c.id, utterance=uid, field="utterance_id")
            seen[uid] = c.id
    labelled = [c for c in corpus.conversations if c.labels is not None]
    if not labelled:
        return
    if len(labelled) != len(corpus.conversations):
        c = next(c for c in corpus.conversations if c.labels is None)
        raise MercInputError(src, f"no utterance has a label, but {len(labelled)} other "
                             "dialogues are labelled; label every dialogue (an unlabelled one "
                             "would be left out of training and metrics)", dialogue=c.id,
                             field="label")
    train = {lab for c in labelled if c.split == "train" for lab in c.labels}
    for c in labelled:
        if c.split != "test":
            continue
        for i, lab in enumerate(c.labels):
            if lab not in train:
                raise MercInputError(src, f"label {lab!r} appears in test but in no training "
                                     "utterance (the model could never predict it)",
                                     dialogue=c.id, utterance=c.utterance_name(i), field="label")
    # A class only in valid cannot be predicted either, but it only affects model selection;
    # say so rather than refuse (small hand-made corpora often have it).
    only_valid = sorted({lab for c in labelled if c.split == "valid" for lab in c.labels} - train)
    if only_valid:
        log.warning("%s: label(s) %s appear in valid but in no training utterance", src,
                    only_valid)
    if train and len(train) < 2:
        first = next(c for c in labelled if c.split == "train")
        raise MercInputError(src, f"the training dialogues have a single class "
                             f"({next(iter(train))!r}); a classifier needs at least two",
                             dialogue=first.id, field="label")


def check_segment(record: dict, make: ErrorFactory, *, utterance: object | None = None
                  ) -> tuple[float, float] | None:
    """The ``(start, end)`` seconds of an utterance record's ``start``/``end`` fields, or
    ``None`` when it has neither.

    Both or neither must be given, as finite numbers with ``0 <= start < end``, and only on a
    record with a ``video`` path (they cut the utterance out of that recording).
    """
    start, end = record.get("start"), record.get("end")
    if start is None and end is None:
        return None
    for key, value in (("start", start), ("end", end)):
        if value is None:
            other = "end" if key == "start" else "start"
            raise make(f"missing; '{other}' is given, and a segment needs both (seconds into "
                       "the video)", utterance=utterance, field=key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise make(f"must be a finite number of seconds, got {value!r}",
                       utterance=utterance, field=key)
    if start < 0:
        raise make(f"must be >= 0, got {start}", utterance=utterance, field="start")
    if end <= start:
        raise make(f"must be greater than start ({start}), got {end}", utterance=utterance,
                   field="end")
    if not record.get("video"):
        raise make("start/end cut the utterance out of its 'video' recording, but the "
                   "utterance has no 'video' path", utterance=utterance, field="start")
    return float(start), float(end)
