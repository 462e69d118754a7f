"""Conversations in: the data model, one loader per on-disk format, and padded batches."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from merc.data.conversation import (SPLITS, Conversation, Corpus, ensure_validation_split)
from merc.data.cosmic_pickle import load_cosmic_roberta, load_cosmic_text
from merc.data.dialoguernn_pickle import load_dialoguernn_iemocap
from merc.data.emodb import load_emodb
from merc.data.iemocap import load_iemocap
from merc.data.jsonl import load_jsonl
from merc.data.meld import load_meld
from merc.data.mmgcn_pickle import load_m3net, load_meld_features_raw, load_mmgcn_iemocap
from merc.data.mosi import load_mosi

CORPUS_LOADERS: dict[str, Callable[..., Corpus]] = {
    "iemocap": load_iemocap,
    "meld": load_meld,
    "mosi": load_mosi,
    "jsonl": load_jsonl,
    # One wav per utterance, no split: for speaker cross-validation (`merc crossval`).
    "emodb": load_emodb,
    # The field's feature pickles, read unchanged (``--data-dir`` is the pickle file itself).
    "cosmic-pkl": load_cosmic_text,
    "cosmic-roberta": load_cosmic_roberta,
    "dialoguernn-iemocap": load_dialoguernn_iemocap,
    "mmgcn-iemocap": load_mmgcn_iemocap,
    "mmgcn-meld": load_meld_features_raw,
}
"""``--corpus`` name -> loader taking the corpus folder (or file) as first argument.
(M3Net's two-file layout is Python-only: :func:`merc.data.mmgcn_pickle.load_m3net`.)"""


def load_corpus(kind: str, data_dir: str | Path, **options) -> Corpus:
    """Load corpus ``kind`` (a key of :data:`CORPUS_LOADERS`) from ``data_dir``."""
    try:
        loader = CORPUS_LOADERS[kind]
    except KeyError:
        raise ValueError(f"unknown corpus {kind!r}; choose from {sorted(CORPUS_LOADERS)}") from None
    return loader(data_dir, **options)


__all__ = ["SPLITS", "Conversation", "Corpus", "CORPUS_LOADERS", "ensure_validation_split",
           "load_corpus", "load_cosmic_roberta", "load_cosmic_text", "load_dialoguernn_iemocap",
           "load_emodb", "load_iemocap", "load_jsonl", "load_m3net", "load_meld",
           "load_meld_features_raw", "load_mmgcn_iemocap", "load_mosi"]
