"""The corpus registry, mirroring the model registry: one :class:`CorpusEntry` per ``--corpus``.

An entry says how to load the corpus (its loader), how to recognise its folder (a marker file,
so both ``data`` and ``data/<corpus>`` work as ``--data-dir``), which modalities and text features
it uses by default, whether its loader takes the ``label`` option (MELD's emotion/sentiment), and
what to download when it is absent. The CLI's ``--corpus`` choices and
:func:`merc.config.corpus_defaults` are read from here.

**Adding a corpus is one ``register_corpus(...)`` call in this file** (plus the loader module it
names, if the on-disk format is new).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import importlib

from merc.config import DEFAULT_TEXT_ENCODER, register_corpus_defaults
from merc.data.conversation import Corpus


@dataclass(frozen=True)
class CorpusEntry:
    name: str
    """The ``--corpus`` / ``data.corpus`` name."""
    loader_ref: str
    """``"module:function"`` of the loader, imported on first use (so that naming a corpus, as
    every stored config does, does not import every format's reader). The function takes the
    corpus folder (or file) as first argument; ``label=`` if :attr:`takes_label`."""
    marker: str | None
    """A file every folder of this corpus holds; ``None``: ``--data-dir`` is the file itself
    (the field's pickles) or any folder (nothing to recognise)."""
    modalities: tuple[str, ...] | None
    """Default ``data.modalities``; ``None`` = every modality the corpus provides."""
    text: str = DEFAULT_TEXT_ENCODER
    """Default ``data.text``: an encoder name, or ``external`` for the corpus' own vectors."""
    takes_label: bool = False
    """Whether the loader takes ``label`` (``data.label``: ``emotion`` or ``sentiment``)."""
    hint: str = "see docs/data.md for the generic JSONL format"
    """What to download or write when the corpus is not found."""
    description: str = ""
    """One line for ``--help``."""

    @property
    def loader(self) -> Callable[..., Corpus]:
        """The loader function (imported now)."""
        module, _, name = self.loader_ref.partition(":")
        return getattr(importlib.import_module(module), name)


_CORPORA: dict[str, CorpusEntry] = {}


def register_corpus(name: str, loader: str | Callable[..., Corpus], *, marker: str | None,
                    modalities: Sequence[str] | None, **options) -> CorpusEntry:
    """Register corpus ``name`` (see :class:`CorpusEntry` for the options); ``loader`` is the
    function or its ``"module:function"`` (imported when the corpus is first loaded)."""
    if callable(loader):
        loader = f"{loader.__module__}:{loader.__qualname__}"
    if name in _CORPORA:
        raise ValueError(f"corpus {name!r} is already registered")
    entry = CorpusEntry(name, loader, marker, tuple(modalities) if modalities else None,
                        **options)
    _CORPORA[name] = entry
    # Hand the config layer the defaults it fills in (it cannot import this registry).
    register_corpus_defaults(name, entry.modalities, entry.text)
    return entry


def list_corpora() -> list[str]:
    """Registered corpus names, in registration order (the order ``--help`` shows)."""
    return list(_CORPORA)


def get_corpus(name: str) -> CorpusEntry:
    try:
        return _CORPORA[name]
    except KeyError:
        raise ValueError(f"unknown corpus {name!r}; choose from {list_corpora()}") from None


def load_corpus(kind: str, data_dir: str | Path, **options) -> Corpus:
    """Load registered corpus ``kind`` from ``data_dir`` (the folder or file itself)."""
    return get_corpus(kind).loader(data_dir, **options)


_FOLDER = "conversations.jsonl"
register_corpus(
    "iemocap", "merc.data.iemocap:load_iemocap",
    marker=_FOLDER, modalities=("text", "audio"),
    hint="conversations.jsonl + audio_librosa8.csv as described in docs/data.md",
    description="IEMOCAP, 6 classes (text + 8-d librosa audio)")
register_corpus(
    "meld", "merc.data.meld:load_meld",
    marker="train_sent_emo.csv", modalities=("text",),
    takes_label=True,
    hint="MELD's train/dev/test_sent_emo.csv from the declare-lab/MELD release",
    description="MELD, 7 emotions or 3 sentiments (data.label)")
# MOSI ships its own 100-d text vectors; its transcripts are upper-case without punctuation.
register_corpus(
    "mosi", "merc.data.mosi:load_mosi",
    marker=_FOLDER, modalities=("text", "audio", "video"),
    text="external",
    hint="conversations.jsonl + text/audio/video.npz as described in docs/data.md",
    description="CMU-MOSI, binary sentiment (shipped text/audio/video vectors)")
# EmoDB: acted single sentences, no transcripts; audio only (use --audio eGeMAPSv02).
register_corpus(
    "emodb", "merc.data.emodb:load_emodb",
    marker="labels.csv", modalities=("audio",),
    hint="labels.csv + wav/ as described in docs/data.md (EmoDB section)",
    description="EmoDB, 7 classes, one wav per utterance, no split (merc crossval)")
register_corpus(
    "jsonl", "merc.data.jsonl:load_jsonl",
    marker=_FOLDER, modalities=None,
    description="the generic format (docs/data.md)")
# The field's feature pickles, read unchanged (``--data-dir`` is the pickle file itself).
register_corpus(
    "cosmic-pkl", "merc.data.cosmic_pickle:load_cosmic_text",
    marker=None, modalities=("text",),
    takes_label=True, description="COSMIC's text pickle (transcripts)")
# Feature pickles carrying their own text vectors (RoBERTa / CNN): use them as shipped.
register_corpus(
    "cosmic-roberta", "merc.data.cosmic_pickle:load_cosmic_roberta",
    marker=None, modalities=None,
    text="external", takes_label=True,
    description="COSMIC's RoBERTa feature pickle")
register_corpus(
    "dialoguernn-iemocap", "merc.data.dialoguernn_pickle:load_dialoguernn_iemocap",
    marker=None, modalities=None,
    text="external", description="DialogueRNN's IEMOCAP feature pickle")
register_corpus(
    "mmgcn-iemocap", "merc.data.mmgcn_pickle:load_mmgcn_iemocap",
    marker=None, modalities=None,
    text="external", description="MMGCN's IEMOCAP feature pickle")
register_corpus(
    "mmgcn-meld", "merc.data.mmgcn_pickle:load_meld_features_raw",
    marker=None, modalities=None,
    text="external", takes_label=True, description="MMGCN's MELD feature pickle")
