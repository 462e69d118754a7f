"""The generic conversation format: JSONL dialogues plus optional per-utterance feature files.

Bring your own corpus by writing one JSON object per line::

    {"dialogue_id": "d1", "split": "train",
     "utterances": [
        {"utterance_id": "d1_0", "speaker": "A", "text": "Hi!", "label": "joy",
         "audio": "wav/d1_0.wav", "video": "mp4/d1_0.mp4"},
        ...]}

* ``split`` is ``train``, ``valid`` (``dev`` is accepted) or ``test``. Without any ``valid``
  dialogue, the engine carves a seeded validation split from train (never from test).
* ``utterance_id`` is needed only to join external feature files; it may be ``null``.
* ``speaker`` is required unless the loader is given ``default_speaker`` (monologue corpora).
* ``label`` is a label name, or an integer index into ``label_names`` when those are given.
  Omit it (or use ``null``) on every utterance of an unlabelled corpus.
* ``audio`` / ``video`` are optional media paths, relative to the JSONL file's folder.
* ``start`` / ``end`` (seconds, both or neither) cut the utterance out of its ``video``
  when several utterances share one recording.

Per-utterance feature files, one per modality, are joined by ``utterance_id``:

* ``.npz`` - one array per utterance id (``np.load(f)[utterance_id]`` is a 1-d vector);
* ``.csv`` - a header row, then ``utterance_id,f1,f2,...`` per row.

A folder passed as ``--data-dir`` with ``--corpus jsonl`` holds ``conversations.jsonl`` and,
optionally, ``text|audio|video`` ``.npz``/``.csv`` files that are picked up automatically.
"""

from __future__ import annotations

import csv
import json
import logging
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from merc.data.conversation import MEDIA_KINDS, Conversation, Corpus, resolve_path
from merc.data.validate import (DuplicateKey, check_corpus, check_fields, check_label_text,
                                check_segment, loads_json)
from merc.errors import MercInputError

log = logging.getLogger(__name__)

_SPLIT_ALIASES = {"train": "train", "valid": "valid", "dev": "valid", "val": "valid",
                  "validation": "valid", "test": "test"}

FEATURE_MODALITIES = ("text", "audio", "video")

DIALOGUE_FIELDS = ("dialogue_id", "split", "utterances")
"""Fields a dialogue record may have; anything else is an error (usually a typo)."""

UTTERANCE_FIELDS = ("utterance_id", "speaker", "text", "label", "audio", "video", "start",
                    "end")
"""Fields an utterance object may have; anything else is an error (``txt``, ``lable``)."""


def read_feature_table(path: str | Path) -> dict[str, np.ndarray]:
    """Read a per-utterance feature file (``.npz`` or ``.csv``) into ``{utterance_id: (d,) float32}``.

    Raises:
        MercInputError: unreadable file, non-numeric value, ragged rows or duplicate ids, naming
            the file, utterance and column.
    """
    path = resolve_path(path, "feature file")
    table: dict[str, np.ndarray] = {}
    if path.suffix == ".npz":
        try:
            # allow_pickle=False: an .npz with object arrays could otherwise run code.
            with np.load(path, allow_pickle=False) as z:
                for key in z.files:
                    arr = np.asarray(z[key])
                    if arr.ndim != 1:
                        raise MercInputError(path, f"expected a 1-d vector, got shape {arr.shape}",
                                             utterance=key, field="features")
                    if not np.issubdtype(arr.dtype, np.number):
                        raise MercInputError(path, f"non-numeric dtype {arr.dtype}",
                                             utterance=key, field="features")
                    table[key] = arr.astype(np.float32)
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            if isinstance(e, MercInputError):
                raise
            raise MercInputError(path, f"cannot read .npz: {e}") from e
    elif path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(_utf8_lines(path, f))
            header = next(reader, None)
            if not header or len(header) < 2:
                raise MercInputError(path, "expected a header 'utterance_id,f1,...' with at least "
                                     "one feature column", field="header")
            for lineno, row in enumerate(reader, start=2):
                if not row:
                    continue
                uid = row[0]
                if len(row) != len(header):
                    raise MercInputError(path, f"line {lineno}: {len(row)} columns, header has "
                                         f"{len(header)}", utterance=uid, field="features")
                try:
                    vec = np.asarray([float(v) for v in row[1:]], dtype=np.float32)
                except ValueError:
                    col = next(h for h, v in zip(header[1:], row[1:]) if not _is_float(v))
                    raise MercInputError(path, f"line {lineno}: non-numeric value",
                                         utterance=uid, field=col) from None
                if uid in table:
                    raise MercInputError(path, f"line {lineno}: duplicate utterance id",
                                         utterance=uid, field=header[0])
                table[uid] = vec
    else:
        raise MercInputError(path, "unsupported feature file type (use .npz or .csv)")
    if not table:
        raise MercInputError(path, "feature file has no rows")
    dims = {v.shape[0] for v in table.values()}
    if len(dims) > 1:
        first = next(k for k, v in table.items() if v.shape[0] != next(iter(table.values())).shape[0])
        raise MercInputError(path, f"vectors of different lengths {sorted(dims)}",
                             utterance=first, field="features")
    return table


