"""The conversation file ``merc predict`` reads: one new, unlabelled conversation.

Two spellings of the same content (UTF-8):

* ``.json`` -- an object ``{"id": "optional name", "utterances": [UTTERANCE, ...]}``, or just
  the list ``[UTTERANCE, ...]``;
* ``.jsonl`` -- one ``UTTERANCE`` object per line (blank lines are skipped).

Utterances are in turn order. Each ``UTTERANCE`` is an object with:

=========  ========  ======================================================================
field      required  meaning
=========  ========  ======================================================================
speaker    yes       who speaks (any non-empty string; the same string = the same person)
text       yes       the transcript (a string; may be empty when the model does not use text)
audio      no        path of the utterance's wav file, inside the conversation file's folder
video      no        path of the utterance's video file, inside the conversation file's folder
id         no        an utterance id used in messages and the output (default: its position)
label      no        a known emotion, ignored by prediction (kept so annotated files can be used)
=========  ========  ======================================================================

Any other field is an error (it is usually a typo, e.g. ``speeker``; the message suggests the
closest field). Problems are reported as one line naming the file, the utterance and the field.

Media paths are resolved against the conversation file's folder and must stay inside it: an
absolute path, a ``..`` path or a symlink pointing out of the folder is refused (before anything
is looked up, so the message reveals nothing about files elsewhere) unless the caller opts in
with ``merc predict --allow-outside-media`` / ``Predictor(allow_outside_media=True)``. Every
media file must be readable, even for a text-only model (a bad file is caught, not skipped); a
missing and an unreadable file give the same message, and messages quote the path as written in
the file, never the resolved one.

Example (``talk.jsonl``)::

    {"speaker": "Ana", "text": "You finished the whole marathon?", "audio": "wav/0.wav"}
    {"speaker": "Ben", "text": "Every single kilometre. I can't feel my legs.", "audio": "wav/1.wav"}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from merc.data.conversation import Conversation
from merc.data.validate import check_fields, resolve_media
from merc.errors import MercInputError

UTTERANCE_FIELDS = ("speaker", "text", "audio", "video", "id", "label")
"""Fields an utterance object may have."""


def read_conversation(path: str | Path, *, allow_outside_media: bool = False) -> Conversation:
    """Read a ``.json`` or ``.jsonl`` conversation file (format in the module docstring).

    Returns:
        An unlabelled :class:`Conversation` (split ``test``) whose ``media`` holds absolute
        audio/video paths (``None`` where an utterance has none), each checked to be readable.

    Raises:
        MercInputError: unreadable file, invalid JSON (with the line), a missing, unknown or
            mistyped field, an empty conversation, or a media path that leaves the file's
            folder (unless ``allow_outside_media``) or cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        raise MercInputError(path, "conversation file not found")
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise MercInputError(path, f"cannot read as UTF-8 text ({type(e).__name__})") from None
    conv_id = path.stem
    if path.suffix.lower() == ".jsonl":
        records = []
        # "\n" only: str.splitlines() also breaks at U+2028/U+2029 and other separators,
        # which JSON allows unescaped inside strings (the training JSONL reader accepts them).
        for lineno, line in enumerate(raw.split("\n"), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise MercInputError(path, f"line {lineno}: invalid JSON ({e.msg})") from None
    else:
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as e:
            raise MercInputError(path, f"invalid JSON at line {e.lineno} ({e.msg}); expected "
                                 "an object with 'utterances' or a list of utterances") from None
        if isinstance(data, dict):
            unknown = sorted(set(data) - {"id", "utterances"})
            if unknown:
                raise MercInputError(path, f"unknown top-level field(s) {unknown}; expected "
                                     "'id' and 'utterances'", field=unknown[0])
            if "utterances" not in data:
                raise MercInputError(path, "no 'utterances' list", field="utterances")
            conv_id = str(data.get("id") or conv_id)
            records = data["utterances"]
        else:
            records = data
        if not isinstance(records, list):
            raise MercInputError(path, f"'utterances' must be a list, got "
                                 f"{type(records).__name__}", field="utterances")
    return conversation_from_records(records, source=path, conversation_id=conv_id,
                                     allow_outside_media=allow_outside_media)


def conversation_from_records(records: Sequence[Any], *, source: str | Path = "<input>",
                              conversation_id: str = "conversation",
                              base_dir: str | Path | None = None,
                              allow_outside_media: bool = False) -> Conversation:
    """Validate utterance dicts (the ``UTTERANCE`` objects) into a :class:`Conversation`.

    Media paths are resolved against ``base_dir`` (default: the folder of ``source`` when it is
    a file path, else the current directory) and must stay inside it unless
    ``allow_outside_media``; each must name a readable file.
    """
    def bad(message: str, utterance: str | None = None, field: str | None = None):
        return MercInputError(source, message, dialogue=conversation_id, utterance=utterance,
                              field=field)

    if not records:
        raise bad("the conversation has no utterances", field="utterances")
    if base_dir is None:
        src = Path(str(source))
        base_dir = src.parent if src.suffix else Path.cwd()
    base = Path(base_dir)
    speakers, texts, ids = [], [], []
    media: dict[str, list[str | None]] = {"audio": [], "video": []}
    for i, rec in enumerate(records):
        name = f"#{i}"
        if not isinstance(rec, dict):
            raise bad(f"expected an object, got {type(rec).__name__}", name)
        if rec.get("id") is not None:
            if not isinstance(rec["id"], (str, int)):
                raise bad("must be a string or integer", name, "id")
            name = str(rec["id"])
        check_fields(rec, UTTERANCE_FIELDS, lambda m, utterance=None, field=None:
                     bad(m, utterance, field), utterance=name)
        for key in ("speaker", "text"):
            if key not in rec:
                raise bad("missing", name, key)
        if not isinstance(rec["speaker"], str) or not rec["speaker"].strip():
            raise bad("must be a non-empty string", name, "speaker")
        if not isinstance(rec["text"], str):
            raise bad(f"must be a string, got {type(rec['text']).__name__}", name, "text")
        for kind in ("audio", "video"):
            value = rec.get(kind)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise bad("must be a file path string", name, kind)
            media[kind].append(
                resolve_media(value, base, lambda m, utterance=None, field=None:
                              bad(m, utterance, field), kind=kind, utterance=name,
                              allow_outside=allow_outside_media) if value else None)
        speakers.append(rec["speaker"].strip())
        texts.append(rec["text"])
        ids.append(name)
    if len(set(ids)) != len(ids):
        dup = next(x for x in ids if ids.count(x) > 1)
        raise bad("duplicate utterance id", dup, "id")
    return Conversation(id=str(conversation_id), split="test", speakers=speakers,
                        utterances=texts, labels=None, utterance_ids=ids,
                        media={k: v for k, v in media.items() if any(v)})
