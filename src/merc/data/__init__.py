"""Conversations in: the data model (:mod:`merc.data.conversation`), one loader per on-disk
format (registered in :mod:`merc.data.corpora`), validation and padded batches.

The names below are imported on first use (PEP 562): reading one conversation file for
``merc predict`` does not load every corpus format's loader.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "SPLITS": "merc.data.conversation", "Conversation": "merc.data.conversation",
    "Corpus": "merc.data.conversation", "ensure_validation_split": "merc.data.conversation",
    "get_corpus": "merc.data.corpora", "list_corpora": "merc.data.corpora",
    "load_corpus": "merc.data.corpora", "register_corpus": "merc.data.corpora",
    "load_cosmic_roberta": "merc.data.cosmic_pickle", "load_cosmic_text": "merc.data.cosmic_pickle",
    "load_dialoguernn_iemocap": "merc.data.dialoguernn_pickle", "load_emodb": "merc.data.emodb",
    "load_iemocap": "merc.data.iemocap", "load_jsonl": "merc.data.jsonl",
    "load_meld": "merc.data.meld", "load_m3net": "merc.data.mmgcn_pickle",
    "load_meld_features_raw": "merc.data.mmgcn_pickle",
    "load_mmgcn_iemocap": "merc.data.mmgcn_pickle", "load_mosi": "merc.data.mosi",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
