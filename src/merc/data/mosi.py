"""CMU-MOSI trimodal utterance features (``conversations.jsonl`` + ``text|audio|video.npz``).

Each video review is a "conversation" with one speaker; utterances carry a binary sentiment
label (0 negative, 1 positive). ``text.npz`` (100-d), ``audio.npz`` (73-d) and ``video.npz``
(100-d) map each utterance id to a float vector. MOSI has no validation split here, so the
engine carves a seeded split of train videos (never test).
"""

from __future__ import annotations

from pathlib import Path

from merc.data.conversation import Corpus, resolve_path
from merc.data.jsonl import load_jsonl

MOSI_LABELS = ["negative", "positive"]


def load_mosi(data_dir: str | Path) -> Corpus:
    """Load MOSI from ``data_dir`` (the folder holding ``conversations.jsonl`` and the npz files)."""
    data_dir = resolve_path(data_dir, "MOSI folder")
    files = {m: data_dir / f"{m}.npz" for m in ("text", "audio", "video")}
    return load_jsonl(data_dir / "conversations.jsonl", feature_files=files,
                      label_names=MOSI_LABELS, default_speaker="speaker", name="mosi")
