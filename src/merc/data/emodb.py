"""EmoDB (Berlin Database of Emotional Speech): acted German sentences, one wav per utterance.

On-disk structure (the folder passed as ``data_dir``)::

    labels.csv      header ``file,speaker,label``, one row per wav
    wav/<file>      the recordings, e.g. ``wav/03a01Fa.wav``

``file`` is the wav's name inside ``wav/``; ``speaker`` is EmoDB's two-digit speaker code, kept as
a string (``"03"``, not ``3``); ``label`` is one of :data:`EMODB_LABELS`. EmoDB has no dialogues
and no official split: every wav becomes a one-utterance :class:`Conversation` (id = file stem)
with split ``train``, an empty transcript and its absolute wav path in ``media["audio"]``, so
``FeatureSpec(audio="eGeMAPSv02")`` computes openSMILE features through the ordinary pipeline.
Speaker-independent evaluation assigns the splits later
(:func:`merc.training.crossval.run_speaker_cv`).
"""

from __future__ import annotations

import csv
from pathlib import Path

from merc.data.conversation import Conversation, Corpus, resolve_path
from merc.data.jsonl import _utf8_lines
from merc.errors import MercInputError

EMODB_LABELS = ["anger", "boredom", "disgust", "fear", "happiness", "neutral", "sadness"]
"""Label map, alphabetical: index ``i`` is class ``EMODB_LABELS[i]``. (EmoDB file-name letters:
W anger, L boredom, E disgust, A fear, F happiness, N neutral, T sadness.)"""

COLUMNS = ("file", "speaker", "label")
"""Columns ``labels.csv`` must have (surrounding whitespace in the header is ignored)."""

WAV_FOLDER = "wav"
"""Sub-folder of ``data_dir`` holding the wav files named in ``labels.csv``."""


def load_emodb(data_dir: str | Path) -> Corpus:
    """Load EmoDB from ``data_dir`` (the folder holding ``labels.csv`` and ``wav/``).

    Returns:
        A validated :class:`Corpus` named ``emodb`` with one single-utterance conversation per
        row of ``labels.csv``, in file order, all in split ``train``; ``label_names`` is
        :data:`EMODB_LABELS`.

    Raises:
        MercInputError: one line naming the file and row (utterance) for a missing
            ``labels.csv``, a header without ``file``/``speaker``/``label``, a row with the wrong
            number of columns, an empty or duplicate file name, an empty speaker, an unknown label,
            or a wav file that does not exist.
    """
    data_dir = resolve_path(data_dir, "EmoDB folder")
    labels_path = resolve_path(data_dir / "labels.csv", "EmoDB labels.csv")
    wav_dir = data_dir / WAV_FOLDER
    conversations: list[Conversation] = []
    seen: dict[str, int] = {}
    with open(labels_path, newline="", encoding="utf-8") as f:
        reader = csv.reader(_utf8_lines(labels_path, f))
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise MercInputError(labels_path, f"header {header} lacks columns {missing}; expected "
                                 f"'{','.join(COLUMNS)}'", field="header")
        col = {name: header.index(name) for name in COLUMNS}
        for lineno, row in enumerate(reader, start=2):
            if not row or not any(cell.strip() for cell in row):
                continue  # blank line (e.g. a trailing newline)
            if len(row) != len(header):
                raise MercInputError(labels_path, f"line {lineno}: {len(row)} columns, header has "
                                     f"{len(header)}", field="row")
            name, speaker, label = (row[col[c]].strip() for c in COLUMNS)
            where = name or f"line {lineno}"
            if not name:
                raise MercInputError(labels_path, f"line {lineno}: empty file name", field="file")
            if name in seen:
                raise MercInputError(labels_path, f"line {lineno}: file listed again (first on "
                                     f"line {seen[name]})", utterance=where, field="file")
            seen[name] = lineno
            if not speaker:
                raise MercInputError(labels_path, f"line {lineno}: empty speaker",
                                     utterance=where, field="speaker")
            if label not in EMODB_LABELS:
                raise MercInputError(labels_path, f"line {lineno}: unknown label {label!r}; "
                                     f"known: {EMODB_LABELS}", utterance=where, field="label")
            wav = wav_dir / name
            if not wav.is_file():
                raise MercInputError(labels_path, f"line {lineno}: wav file {wav} not found",
                                     utterance=where, field="file")
            stem = Path(name).stem
            conversations.append(Conversation(
                id=stem, split="train", speakers=[speaker], utterances=[""], labels=[label],
                utterance_ids=[stem], media={"audio": [str(wav.resolve())]}))
    if not conversations:
        raise MercInputError(labels_path, "no rows after the header", field="row")
    return Corpus(name="emodb", conversations=conversations, label_names=list(EMODB_LABELS),
                  source=str(labels_path), valid_split="none (speaker folds)").validate()