def _utf8_lines(path: Path, lines):
    """Iterate a text file's lines, turning a UTF-8 decode error into a one-line input error."""
    it = iter(lines)
    while True:
        try:
            line = next(it)
        except StopIteration:
            return
        except UnicodeDecodeError as e:
            # Text files decode in chunks, so e.start is not a file offset: no position given.
            raise MercInputError(path, f"not valid UTF-8 text ({e.reason}); re-save the file "
                                 "as UTF-8") from None
        yield line


def _is_float(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def load_jsonl(
    path: str | Path,
    *,
    feature_files: Mapping[str, str | Path] | None = None,
    label_names: Sequence[str] | None = None,
    default_speaker: str | None = None,
    missing_features: str = "error",
    name: str | None = None,
) -> Corpus:
    """Load a generic JSONL corpus (format in the module docstring).

    Args:
        path: The ``.jsonl`` file, or a folder holding ``conversations.jsonl`` (then any
            ``text|audio|video`` ``.npz``/``.csv`` beside it are used as feature files unless
            ``feature_files`` is given).
        feature_files: Modality -> feature file joined by ``utterance_id``.
        label_names: The label map. Required when labels are integers; otherwise inferred as the
            sorted set of label names in the file.
        default_speaker: Speaker for utterances without ``speaker`` (else that is an error).
        missing_features: ``"error"``: an utterance without a row in a feature file is an error;
            ``"zero"``: fill zeros, mark it in ``Conversation.feature_present`` and log the count.
        name: Corpus name (default: the file's stem or folder name).
    """
    path = resolve_path(path, "conversation file")
    if path.is_dir():
        folder = path
        path = resolve_path(folder / "conversations.jsonl", "conversations.jsonl")
        if feature_files is None:
            feature_files = {}
            for m in FEATURE_MODALITIES:
                found = [folder / f"{m}{ext}" for ext in (".npz", ".csv")
                         if (folder / f"{m}{ext}").exists()]
                if len(found) > 1:
                    raise MercInputError(folder, f"both {found[0].name} and {found[1].name} "
                                         "exist; keep one feature file per modality", field=m)
                if found:
                    feature_files[m] = found[0]
        name = name or folder.name
    if missing_features not in ("error", "zero"):
        raise ValueError(f"missing_features must be 'error' or 'zero', got {missing_features!r}")
    records = _read_records(path)

    # Malformed records are skipped here and reported by _conversation (file, dialogue, field).
    all_labels = [u.get("label") for _, r in records if isinstance(r.get("utterances"), list)
                  for u in r["utterances"] if isinstance(u, dict)]
    int_labels = any(isinstance(x, int) and not isinstance(x, bool) for x in all_labels)
    if int_labels and label_names is None:
        raise MercInputError(path, "integer labels need label_names (the label map)", field="label")
    if label_names is None:
        label_names = sorted({x for x in all_labels if isinstance(x, str)})
    label_names = list(label_names)

    conversations = [_conversation(path, lineno, rec, label_names, default_speaker)
                     for lineno, rec in records]
    corpus = Corpus(name=name or path.stem, conversations=conversations,
                    label_names=label_names, source=str(path))
    corpus.validate()
    check_corpus(corpus)
    for modality, fpath in (feature_files or {}).items():
        attach_features(corpus, modality, read_feature_table(fpath), str(fpath), missing_features)
    return corpus.validate()


def _read_records(path: Path) -> list[tuple[int, dict]]:
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(_utf8_lines(path, f), start=1):
            if not line.strip():
                continue
            try:
                rec = loads_json(line)
            except json.JSONDecodeError as e:
                raise MercInputError(path, f"line {lineno}: invalid JSON ({e.msg})") from None
            except DuplicateKey as e:
                raise MercInputError(path, f"line {lineno}: {e}", field=e.key) from None
            if not isinstance(rec, dict):
                raise MercInputError(path, f"line {lineno}: expected a JSON object per line")
            records.append((lineno, rec))
    if not records:
        raise MercInputError(path, "no dialogues in file")
    return records


def _conversation(path: Path, lineno: int, rec: dict, label_names: list[str],
                  default_speaker: str | None) -> Conversation:
    did = rec.get("dialogue_id")
    if not isinstance(did, (str, int)) or did == "":
        raise MercInputError(path, f"line {lineno}: missing or invalid dialogue_id",
                             field="dialogue_id")
    did = str(did)

    def make(message: str, *, utterance: object | None = None, field: str | None = None):
        return MercInputError(path, message, dialogue=did, utterance=utterance, field=field)

    check_fields(rec, DIALOGUE_FIELDS, make, what="dialogue field")
    split = _SPLIT_ALIASES.get(str(rec.get("split", "")).lower())
    if split is None:
        raise MercInputError(path, f"unknown split {rec.get('split')!r}; expected train, valid "
                             "(or dev) or test", dialogue=did, field="split")
    utts = rec.get("utterances")
    if not isinstance(utts, list):
        raise MercInputError(path, "expected a list", dialogue=did, field="utterances")
    if not utts:
        raise MercInputError(path, "empty dialogue (no utterances)", dialogue=did,
                             field="utterances")
    speakers, texts, labels, uids = [], [], [], []
    segments: list[tuple[float, float] | None] = []
    media: dict[str, list[str | None]] = {k: [] for k in MEDIA_KINDS}
    labelled = [u.get("label") is not None for u in utts if isinstance(u, dict)]
    for i, u in enumerate(utts):
        if not isinstance(u, dict):
            raise MercInputError(path, "expected a JSON object", dialogue=did, utterance=f"#{i}",
                                 field="utterances")
        uid = u.get("utterance_id")
        uname = str(uid) if uid else f"#{i}"
        check_fields(u, UTTERANCE_FIELDS, make, utterance=uname)
        if uid is not None and (isinstance(uid, bool) or not isinstance(uid, (str, int))):
            raise make(f"expected a string, integer or null, got {type(uid).__name__}",
                       utterance=f"#{i}", field="utterance_id")
        spk = u.get("speaker", default_speaker)
        if not isinstance(spk, str) or not spk:
            raise MercInputError(path, "missing speaker", dialogue=did, utterance=uname,
                                 field="speaker")
        text = u.get("text", "")
        if not isinstance(text, str):
            raise MercInputError(path, f"expected a string, got {type(text).__name__}",
                                 dialogue=did, utterance=uname, field="text")
        label = u.get("label")
        if any(labelled) and label is None:
            raise MercInputError(path, "missing label (other utterances of the dialogue have one)",
                                 dialogue=did, utterance=uname, field="label")
        if label is not None:
            label = _label_name(path, did, uname, label, label_names)
        for kind in MEDIA_KINDS:
            p = u.get(kind)
            if p is not None and not isinstance(p, str):
                raise MercInputError(path, "expected a path string", dialogue=did,
                                     utterance=uname, field=kind)
            media[kind].append(str((path.parent / p)) if p else None)
        segments.append(check_segment(u, make, utterance=uname))
        speakers.append(spk)
        texts.append(text)
        labels.append(label)
        uids.append(str(uid) if uid is not None else None)
    return Conversation(
        id=did, split=split, speakers=speakers, utterances=texts,
        labels=labels if any(labelled) else None, utterance_ids=uids,
        media={k: v for k, v in media.items() if any(p is not None for p in v)},
        video_segments=segments if any(s is not None for s in segments) else None,
    )


def _label_name(path: Path, did: str, uname: str, label: object, label_names: list[str]) -> str:
    if isinstance(label, bool) or not isinstance(label, (int, str)):
        raise MercInputError(path, f"expected a label name or index, got {label!r}",
                             dialogue=did, utterance=uname, field="label")
    if isinstance(label, str):
        check_label_text(label, lambda m, **kw: MercInputError(path, m, dialogue=did, **kw),
                         utterance=uname)
    if isinstance(label, int):
        if not 0 <= label < len(label_names):
            raise MercInputError(path, f"label index {label} outside 0..{len(label_names) - 1}",
                                 dialogue=did, utterance=uname, field="label")
        return label_names[label]
    if label not in label_names:
        raise MercInputError(path, f"unknown label {label!r}; known: {label_names}",
                             dialogue=did, utterance=uname, field="label")
    return label


def attach_features(corpus: Corpus, modality: str, table: Mapping[str, np.ndarray],
                    source: str, missing: str = "error") -> None:
    """Join per-utterance vectors ``table`` into ``corpus`` (in place) as ``features[modality]``.

    Rows whose id is no utterance of the corpus are an error. Utterances without an id or
    without a row are an error, or with ``missing="zero"`` are
    zero-filled and flagged ``feature_present[modality][i] = False`` (the count is logged, so
    nothing is dropped silently).
    """
    dim = next(iter(table.values())).shape[0]
    n_missing = 0
    for c in corpus.conversations:
        arr = np.zeros((len(c), dim), dtype=np.float32)
        present = np.ones(len(c), dtype=bool)
        ids = c.utterance_ids or [None] * len(c)
        for i, uid in enumerate(ids):
            vec = table.get(uid) if uid is not None else None
            if vec is None:
                if missing == "error":
                    why = "no utterance_id to join on" if uid is None else "no row for this id"
                    raise MercInputError(source, f"{why} in the {modality} feature file",
                                         dialogue=c.id, utterance=c.utterance_name(i),
                                         field=modality)
                present[i] = False
                n_missing += 1
            else:
                if not np.isfinite(vec).all():
                    # Name the feature file here: Corpus.validate would name the .jsonl instead.
                    raise MercInputError(source, "non-finite value (NaN/inf) in features",
                                         dialogue=c.id, utterance=c.utterance_name(i),
                                         field=modality)
                arr[i] = vec
        c.features[modality] = arr
        if not present.all():
            c.feature_present[modality] = present
    known = {uid for c in corpus.conversations for uid in (c.utterance_ids or []) if uid}
    # Checked after the join so that an utterance without its row is reported first.
    extra = [uid for uid in table if uid not in known]
    if extra:
        # A row no utterance asks for is usually a renamed/misspelt id whose utterance is then
        # missing its features; never ignore it without a word.
        raise MercInputError(source, f"{len(extra)} row(s) whose id is no utterance_id of the "
                             f"corpus (first: {extra[0]!r}); remove them or fix the ids",
                             utterance=extra[0], field=modality)
    if n_missing:
        total = sum(len(c) for c in corpus.conversations)
        log.warning("%s: %d of %d utterances have no %s features; zero-filled and masked",
                    source, n_missing, total, modality)
