"""MMGCN-family pickles: MELD ``MELD_features_raw(1).pkl``, MMGCN IEMOCAP, and M3Net's pairing.

MELD feature pickle -- two layouts exist under (nearly) the same name, told apart by arity:

* 10 items, ``MELD_features_raw1.pkl`` of MMGCN (hujingwen6666/MMGCN ``dataloader.py``,
  ``MELDDataset``), also read by MM-DFN (zerohd4869/MM-DFN ``code/dataloader.py``, which names
  the last item ``aaa``) and M3Net (feiyuchen7/M3NET ``dataloader.py``)::

      0 videoIDs       dict dialogue id (int) -> ids (not interpreted: no reader uses them)
      1 videoSpeakers  dict dialogue id -> [one-hot party vector (9-d), ...]
      2 videoLabels    dict dialogue id -> [emotion index (int), ...]
      3 videoText      dict dialogue id -> (n, 600) text features
      4 videoAudio     dict dialogue id -> (n, 300) audio features
      5 videoVisual    dict dialogue id -> (n, 342) visual (DenseFace) features
      6 videoSentence  dict dialogue id -> [transcript (str), ...]
      7 trainVid       dialogue ids (MELD train and dev together)
      8 testVid        dialogue ids
      9 (unused)       unpacked as ``_`` by every reader; not interpreted here

  Dims from MMGCN ``train.py`` (``feat2dim``: ``MELD_text`` 600, ``MELD_audio`` 300,
  ``denseface`` 342; ``n_speakers = 9``). Only emotion labels.

* 9 items, ``MELD_features_raw.pkl`` of DialogueRNN/DialogueGCN/bc-LSTM (declare-lab/conv-emotion
  ``bc-LSTM-pytorch/dataloader.py`` and ``DialogueGCN/dataloader.py`` ``MELDDataset``): no
  visual features and a trailing sentiment dict::

      0 videoIDs, 1 videoSpeakers (one-hot), 2 videoLabels (emotion), 3 videoText,
      4 videoAudio, 5 videoSentence, 6 trainVid, 7 testVid, 8 videoLabelsSentiment

Label maps (bc-LSTM ``MELDDataset`` docstring; DialogueGCN states the same emotion map):
emotion ``{'neutral': 0, 'surprise': 1, 'fear': 2, 'sadness': 3, 'joy': 4, 'disgust': 5,
'anger': 6}``, sentiment ``{'neutral': 0, 'positive': 1, 'negative': 2}``. MMGCN's code states
no map; its file carries the same 600-d text / 300-d audio features and 7 classes, and the same
map is assumed. Speakers are one-hot vectors and become ``"speaker<k>"``. Neither file has an
official validation split (the repos hold out the first 10% of ``trainVid``): the corpus has
train/test, ``valid_split="none in file"``, and the engine carves one with
:func:`merc.data.conversation.ensure_validation_split`.

IEMOCAP for MMGCN: MMGCN (and MM-DFN) read ``IEMOCAP_features/IEMOCAP_features.pkl`` with exactly
the DialogueRNN 9-item layout (only the audio/visual dims differ: 1582 IS10 / 342 DenseFace), so
:func:`load_mmgcn_iemocap` simply calls
:func:`merc.data.dialoguernn_pickle.load_dialoguernn_iemocap`.

M3Net (feiyuchen7/M3NET ``dataloader.py``) uses two files per corpus: the 9-item IEMOCAP pickle
or the 10-item MELD pickle above for speakers, labels, audio, visual and the train/test lists,
plus COSMIC's ``iemocap_features_roberta.pkl`` / ``meld_features_roberta.pkl``
(:mod:`merc.data.cosmic_pickle`) whose ``roberta1..4`` dicts, looked up with the same dialogue
ids, replace the text features (1024-d; its ``concat_DHT`` model averages the four layers).
:func:`load_m3net` reproduces that pairing; the RoBERTa file's own speakers, labels and split
lists are not used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from merc.data.conversation import Corpus
from merc.data.cosmic_pickle import (
    IEMOCAP_ROBERTA_FIELDS,
    MELD_ROBERTA_FIELDS,
    check_text_layers,
    roberta_text_reader,
)
from merc.data.dialoguernn_pickle import IEMOCAP_FEATURE_FIELDS, load_dialoguernn_iemocap
from merc.data.iemocap import IEMOCAP_LABELS
from merc.data.meld import MELD_EMOTIONS, MELD_SENTIMENTS
from merc.data.pickle_layout import (
    DimCheck,
    FeatureReader,
    build_corpus,
    field_feature,
    unpack_fields,
)
from merc.data.safe_pickle import safe_load_pickle
from merc.errors import MercInputError

MMGCN_MELD_FIELDS = ("videoIDs", "videoSpeakers", "videoLabels", "videoText", "videoAudio",
                     "videoVisual", "videoSentence", "trainVid", "testVid", "unused")
"""The 10-item MMGCN ``MELD_features_raw1.pkl``, in file order."""

DIALOGUERNN_MELD_FIELDS = ("videoIDs", "videoSpeakers", "videoLabels", "videoText",
                           "videoAudio", "videoSentence", "trainVid", "testVid",
                           "videoLabelsSentiment")
"""The 9-item DialogueRNN/bc-LSTM ``MELD_features_raw.pkl``, in file order."""

_MODALITY_FIELDS = {"text": "videoText", "audio": "videoAudio", "video": "videoVisual"}


def load_meld_features_raw(
    path: str | Path,
    *,
    label: str = "emotion",
    modalities: Sequence[str] | None = None,
) -> Corpus:
    """Load MELD from ``MELD_features_raw1.pkl`` (MMGCN, 10 items) or ``MELD_features_raw.pkl``
    (DialogueRNN/bc-LSTM, 9 items), chosen by the number of items.

    Args:
        label: ``"emotion"`` or ``"sentiment"`` (9-item file only).
        modalities: Features to load; default all the file has (text/audio/video for the
            10-item file, text/audio for the 9-item file).
    """
    path = Path(path).expanduser()
    if label not in ("emotion", "sentiment"):
        raise ValueError(f"label must be 'emotion' or 'sentiment', got {label!r}")
    obj = safe_load_pickle(path)
    n_items = len(obj) if isinstance(obj, (list, tuple)) else None
    if n_items == 9 and not isinstance(obj[8], dict):
        raise MercInputError(path, "9 items but item 8 is not a sentiment dict: this looks "
                             "like the IEMOCAP_features.pkl layout (use "
                             "load_dialoguernn_iemocap)", field="pickle")
    layout = DIALOGUERNN_MELD_FIELDS if n_items == 9 else MMGCN_MELD_FIELDS
    what = ("DialogueRNN MELD_features_raw.pkl" if n_items == 9
            else "MMGCN MELD_features_raw1.pkl (or 9-item DialogueRNN MELD_features_raw.pkl)")
    fields = unpack_fields(path, obj, layout, what)
    available = [m for m, f in _MODALITY_FIELDS.items() if f in layout]
    modalities = available if modalities is None else list(modalities)
    missing = [m for m in modalities if m not in available]
    if missing:
        raise ValueError(f"modalities {missing} are not in this file; it has {available}")
    if label == "sentiment" and "videoLabelsSentiment" not in layout:
        raise MercInputError(path, "this 10-item MMGCN file has emotion labels only",
                             field="videoLabels")
    dims = DimCheck(path)
    features = {m: field_feature(path, fields, _MODALITY_FIELDS[m], dims) for m in modalities}
    return build_corpus(path, fields, name="meld",
                        label_field="videoLabels" if label == "emotion" else "videoLabelsSentiment",
                        label_names=MELD_EMOTIONS if label == "emotion" else MELD_SENTIMENTS,
                        speaker_field="videoSpeakers", sentence_field="videoSentence",
                        split_fields=[("train", "trainVid"), ("test", "testVid")],
                        features=features)


def load_mmgcn_iemocap(path: str | Path, *,
                       modalities: Sequence[str] = ("text", "audio", "video")) -> Corpus:
    """MMGCN's ``IEMOCAP_features.pkl``: the DialogueRNN 9-item layout (see module docstring)."""
    return load_dialoguernn_iemocap(path, modalities=modalities,
                                    what="MMGCN IEMOCAP_features.pkl")


