"""MELD official CSV release (``train_sent_emo.csv``, ``dev_sent_emo.csv``, ``test_sent_emo.csv``).

Structure (declare-lab/MELD ``data/MELD``): UTF-8 CSV with header
``Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime``.
A dialogue is ``Dialogue_ID`` within one split file; turn order is ``Utterance_ID`` (which may
have gaps). ``dev`` is MELD's official validation split and becomes ``valid`` here. Dialogue ids
are prefixed with the split (``train_0``, ``valid_0``, ``test_0``) because MELD reuses ids across
files. Utterance ids are ``dia{D}_utt{U}``, the names of MELD's video clips.
"""

from __future__ import annotations

import csv
from pathlib import Path

from merc.data.conversation import Conversation, Corpus, resolve_path
from merc.data.jsonl import _utf8_lines
from merc.errors import MercInputError

MELD_EMOTIONS = ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]
"""Label order used by the MERC literature's MELD feature pickles (MMGCN, DialogueRNN)."""
MELD_SENTIMENTS = ["neutral", "positive", "negative"]

REQUIRED_COLUMNS = ("Dialogue_ID", "Utterance_ID", "Speaker", "Utterance", "Emotion", "Sentiment")
_FILES = (("train", "train_sent_emo.csv"), ("valid", "dev_sent_emo.csv"),
          ("test", "test_sent_emo.csv"))


def load_meld(data_dir: str | Path, *, label: str = "emotion",
              video_dir: str | Path | None = None) -> Corpus:
    """Load the MELD CSV release from ``data_dir``.

    Args:
        data_dir: Folder holding the three ``*_sent_emo.csv`` files.
        label: ``"emotion"`` (7 classes) or ``"sentiment"`` (3 classes).
        video_dir: Optional folder with MELD's clips laid out as ``{split}/dia{D}_utt{U}.mp4``
            (``split`` = train/dev/test); recorded as per-utterance video media paths.
    """
    if label not in ("emotion", "sentiment"):
        raise ValueError(f"label must be 'emotion' or 'sentiment', got {label!r}")
    data_dir = resolve_path(data_dir, "MELD folder")
    names = MELD_EMOTIONS if label == "emotion" else MELD_SENTIMENTS
    column = "Emotion" if label == "emotion" else "Sentiment"
    conversations: list[Conversation] = []
    for split, fname in _FILES:
        conversations += _read_split(resolve_path(data_dir / fname, f"MELD {split} file"), split,
                                     column, names, video_dir)
    return Corpus(name="meld", conversations=conversations, label_names=list(names),
                  source=str(data_dir)).validate()


def _read_split(path: Path, split: str, column: str, names: list[str],
                video_dir: str | Path | None) -> list[Conversation]:
    # dialogue id -> list of (utterance index, speaker, text, label)
    dialogues: dict[int, list[tuple[int, str, str, str]]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(_utf8_lines(path, f))
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise MercInputError(path, f"missing columns {missing}", field="header")
        width = len(reader.fieldnames)
        for lineno, row in enumerate(reader, start=2):
            # DictReader pads short rows with None and files extra fields under None: a row
            # with an unquoted comma or a truncated line would otherwise be read shifted.
            if None in row or None in row.values():
                n = width + len(row.get(None) or []) - sum(v is None for v in row.values())
                raise MercInputError(path, f"line {lineno}: {n} columns, header has {width} "
                                     "(unquoted comma or truncated row?)", field="row")
            did = _as_int(path, row, "Dialogue_ID", lineno, None)
            uid = _as_int(path, row, "Utterance_ID", lineno, did)
            lab = row[column].strip()
            if lab not in names:
                raise MercInputError(path, f"unknown label {lab!r}; known: {names}",
                                     dialogue=did, utterance=uid, field=column)
            turns = dialogues.setdefault(did, [])
            if any(t[0] == uid for t in turns):
                raise MercInputError(path, "duplicate Utterance_ID", dialogue=did, utterance=uid,
                                     field="Utterance_ID")
            turns.append((uid, row["Speaker"].strip(), row["Utterance"], lab))
    split_file = {"valid": "dev"}.get(split, split)
    out = []
    for did in sorted(dialogues):
        turns = sorted(dialogues[did])
        uids = [f"dia{did}_utt{t[0]}" for t in turns]
        media = {}
        if video_dir is not None:
            media["video"] = [str(Path(video_dir) / split_file / f"{u}.mp4") for u in uids]
        out.append(Conversation(
            id=f"{split}_{did}", split=split, speakers=[t[1] for t in turns],
            utterances=[t[2] for t in turns], labels=[t[3] for t in turns],
            utterance_ids=uids, media=media))
    return out


def _as_int(path: Path, row: dict, key: str, lineno: int, dialogue: int | None) -> int:
    try:
        return int(row[key])
    except (TypeError, ValueError):
        raise MercInputError(path, f"line {lineno}: expected an integer, got {row[key]!r}",
                             dialogue=dialogue, field=key) from None
