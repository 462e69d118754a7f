"""The conversation files ``merc predict`` reads.

One conversation per file, two spellings of the same content (UTF-8):

* ``.json`` -- an object ``{"id": "optional name", "utterances": [UTTERANCE, ...]}``, or just
  the list ``[UTTERANCE, ...]``;
* ``.jsonl`` -- one ``UTTERANCE`` object per line (blank lines are skipped).

Many conversations per file: a ``.jsonl`` file whose lines are *conversation* objects
``{"id": ..., "utterances": [UTTERANCE, ...]}`` (what ``merc predict -`` reads from stdin). merc's
own corpus file (:mod:`merc.data.jsonl`: ``dialogue_id``, ``split``, ``utterance_id``, ``label``)
is such a file, so a corpus can be predicted as it is: ``dialogue_id`` is the conversation's id,
``split`` is ignored, ``utterance_id`` is the utterance's id. A file is read as one kind or the
other from its first record (an object with ``utterances`` = a conversation per line).

Utterances are in turn order. Each ``UTTERANCE`` is an object with:

=========  ========  ======================================================================
field      required  meaning
=========  ========  ======================================================================
speaker    yes       who speaks (any non-empty string; the same string = the same person)
text       yes       the transcript (a string of at most 5,000 characters,
                     :data:`MAX_UTTERANCE_CHARS`; may be empty when the model does not use text)
audio      no        path of the utterance's wav file, inside the conversation file's folder
video      no        path of the utterance's video file, inside the conversation file's folder
start/end  no        seconds into ``video`` where the utterance starts and ends (both or
                     neither; several utterances may share one recording of the whole call)
id         no        an utterance id used in messages and the output (default: ``u`` and its
                     0-based position, ``u0``, ``u1``, ...: :func:`default_utterance_id`);
                     ``utterance_id`` is accepted as the same field (merc's corpus format)
label      no        the gold label (a string or null): not seen by the model, returned as
                     ``gold`` beside the prediction, so annotated files can be scored (a label
                     the model does not know is kept as given, with a warning)
=========  ========  ======================================================================

Any other field is an error (it is usually a typo, e.g. ``speeker``; the message suggests the
closest field), and so is a key given twice in one object (JSON's "last wins" would drop the
first value silently). Problems are reported as one line naming the file, the utterance and the
field.

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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from merc.data.conversation import Conversation
from merc.data.validate import (DuplicateKey, check_fields, check_segment, loads_json,
                                resolve_media)
from merc.errors import MercInputError

UTTERANCE_FIELDS = ("speaker", "text", "audio", "video", "start", "end", "id", "utterance_id",
                    "label")
"""Fields an utterance object may have (``utterance_id`` = ``id``)."""

CONVERSATION_FIELDS = ("id", "dialogue_id", "split", "utterances")
"""Fields a conversation object may have (``dialogue_id`` = ``id``; ``split`` is ignored)."""

MAX_UTTERANCE_CHARS = 5000
"""Longest utterance ``text`` accepted, in characters: one limit for ``merc predict`` and
``merc serve`` (both read conversations here). The text encoders read at most 256 tokens (about
1,000 characters) and warn beyond that; 5,000 leaves room for long turns, while one 10 MB
"utterance" cost 15 s and 1.7 GB before anything was refused."""


def default_utterance_id(i: int) -> str:
    """The id of the ``i``-th utterance (0-based) of a conversation that gives none: ``u0``,
    ``u1``, ... -- plain in CSV cells, file names and URL fragments (``#0`` needed quoting)."""
    return f"u{i}"


def read_conversation(path: str | Path, *, allow_outside_media: bool = False,
                      max_chars: int | None = MAX_UTTERANCE_CHARS) -> Conversation:
    """Read a file holding one conversation (format in the module docstring).

    Returns:
        An unlabelled :class:`Conversation` (split ``test``) whose ``media`` holds absolute
        audio/video paths (``None`` where an utterance has none), each checked to be readable;
        gold labels given in the file are in ``labels`` (``None`` where absent).

    Raises:
        MercInputError: unreadable file, invalid JSON (with the line), a duplicate key, a
            missing, unknown or mistyped field, a text longer than ``max_chars``, an empty
            conversation, a file holding several conversations, or a media path that leaves the
            file's folder (unless ``allow_outside_media``) or cannot be read.
    """
    items = list(iter_conversations(path, allow_outside_media=allow_outside_media,
                                    max_chars=max_chars))
    for item in items:
        if isinstance(item, MercInputError):
            raise item
    if len(items) != 1:
        raise MercInputError(path, f"holds {len(items)} conversations; merc predict takes "
                             "files of many conversations (or use iter_conversations)")
    return items[0]


def iter_conversations(path: str | Path, *, allow_outside_media: bool = False,
                       stream=None, max_chars: int | None = MAX_UTTERANCE_CHARS
                       ) -> Iterator[Conversation | MercInputError]:
    """Every conversation of a conversation file, or of ``stream`` (then ``path`` only names it
    in messages, and media paths resolve against the current directory), in order.

    A conversation that fails validation is *yielded* as its :class:`MercInputError` (file,
    line, dialogue, utterance, field), so a caller can report it and go on or stop; a file that
    cannot be read or parsed at all raises.
    """
    if stream is None:
        path = Path(path)
        if not path.is_file():
            raise MercInputError(path, not_a_file_reason(path, "conversation file"))
        try:
            raw = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise MercInputError(path, f"cannot read as UTF-8 text ({type(e).__name__})") from None
        base_dir, stem, suffix = path.parent, path.stem, path.suffix.lower()
    else:
        raw, base_dir, stem, suffix = stream.read(), Path.cwd(), str(path), ".jsonl"
    if suffix == ".jsonl":
        records = []
        # "\n" only: str.splitlines() also breaks at U+2028/U+2029 and other separators,
        # which JSON allows unescaped inside strings (the training JSONL reader accepts them).
        for lineno, line in enumerate(raw.split("\n"), 1):
            if not line.strip():
                continue
            try:
                records.append((lineno, loads_json(line)))
            except json.JSONDecodeError as e:
                raise MercInputError(path, f"line {lineno}: invalid JSON ({e.msg})") from None
            except DuplicateKey as e:
                raise MercInputError(path, f"line {lineno}: {e}", field=e.key) from None
        if not records:
            raise MercInputError(path, "the conversation has no utterances", field="utterances")
        if isinstance(records[0][1], dict) and "utterances" in records[0][1]:
            for lineno, rec in records:          # one conversation object per line
                try:
                    yield _conversation_object(rec, path, base_dir, f"{stem}:{lineno}",
                                               allow_outside_media, lineno, max_chars)
                except MercInputError as e:
                    yield e
            return
        yield from _guarded(lambda: conversation_from_records(
            [r for _, r in records], source=path, conversation_id=stem, base_dir=base_dir,
            allow_outside_media=allow_outside_media, max_chars=max_chars))
        return
    try:
        data = loads_json(raw)
    except json.JSONDecodeError as e:
        raise MercInputError(path, f"invalid JSON at line {e.lineno} ({e.msg}); expected "
                             "an object with 'utterances' or a list of utterances") from None
    except DuplicateKey as e:
        raise MercInputError(path, str(e), field=e.key) from None
    if isinstance(data, dict):
        yield from _guarded(lambda: _conversation_object(data, path, base_dir, stem,
                                                         allow_outside_media,
                                                         max_chars=max_chars))
    else:
        yield from _guarded(lambda: conversation_from_records(
            data, source=path, conversation_id=stem, base_dir=base_dir,
            allow_outside_media=allow_outside_media, max_chars=max_chars))


def not_a_file_reason(path: Path, what: str) -> str:
    """Why ``path`` (not a regular file) cannot be read as a ``what``: missing, a folder, or
    something else -- a device such as ``/dev/zero`` or a pipe, which would be read forever or
    block, so it is never opened."""
    if path.is_dir():
        return "is a folder; merc predict takes folders (this reader one file)"
    if not path.exists():
        return f"{what} not found"
    stdin = " (or '-' for standard input)" if what == "conversation file" else ""
    return f"not a regular file (a device, pipe or socket), so it is not read; give a {what}{stdin}"


def _guarded(build) -> Iterator[Conversation | MercInputError]:
    try:
        yield build()
    except MercInputError as e:
        yield e


def _conversation_object(data: Any, path, base_dir: Path, default_id: str,
                         allow_outside_media: bool, lineno: int | None = None,
                         max_chars: int | None = MAX_UTTERANCE_CHARS) -> Conversation:
    """Validate one conversation object ``{"id"|"dialogue_id", "split"?, "utterances"}``."""
    where = f"line {lineno}: " if lineno is not None else ""
    if not isinstance(data, dict):
        raise MercInputError(path, f"{where}expected a conversation object, got "
                             f"{type(data).__name__}")
    unknown = sorted(set(data) - set(CONVERSATION_FIELDS))
    if unknown:
        raise MercInputError(path, f"{where}unknown top-level field(s) {unknown}; expected "
                             f"{', '.join(CONVERSATION_FIELDS)}", field=unknown[0])
    if "utterances" not in data:
        raise MercInputError(path, f"{where}no 'utterances' list", field="utterances")
    ids = [data[k] for k in ("id", "dialogue_id") if data.get(k) is not None]
    if len(ids) == 2 and str(ids[0]) != str(ids[1]):
        raise MercInputError(path, f"{where}'id' {ids[0]!r} and 'dialogue_id' {ids[1]!r} "
                             "disagree", field="id")
    for value in ids:
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise MercInputError(path, f"{where}must be a string or integer", field="id")
    conv_id = str(ids[0]) if ids else default_id
    records = data["utterances"]
    if not isinstance(records, list):
        raise MercInputError(path, f"{where}'utterances' must be a list, got "
                             f"{type(records).__name__}", dialogue=conv_id, field="utterances")
    return conversation_from_records(records, source=path, conversation_id=conv_id,
                                     base_dir=base_dir, allow_outside_media=allow_outside_media,
                                     max_chars=max_chars)


def conversation_from_records(records: Sequence[Any], *, source: str | Path = "<input>",
                              conversation_id: str = "conversation",
                              base_dir: str | Path | None = None,
                              allow_outside_media: bool = False,
                              max_chars: int | None = MAX_UTTERANCE_CHARS) -> Conversation:
    """Validate utterance dicts (the ``UTTERANCE`` objects) into a :class:`Conversation`.

    Media paths are resolved against ``base_dir`` (default: the folder of ``source`` when it is
    a file path, else the current directory) and must stay inside it unless
    ``allow_outside_media``; each must name a readable file. A ``text`` longer than
    ``max_chars`` characters is refused (``None``: no limit); an utterance without an id gets
    :func:`default_utterance_id`.
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
    speakers, texts, ids, gold = [], [], [], []
    segments: list[tuple[float, float] | None] = []
    media: dict[str, list[str | None]] = {"audio": [], "video": []}
    for i, rec in enumerate(records):
        name = default_utterance_id(i)
        if not isinstance(rec, dict):
            raise bad(f"expected an object, got {type(rec).__name__}", name)
        given = [(k, rec[k]) for k in ("id", "utterance_id") if rec.get(k) is not None]
        for key, value in given:
            if not isinstance(value, (str, int)) or isinstance(value, bool):
                raise bad("must be a string or integer", name, key)
        if len(given) == 2 and str(given[0][1]) != str(given[1][1]):
            raise bad(f"'id' {given[0][1]!r} and 'utterance_id' {given[1][1]!r} disagree",
                      name, "id")
        if given:
            name = str(given[0][1])
        check_fields(rec, UTTERANCE_FIELDS, lambda m, utterance=None, field=None:
                     bad(m, utterance, field), utterance=name)
        for key in ("speaker", "text"):
            if key not in rec:
                raise bad("missing", name, key)
        if not isinstance(rec["speaker"], str) or not rec["speaker"].strip():
            raise bad("must be a non-empty string", name, "speaker")
        if not isinstance(rec["text"], str):
            raise bad(f"must be a string, got {type(rec['text']).__name__}", name, "text")
        if max_chars is not None and len(rec["text"]) > max_chars:
            raise bad(f"{len(rec['text'])} characters; the limit is {max_chars} per utterance "
                      "(split the turn, or check the file is a transcript)", name, "text")
        label = rec.get("label")
        if label is not None and (not isinstance(label, str) or not label.strip()):
            raise bad("must be a label name (a non-empty string) or null", name, "label")
        gold.append(label.strip() if label is not None else None)
        for kind in ("audio", "video"):
            value = rec.get(kind)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise bad("must be a file path string", name, kind)
            media[kind].append(
                resolve_media(value, base, lambda m, utterance=None, field=None:
                              bad(m, utterance, field), kind=kind, utterance=name,
                              allow_outside=allow_outside_media) if value else None)
        segments.append(check_segment(rec, lambda m, utterance=None, field=None:
                                      bad(m, utterance, field), utterance=name))
        speakers.append(rec["speaker"].strip())
        texts.append(rec["text"])
        ids.append(name)
    if len(set(ids)) != len(ids):
        dup = next(x for x in ids if ids.count(x) > 1)
        given = [_given_id(records[i]) for i, x in enumerate(ids) if x == dup]
        if any(given) and not all(given):      # u1 given to one, u1 by default to another
            defaulted = next(i for i, x in enumerate(ids) if x == dup
                             and not _given_id(records[i]))
            raise bad(f"duplicate utterance id {dup!r}: given to one utterance and also the "
                      f"default id of utterance {defaulted}, which has none; give every "
                      "utterance an id, or none", dup, "id")
        raise bad("duplicate utterance id", dup, "id")
    return Conversation(id=str(conversation_id), split="test", speakers=speakers,
                        utterances=texts, labels=gold if any(g is not None for g in gold)
                        else None, utterance_ids=ids,
                        media={k: v for k, v in media.items() if any(v)},
                        video_segments=segments if any(s is not None for s in segments)
                        else None)


def _given_id(rec: Any) -> bool:
    return isinstance(rec, dict) and any(rec.get(k) is not None for k in ("id", "utterance_id"))