def load_m3net(
    features_path: str | Path,
    roberta_path: str | Path,
    *,
    dataset: str = "iemocap",
    text_layers: Sequence[int] = (1, 2, 3, 4),
    text_combine: str = "mean",
    modalities: Sequence[str] = ("text", "audio", "video"),
) -> Corpus:
    """M3Net's inputs: the multimodal pickle plus COSMIC RoBERTa layers as the text feature.

    Args:
        features_path: ``IEMOCAP_features.pkl`` (9 items) or ``MELD_features_raw1.pkl``
            (10 items).
        roberta_path: ``iemocap_features_roberta.pkl`` / ``meld_features_roberta.pkl``.
        dataset: ``"iemocap"`` or ``"meld"``.
        text_layers, text_combine: As in :func:`merc.data.cosmic_pickle.load_cosmic_roberta`.
        modalities: Which of text (RoBERTa), audio and video to load.
    """
    if dataset not in ("iemocap", "meld"):
        raise ValueError(f"dataset must be 'iemocap' or 'meld', got {dataset!r}")
    unknown = [m for m in modalities if m not in _MODALITY_FIELDS]
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; choose from {sorted(_MODALITY_FIELDS)}")
    layers = check_text_layers(text_layers, text_combine)
    features_path = Path(features_path).expanduser()
    roberta_path = Path(roberta_path).expanduser()
    if dataset == "iemocap":
        layout, rlayout, names = IEMOCAP_FEATURE_FIELDS, IEMOCAP_ROBERTA_FIELDS, IEMOCAP_LABELS
        what = "IEMOCAP_features.pkl"
    else:
        layout, rlayout, names = MMGCN_MELD_FIELDS, MELD_ROBERTA_FIELDS, MELD_EMOTIONS
        what = "MMGCN MELD_features_raw1.pkl"
    fields = unpack_fields(features_path, safe_load_pickle(features_path), layout, what)
    rfields = unpack_fields(roberta_path, safe_load_pickle(roberta_path), rlayout,
                            f"COSMIC {dataset}_features_roberta.pkl")
    dims = DimCheck(features_path)
    features: dict[str, FeatureReader] = {}
    for m in modalities:
        if m == "text":
            # Errors about RoBERTa rows name the RoBERTa file, whose dicts they come from.
            features[m] = roberta_text_reader(roberta_path, rfields, layers, text_combine,
                                              DimCheck(roberta_path))
        else:
            features[m] = field_feature(features_path, fields, _MODALITY_FIELDS[m], dims)
    return build_corpus(features_path, fields, name=dataset, label_field="videoLabels",
                        label_names=names, speaker_field="videoSpeakers",
                        sentence_field="videoSentence",
                        # IEMOCAP's videoIDs are utterance-id strings; MELD's are not documented.
                        id_field="videoIDs" if dataset == "iemocap" else None,
                        split_fields=[("train", "trainVid"), ("test", "testVid")],
                        features=features)
