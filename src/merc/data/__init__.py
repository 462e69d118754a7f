"""Conversations in: the data model, one loader per on-disk format (registered in
:mod:`merc.data.corpora`), preparation for training (:mod:`merc.training.prepare`) and padded batches."""

from __future__ import annotations

from merc.data.conversation import (SPLITS, Conversation, Corpus, ensure_validation_split)
from merc.data.corpora import get_corpus, list_corpora, load_corpus, register_corpus
from merc.data.cosmic_pickle import load_cosmic_roberta, load_cosmic_text
from merc.data.dialoguernn_pickle import load_dialoguernn_iemocap
from merc.data.emodb import load_emodb
from merc.data.iemocap import load_iemocap
from merc.data.jsonl import load_jsonl
from merc.data.meld import load_meld
from merc.data.mmgcn_pickle import load_m3net, load_meld_features_raw, load_mmgcn_iemocap
from merc.data.mosi import load_mosi

__all__ = ["SPLITS", "Conversation", "Corpus", "ensure_validation_split", "get_corpus",
           "list_corpora", "load_corpus", "load_cosmic_roberta", "load_cosmic_text",
           "load_dialoguernn_iemocap", "load_emodb", "load_iemocap", "load_jsonl", "load_m3net",
           "load_meld", "load_meld_features_raw", "load_mmgcn_iemocap", "load_mosi",
           "register_corpus"]
