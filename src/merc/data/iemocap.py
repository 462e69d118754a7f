"""IEMOCAP (6 classes, COSMIC split) from ``conversations.jsonl`` + ``audio_librosa8.csv``.

``conversations.jsonl`` is the generic JSONL format (:mod:`merc.data.jsonl`) holding the COSMIC
pickle's dialogues, texts, speakers, labels and 108/12/31 train/valid/test split, with recovered
IEMOCAP utterance ids. ``audio_librosa8.csv`` holds 8 unscaled librosa statistics per utterance
id. 57 utterances have no recovered id and therefore no audio row: they are zero-filled, masked
in ``Conversation.feature_present["audio"]`` and counted in a warning (never dropped).

For the COSMIC pickle itself (``iemocap_cosmic.pkl``) see :mod:`merc.data.cosmic_pickle`.
"""

from __future__ import annotations

from pathlib import Path

from merc.data.conversation import Corpus, resolve_path
from merc.data.jsonl import load_jsonl

IEMOCAP_LABELS = ["hap", "sad", "neu", "ang", "exc", "fru"]
"""Label order of the COSMIC/DialogueRNN pickles (hap 0 ... fru 5)."""


def load_iemocap(data_dir: str | Path, *, audio: bool = True) -> Corpus:
    """Load IEMOCAP from ``data_dir`` (the folder holding ``conversations.jsonl``).

    Args:
        audio: Join ``audio_librosa8.csv`` as the ``audio`` feature (8-d).
    """
    data_dir = resolve_path(data_dir, "IEMOCAP folder")
    files = {"audio": data_dir / "audio_librosa8.csv"} if audio else {}
    return load_jsonl(data_dir / "conversations.jsonl", feature_files=files,
                      label_names=IEMOCAP_LABELS, missing_features="zero", name="iemocap")
