"""Tests for the corpus loaders (MELD CSV, IEMOCAP, MOSI, generic JSONL) and the data model.

Synthetic inputs are written to ``tmp_path`` with exactly the structure of the real files
(MELD: the official header, CRLF line ends, quoted fields; IEMOCAP: ``conversations.jsonl`` +
``audio_librosa8.csv``; MOSI: ``conversations.jsonl`` + ``{text,audio,video}.npz``). Every bad
input must raise :class:`MercInputError` with a one-line message naming the file, the dialogue,
the field and, where it applies, the utterance. The ``real_data`` tests check the counts of the
shared data and skip when it is absent.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from merc.data import (
    Conversation,
    Corpus,
    ensure_validation_split,
    load_corpus,
    load_iemocap,
    load_jsonl,
    load_meld,
    load_mosi,
)
from merc.data.iemocap import IEMOCAP_LABELS
from merc.data.jsonl import read_feature_table
from merc.data.meld import MELD_EMOTIONS, MELD_SENTIMENTS
from merc.data.mosi import MOSI_LABELS
from merc.errors import MercInputError

DATA_DIR = Path(os.environ.get("MERC_DATA_DIR",
                               Path(__file__).resolve().parents[2] / "shared" / "data"))

MELD_HEADER = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID",
               "Utterance_ID", "Season", "Episode", "StartTime", "EndTime"]
AUDIO8_HEADER = ["utterance_id", "sig_mean", "sig_std", "rmse_mean", "rmse_std", "silence",
                 "harmonic", "auto_corr_max", "auto_corr_std"]


# --------------------------------------------------------------------------- helpers


def check_error(err: BaseException, *parts: str) -> str:
    """The message is one line and contains every expected part; returns it."""
    msg = str(err)
    assert isinstance(err, MercInputError), type(err)
    assert "\n" not in msg, msg
    for p in parts:
        assert p in msg, f"{p!r} not in {msg!r}"
    return msg


def raises(fn, *args, **kwargs) -> MercInputError:
    with pytest.raises(MercInputError) as info:
        fn(*args, **kwargs)
    return info.value


def meld_row(sr, did, uid, text="Okay.", speaker="Joey", emotion="neutral", sentiment="neutral"):
    return [sr, text, speaker, emotion, sentiment, did, uid, 3, 7,
            f"00:0{str(uid)[-1]}:01,000", f"00:0{str(uid)[-1]}:02,500"]


def write_meld_csv(path: Path, rows: list[list]) -> Path:
    # QUOTE_MINIMAL + CRLF: like the official files, fields with commas (the timestamps) are quoted.
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\r\n")
        w.writerow(MELD_HEADER)
        w.writerows(rows)
    return path


TRAIN_ROWS = [
    # Dialogue 0: file order is not turn order, and Utterance_ID has a gap (no 2).
    meld_row(1, 0, 1, "Hi, how are you?", "Ross", "joy", "positive"),
    meld_row(2, 0, 0, 'He said "no".', "Joey", "neutral", "neutral"),
    meld_row(3, 0, 3, "Oh my God\u2019s sake…", "Rachel", "surprise", "positive"),
    meld_row(4, 1, 0, "Go away.", "Monica", "anger", "negative"),
    meld_row(5, 1, 1, "Fine.", "Chandler", "sadness", "negative"),
]
DEV_ROWS = [meld_row(1, 0, 0, "Dev line.", "Phoebe", "fear", "negative"),
            meld_row(2, 0, 1, "Another.", "Joey", "disgust", "negative")]
TEST_ROWS = [meld_row(1, 0, 0, "Test line.", "Ross", "neutral", "neutral"),
             meld_row(2, 2, 0, "Other dialogue.", "Rachel", "joy", "positive")]


def make_meld(root: Path, train=TRAIN_ROWS, dev=DEV_ROWS, test=TEST_ROWS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_meld_csv(root / "train_sent_emo.csv", train)
    write_meld_csv(root / "dev_sent_emo.csv", dev)
    write_meld_csv(root / "test_sent_emo.csv", test)
    return root


def write_jsonl(path: Path, records: list[dict | str]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def utt(uid, speaker="A", text="hello", label="joy", **extra):
    d = {"utterance_id": uid, "speaker": speaker, "text": text, "label": label}
    d.update(extra)
    return d


def generic_records() -> list[dict]:
    return [
        {"dialogue_id": "d1", "split": "train", "utterances": [
            utt("d1_0", "A", "Hi!", "joy", audio="wav/d1_0.wav"),
            utt("d1_1", "B", "Go away.", "anger", audio="wav/d1_1.wav")]},
        {"dialogue_id": "d2", "split": "dev", "utterances": [
            utt("d2_0", "B", "Hm.", "neutral")]},
        {"dialogue_id": "d3", "split": "test", "utterances": [
            utt("d3_0", "A", "Yes.", "joy"), utt("d3_1", "A", "No.", "anger")]},
    ]


ALL_GENERIC_IDS = ["d1_0", "d1_1", "d2_0", "d3_0", "d3_1"]


def write_feature_csv(path: Path, ids, dim: int, header=None, *, start=0.0) -> Path:
    header = header or ["utterance_id"] + [f"f{j}" for j in range(dim)]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for i, uid in enumerate(ids):
            w.writerow([uid] + [start + i + 0.25 * j for j in range(dim)])
    return path


def write_feature_npz(path: Path, ids, dim: int) -> Path:
    arrays = {uid: np.arange(dim, dtype=np.float64) + i for i, uid in enumerate(ids)}
    np.savez(path, **arrays)
    return path


def conv(cid, split="train", n=2, labels=True, features=None) -> Conversation:
    return Conversation(id=cid, split=split, speakers=["A"] * n, utterances=["x"] * n,
                        labels=["a"] * n if labels else None,
                        utterance_ids=[f"{cid}_{i}" for i in range(n)],
                        features=dict(features or {}))


def corpus_of(*convs, source="mem.jsonl") -> Corpus:
    return Corpus(name="t", conversations=list(convs), label_names=["a", "b"], source=source)


# --------------------------------------------------------------------------- MELD


def test_meld_splits_order_and_labels(tmp_path):
    corpus = load_meld(make_meld(tmp_path / "meld"))
    assert corpus.name == "meld"
    assert corpus.label_names == MELD_EMOTIONS
    assert corpus.valid_split == "official"
    assert [c.id for c in corpus.conversations] == ["train_0", "train_1", "valid_0", "test_0",
                                                    "test_2"]
    assert [c.split for c in corpus.conversations] == ["train", "train", "valid", "test", "test"]
    d0 = corpus.conversations[0]
    # Turn order is Utterance_ID (0, 1, 3: gap kept, no row invented), not file order.
    assert d0.utterance_ids == ["dia0_utt0", "dia0_utt1", "dia0_utt3"]
    assert d0.utterances == ['He said "no".', "Hi, how are you?", "Oh my God\u2019s sake…"]
    assert d0.speakers == ["Joey", "Ross", "Rachel"]
    assert d0.labels == ["neutral", "joy", "surprise"]
    assert corpus.counts() == {"train": {"dialogues": 2, "utterances": 5},
                               "valid": {"dialogues": 1, "utterances": 2},
                               "test": {"dialogues": 2, "utterances": 2}}
    assert corpus.feature_modalities == []
    # The official dev split is kept as is.
    assert ensure_validation_split(corpus, 0.5, seed=3) is corpus


def test_meld_file_format_is_crlf_and_quoted(tmp_path):
    raw = (make_meld(tmp_path / "meld") / "train_sent_emo.csv").read_bytes()
    assert raw.startswith(",".join(MELD_HEADER).encode() + b"\r\n")
    assert b'"00:01:01,000"' in raw and b'"Hi, how are you?"' in raw


def test_meld_sentiment_and_video_paths(tmp_path):
    root = make_meld(tmp_path / "meld")
    corpus = load_meld(root, label="sentiment", video_dir=tmp_path / "clips")
    assert corpus.label_names == MELD_SENTIMENTS
    assert corpus.conversations[0].labels == ["neutral", "positive", "positive"]
    valid = corpus.split("valid")[0]
    assert valid.media["video"][1] == str(tmp_path / "clips" / "dev" / "dia0_utt1.mp4")
    assert corpus.split("train")[0].media["video"][2] == str(
        tmp_path / "clips" / "train" / "dia0_utt3.mp4")
    with pytest.raises(ValueError):
        load_meld(root, label="valence")


def test_meld_via_load_corpus(tmp_path):
    corpus = load_corpus("meld", make_meld(tmp_path / "meld"), label="emotion")
    assert len(corpus.conversations) == 5
    with pytest.raises(ValueError, match="unknown corpus"):
        load_corpus("nope", tmp_path)


def test_meld_unknown_label(tmp_path):
    rows = TRAIN_ROWS[:3] + [meld_row(4, 1, 0, "Go away.", "Monica", "angry", "negative")]
    err = raises(load_meld, make_meld(tmp_path / "meld", train=rows))
    check_error(err, "train_sent_emo.csv", "dialogue 1", "utterance 0", "field 'Emotion'",
                "'angry'")


def test_meld_unknown_sentiment(tmp_path):
    rows = [meld_row(1, 5, 2, sentiment="mixed")]
    err = raises(load_meld, make_meld(tmp_path / "meld", test=rows), label="sentiment")
    check_error(err, "test_sent_emo.csv", "dialogue 5", "utterance 2", "field 'Sentiment'")


@pytest.mark.parametrize("missing", ["train_sent_emo.csv", "dev_sent_emo.csv",
                                     "test_sent_emo.csv"])
def test_meld_missing_csv(tmp_path, missing):
    root = make_meld(tmp_path / "meld")
    (root / missing).unlink()
    check_error(raises(load_meld, root), missing, "not found")


def test_meld_missing_folder(tmp_path):
    check_error(raises(load_meld, tmp_path / "nowhere"), "nowhere", "not found")


def test_meld_non_integer_ids(tmp_path):
    rows = TRAIN_ROWS + [meld_row(6, "x1", 0)]
    check_error(raises(load_meld, make_meld(tmp_path / "a", train=rows)),
                "train_sent_emo.csv", "field 'Dialogue_ID'", "'x1'")
    rows = TRAIN_ROWS + [meld_row(6, 4, "zero")]
    check_error(raises(load_meld, make_meld(tmp_path / "b", train=rows)),
                "train_sent_emo.csv", "dialogue 4", "field 'Utterance_ID'", "'zero'")


def test_meld_duplicate_utterance_id(tmp_path):
    rows = TRAIN_ROWS + [meld_row(6, 1, 1, "Again.")]
    check_error(raises(load_meld, make_meld(tmp_path / "meld", train=rows)),
                "train_sent_emo.csv", "dialogue 1", "utterance 1", "field 'Utterance_ID'",
                "duplicate")


def test_meld_missing_column(tmp_path):
    root = make_meld(tmp_path / "meld")
    text = (root / "dev_sent_emo.csv").read_text(encoding="utf-8")
    (root / "dev_sent_emo.csv").write_text(text.replace("Speaker", "Person", 1), encoding="utf-8")
    check_error(raises(load_meld, root), "dev_sent_emo.csv", "field 'header'", "Speaker")


def test_meld_row_with_wrong_number_of_columns(tmp_path):
    root = make_meld(tmp_path / "meld")
    path = root / "train_sent_emo.csv"
    with open(path, "ab") as f:
        f.write(b"6,Hi there,Joey\r\n")  # truncated row
    check_error(raises(load_meld, root), "train_sent_emo.csv", "line 7", "3 columns",
                "header has 11", "field 'row'")
    make_meld(root)
    with open(path, "ab") as f:  # unquoted comma in the utterance: one column too many
        f.write(b'6,Hi, there,Joey,joy,positive,1,2,3,7,"00:00:01,000","00:00:02,000"\r\n')
    check_error(raises(load_meld, root), "train_sent_emo.csv", "line 7", "12 columns",
                "field 'row'")


def test_meld_not_utf8(tmp_path):
    root = make_meld(tmp_path / "meld")
    path = root / "test_sent_emo.csv"
    path.write_bytes(path.read_bytes().replace(b"Test line.", b"Caf\xe9 line."))
    check_error(raises(load_meld, root), "test_sent_emo.csv", "UTF-8")


# --------------------------------------------------------------------------- generic JSONL


def test_jsonl_loads_generic_corpus(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    path = write_jsonl(folder / "dialogues.jsonl", generic_records())
    write_feature_csv(folder / "feats_audio.csv", ALL_GENERIC_IDS, 3)
    write_feature_npz(folder / "feats_video.npz", ALL_GENERIC_IDS, 5)
    corpus = load_jsonl(path, feature_files={"audio": folder / "feats_audio.csv",
                                             "video": folder / "feats_video.npz"})
    assert corpus.name == "dialogues"
    assert corpus.source == str(path)
    assert corpus.label_names == ["anger", "joy", "neutral"]  # inferred, sorted
    assert [(c.id, c.split) for c in corpus.conversations] == [
        ("d1", "train"), ("d2", "valid"), ("d3", "test")]  # "dev" -> "valid"
    d1, d2, d3 = corpus.conversations
    assert d1.speakers == ["A", "B"] and d1.utterances == ["Hi!", "Go away."]
    assert d1.labels == ["joy", "anger"]
    assert d1.utterance_ids == ["d1_0", "d1_1"]
    # Media paths are resolved relative to the JSONL file's folder.
    assert d1.media == {"audio": [str(folder / "wav/d1_0.wav"), str(folder / "wav/d1_1.wav")]}
    assert d2.media == {}
    assert corpus.feature_dims() == {"audio": 3, "video": 5}
    assert corpus.feature_modalities == ["audio", "video"]
    assert d3.features["audio"].dtype == np.float32
    np.testing.assert_allclose(d3.features["audio"][1], [4.0, 4.25, 4.5])
    np.testing.assert_allclose(d3.features["video"][0], np.arange(5) + 3)
    assert d1.feature_present == {}
    assert d1.speaker_indices().tolist() == [0, 1]


def test_jsonl_folder_autodetects_feature_files(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    write_jsonl(folder / "conversations.jsonl", generic_records())
    write_feature_csv(folder / "audio.csv", ALL_GENERIC_IDS, 4)
    write_feature_npz(folder / "text.npz", ALL_GENERIC_IDS, 6)
    corpus = load_jsonl(folder)
    assert corpus.name == "corpus"
    assert corpus.feature_dims() == {"audio": 4, "text": 6}
    assert load_corpus("jsonl", folder).feature_dims() == {"audio": 4, "text": 6}


def test_jsonl_integer_labels_use_label_names(tmp_path):
    records = [{"dialogue_id": 7, "split": "train",
                "utterances": [utt(None, label=2), utt(None, label=0)]}]
    path = write_jsonl(tmp_path / "c.jsonl", records)
    corpus = load_jsonl(path, label_names=["sad", "calm", "happy"])
    c = corpus.conversations[0]
    assert c.id == "7"
    assert c.labels == ["happy", "sad"]
    assert c.utterance_ids == [None, None]
    assert corpus.label_names == ["sad", "calm", "happy"]
    check_error(raises(load_jsonl, path), "c.jsonl", "field 'label'", "label_names")
    err = raises(load_jsonl, path, label_names=["sad", "calm"])
    check_error(err, "c.jsonl", "dialogue 7", "utterance #0", "field 'label'", "outside 0..1")


def test_jsonl_unlabelled_and_default_speaker(tmp_path):
    records = [{"dialogue_id": "m1", "split": "train",
                "utterances": [{"utterance_id": "m1_0", "text": "a"},
                               {"utterance_id": "m1_1", "text": "b", "label": None}]}]
    path = write_jsonl(tmp_path / "c.jsonl", records)
    corpus = load_jsonl(path, default_speaker="narrator")
    assert corpus.conversations[0].labels is None
    assert corpus.conversations[0].speakers == ["narrator", "narrator"]
    assert corpus.label_names == []


def test_jsonl_missing_features_zero_vs_error(tmp_path, caplog):
    path = write_jsonl(tmp_path / "c.jsonl", generic_records())
    feats = write_feature_csv(tmp_path / "audio.csv", ["d1_0", "d2_0", "d3_0", "d3_1"], 2)
    err = raises(load_jsonl, path, feature_files={"audio": feats})
    check_error(err, "audio.csv", "dialogue d1", "utterance d1_1", "field 'audio'", "no row")
    with caplog.at_level(logging.WARNING, logger="merc.data.jsonl"):
        corpus = load_jsonl(path, feature_files={"audio": feats}, missing_features="zero")
    d1 = corpus.conversations[0]
    assert d1.feature_present["audio"].tolist() == [True, False]
    assert d1.features["audio"][1].tolist() == [0.0, 0.0]
    assert "audio" not in corpus.conversations[2].feature_present  # all present
    assert "1 of 5 utterances have no audio features" in caplog.text
    with pytest.raises(ValueError):
        load_jsonl(path, missing_features="drop")


def test_jsonl_null_utterance_id_cannot_join(tmp_path):
    records = generic_records()
    records[0]["utterances"][1]["utterance_id"] = None
    path = write_jsonl(tmp_path / "c.jsonl", records)
    feats = write_feature_csv(tmp_path / "audio.csv", ALL_GENERIC_IDS, 2)
    err = raises(load_jsonl, path, feature_files={"audio": feats})
    check_error(err, "audio.csv", "dialogue d1", "utterance #1", "field 'audio'",
                "no utterance_id")


def test_jsonl_errors_name_file_dialogue_utterance_field(tmp_path):
    def fails(mutate, *parts, **kwargs):
        records = generic_records()
        mutate(records)
        path = write_jsonl(tmp_path / "c.jsonl", records)
        return check_error(raises(load_jsonl, path, **kwargs), "c.jsonl", *parts)

    # Missing speaker.
    fails(lambda r: r[0]["utterances"][1].pop("speaker"),
          "dialogue d1", "utterance d1_1", "field 'speaker'", "missing speaker")
    fails(lambda r: r[2]["utterances"][0].update(speaker=""),
          "dialogue d3", "utterance d3_0", "field 'speaker'")
    # Unknown label (label map given).
    fails(lambda r: r[2]["utterances"][1].update(label="bored"),
          "dialogue d3", "utterance d3_1", "field 'label'", "'bored'",
          label_names=["anger", "joy", "neutral"])
    # A label that is neither a name nor an index.
    fails(lambda r: r[0]["utterances"][0].update(label=1.5),
          "dialogue d1", "utterance d1_0", "field 'label'")
    fails(lambda r: r[0]["utterances"][0].update(label=["joy"]),
          "dialogue d1", "utterance d1_0", "field 'label'")
    # Label on some utterances of a dialogue only.
    fails(lambda r: r[2]["utterances"][1].pop("label"),
          "dialogue d3", "utterance d3_1", "field 'label'", "missing label")
    # Empty dialogue.
    fails(lambda r: r[1].update(utterances=[]),
          "dialogue d2", "field 'utterances'", "empty dialogue")
    # Malformed utterances.
    fails(lambda r: r[1].pop("utterances"), "dialogue d2", "field 'utterances'")
    fails(lambda r: r[1].update(utterances=None), "dialogue d2", "field 'utterances'")
    fails(lambda r: r[1].update(utterances=["Hm."]),
          "dialogue d2", "utterance #0", "field 'utterances'")
    # Unknown split.
    fails(lambda r: r[2].update(split="holdout"), "dialogue d3", "field 'split'", "'holdout'")
    fails(lambda r: r[2].pop("split"), "dialogue d3", "field 'split'")
    # Text / media of the wrong type.
    fails(lambda r: r[0]["utterances"][0].update(text=5),
          "dialogue d1", "utterance d1_0", "field 'text'")
    fails(lambda r: r[0]["utterances"][0].update(audio=3),
          "dialogue d1", "utterance d1_0", "field 'audio'")
    # Dialogue id missing or duplicated.
    fails(lambda r: r[1].pop("dialogue_id"), "line 2", "field 'dialogue_id'")
    fails(lambda r: r[2].update(dialogue_id="d1"), "dialogue d1", "field 'dialogue_id'",
          "duplicate")


def test_jsonl_invalid_json_line(tmp_path):
    records = generic_records()
    broken = '{"dialogue_id": "d2", "split":'
    path = write_jsonl(tmp_path / "c.jsonl", [records[0], broken, records[2]])
    check_error(raises(load_jsonl, path), "c.jsonl", "line 2", "invalid JSON")
    path = write_jsonl(tmp_path / "c.jsonl", [records[0], "[1, 2]"])
    check_error(raises(load_jsonl, path), "c.jsonl", "line 2", "JSON object")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    check_error(raises(load_jsonl, tmp_path / "empty.jsonl"), "empty.jsonl", "no dialogues")


def test_jsonl_not_utf8(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(json.dumps(generic_records()[0]).encode().replace(b"Hi!", b"H\xe9!") + b"\n")
    check_error(raises(load_jsonl, path), "c.jsonl", "UTF-8")


def test_jsonl_missing_files(tmp_path):
    check_error(raises(load_jsonl, tmp_path / "absent.jsonl"), "absent.jsonl", "not found")
    check_error(raises(load_jsonl, tmp_path), "conversations.jsonl", "not found")
    path = write_jsonl(tmp_path / "c.jsonl", generic_records())
    err = raises(load_jsonl, path, feature_files={"audio": tmp_path / "audio.csv"})
    check_error(err, "audio.csv", "feature file not found")


def test_jsonl_only_train_dialogues_required(tmp_path):
    records = [r for r in generic_records() if r["split"] != "train"]
    path = write_jsonl(tmp_path / "c.jsonl", records)
    check_error(raises(load_jsonl, path), "c.jsonl", "field 'split'", "no training")


# --------------------------------------------------------------------------- feature files


def test_feature_csv_errors(tmp_path):
    p = tmp_path / "audio.csv"
    p.write_text("utterance_id,f0,f1\nu1,0.5,1\nu2,0.1,oops\n")
    check_error(raises(read_feature_table, p), "audio.csv", "utterance u2", "field 'f1'",
                "line 3", "non-numeric")
    p.write_text("utterance_id,f0,f1\nu1,0.5,1\nu2,0.1,\n")
    check_error(raises(read_feature_table, p), "audio.csv", "utterance u2", "field 'f1'")
    p.write_text("utterance_id,f0,f1\nu1,0.5,1\nu2,0.1,2\nu1,3,4\n")
    check_error(raises(read_feature_table, p), "audio.csv", "utterance u1",
                "field 'utterance_id'", "line 4", "duplicate")
    p.write_text("utterance_id,f0,f1\nu1,0.5,1\nu2,0.1\n")  # vector of a different length
    check_error(raises(read_feature_table, p), "audio.csv", "utterance u2", "field 'features'",
                "2 columns")
    p.write_text("utterance_id\nu1\n")
    check_error(raises(read_feature_table, p), "audio.csv", "field 'header'")
    p.write_text("utterance_id,f0\n")
    check_error(raises(read_feature_table, p), "audio.csv", "no rows")
    q = tmp_path / "audio.tsv"
    q.write_text("x")
    check_error(raises(read_feature_table, q), "audio.tsv", "unsupported")


def test_feature_npz_errors(tmp_path):
    p = tmp_path / "video.npz"
    np.savez(p, u1=np.zeros(3), u2=np.zeros(4))
    check_error(raises(read_feature_table, p), "video.npz", "utterance u2", "field 'features'",
                "different lengths")
    np.savez(p, u1=np.zeros((2, 3)))
    check_error(raises(read_feature_table, p), "video.npz", "utterance u1", "field 'features'",
                "1-d")
    np.savez(p, u1=np.array(["a", "b"]))
    check_error(raises(read_feature_table, p), "video.npz", "utterance u1", "non-numeric")
    p.write_bytes(b"not a zip file")
    check_error(raises(read_feature_table, p), "video.npz", "cannot read")


def test_feature_npz_object_array_is_refused(tmp_path):
    p = tmp_path / "text.npz"
    np.savez(p, u1=np.array([{"run": "code"}, 1.0], dtype=object))  # stored as a pickle
    err = check_error(raises(read_feature_table, p), "text.npz")
    assert "allow_pickle" in err or "Object arrays" in err


def test_nan_in_feature_file_names_feature_file(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", generic_records())
    csv_path = write_feature_csv(tmp_path / "audio.csv", ALL_GENERIC_IDS, 2)
    text = csv_path.read_text().replace("d3_0,3.0,3.25", "d3_0,nan,3.25")
    csv_path.write_text(text)
    err = raises(load_jsonl, path, feature_files={"audio": csv_path})
    check_error(err, "audio.csv", "dialogue d3", "utterance d3_0", "field 'audio'", "NaN")
    vecs = {u: np.ones(3) for u in ALL_GENERIC_IDS}
    vecs["d1_1"] = np.array([1.0, np.inf, 0.0])
    np.savez(tmp_path / "video.npz", **vecs)
    err = raises(load_jsonl, path, feature_files={"video": tmp_path / "video.npz"})
    check_error(err, "video.npz", "dialogue d1", "utterance d1_1", "field 'video'")


# --------------------------------------------------------------------------- Corpus.validate


def test_validate_arity_and_dims():
    good = conv("g", features={"audio": np.zeros((2, 3), np.float32)})

    c = conv("d1")
    c.speakers = ["A"]
    check_error(raises(corpus_of(c).validate), "mem.jsonl", "dialogue d1", "field 'speakers'",
                "1 speakers for 2 utterances")
    c = conv("d1")
    c.labels = ["a", "a", "b"]
    check_error(raises(corpus_of(c).validate), "mem.jsonl", "dialogue d1", "field 'labels'",
                "3 labels for 2 utterances")
    c = conv("d1")
    c.labels = ["a", "zzz"]
    check_error(raises(corpus_of(c).validate), "dialogue d1", "utterance d1_1", "field 'label'")
    # Feature rows vs utterances: utterance counts differ across modalities.
    c = conv("d2", features={"text": np.zeros((2, 4), np.float32),
                             "audio": np.zeros((3, 3), np.float32)})
    check_error(raises(corpus_of(good, c).validate), "mem.jsonl", "dialogue d2", "field 'audio'",
                "3 feature rows for 2 utterances")
    # Two dialogues with different dims.
    c = conv("d3", features={"audio": np.zeros((2, 5), np.float32)})
    check_error(raises(corpus_of(good, c).validate), "mem.jsonl", "dialogue d3", "field 'audio'",
                "dim 5 differs from 3 in dialogue g")
    c = conv("d4", features={"audio": np.zeros(2, np.float32)})
    check_error(raises(corpus_of(c).validate), "dialogue d4", "field 'audio'", "2-d")
    c = conv("d5", features={"video": np.array([[0.0], [np.nan]], np.float32)})
    check_error(raises(corpus_of(c).validate), "dialogue d5", "utterance d5_1", "field 'video'",
                "NaN")
    c = conv("d6", n=0)
    check_error(raises(corpus_of(good, c).validate), "dialogue d6", "field 'utterances'", "empty")
    c = conv("d7", split="dev")
    check_error(raises(corpus_of(c).validate), "dialogue d7", "field 'split'", "'dev'")
    c = conv("d8")
    c.media = {"audio": ["a.wav"]}
    check_error(raises(corpus_of(c).validate), "dialogue d8", "field 'audio'", "1 audio paths")
    c = conv("d9")
    c.utterance_ids = ["x"]
    check_error(raises(corpus_of(c).validate), "dialogue d9", "field 'utterance_ids'")
    with pytest.raises(ValueError):
        corpus_of(good).split("dev")
    assert corpus_of(good).validate().feature_dims() == {"audio": 3}


def test_error_message_is_single_line():
    err = MercInputError("f.csv", "bad value 'a\nb'", dialogue="d\n1", utterance=3, field="x")
    assert "\n" not in str(err)
    assert str(err).startswith("f.csv: dialogue d\\n1, utterance 3, field 'x': bad value")
    assert (err.file, err.dialogue, err.utterance, err.field) == ("f.csv", "d\n1", 3, "x")


# --------------------------------------------------------------------------- IEMOCAP


def make_iemocap(root: Path, *, audio_ids=None, drop_audio=False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    records = []
    split_of = {"Ses01F_impro01": "train", "Ses01F_impro02": "train", "Ses02M_script01": "train",
                "Ses03F_impro03": "valid", "Ses05M_impro01": "test"}
    labels = IEMOCAP_LABELS
    k = 0
    for did, split in split_of.items():
        utts = []
        for i in range(3):
            spk = "MF"[i % 2]
            utts.append({"utterance_id": f"{did}_{spk}{i:03d}", "speaker": spk,
                         "text": f"[LAUGHTER] line {k}.", "label": labels[k % 6]})
            k += 1
        records.append({"dialogue_id": did, "split": split, "utterances": utts})
    # Two utterances whose id could not be recovered: null id, so no audio row.
    records[1]["utterances"][1]["utterance_id"] = None
    records[4]["utterances"][2]["utterance_id"] = None
    write_jsonl(root / "conversations.jsonl", records)
    ids = [u["utterance_id"] for r in records for u in r["utterances"] if u["utterance_id"]]
    if not drop_audio:
        write_feature_csv(root / "audio_librosa8.csv", audio_ids or ids, 8, AUDIO8_HEADER,
                          start=0.001)
    return root


def test_iemocap_loads_with_zero_filled_audio(tmp_path, caplog):
    root = make_iemocap(tmp_path / "iemocap")
    with caplog.at_level(logging.WARNING):
        corpus = load_iemocap(root)
    assert corpus.name == "iemocap"
    assert corpus.label_names == IEMOCAP_LABELS
    assert corpus.valid_split == "official"
    assert {s: v["dialogues"] for s, v in corpus.counts().items()} == {
        "train": 3, "valid": 1, "test": 1}
    assert corpus.feature_dims() == {"audio": 8}
    second = corpus.conversations[1]
    assert second.utterance_ids[1] is None
    assert second.feature_present["audio"].tolist() == [True, False, True]
    assert second.features["audio"][1].tolist() == [0.0] * 8
    assert second.features["audio"][0].tolist() != [0.0] * 8
    missing = sum(int((~c.feature_present["audio"]).sum()) for c in corpus.conversations
                  if "audio" in c.feature_present)
    assert missing == 2
    assert "audio_librosa8.csv: 2 of 15 utterances have no audio features" in caplog.text
    assert corpus.conversations[0].speakers == ["M", "F", "M"]
    assert corpus.conversations[0].utterances[0] == "[LAUGHTER] line 0."
    assert ensure_validation_split(corpus) is corpus  # official valid ids kept
    assert load_iemocap(root, audio=False).feature_modalities == []


def test_iemocap_errors(tmp_path):
    root = make_iemocap(tmp_path / "a", drop_audio=True)
    check_error(raises(load_iemocap, root), "audio_librosa8.csv", "not found")
    check_error(raises(load_iemocap, tmp_path / "none"), "none", "not found")
    root = make_iemocap(tmp_path / "b")
    (root / "conversations.jsonl").unlink()
    check_error(raises(load_iemocap, root), "conversations.jsonl", "not found")
    root = make_iemocap(tmp_path / "c")
    path = root / "conversations.jsonl"
    path.write_text(path.read_text().replace('"label": "fru"', '"label": "xxx"', 1))
    check_error(raises(load_iemocap, root), "conversations.jsonl", "dialogue Ses01F_impro02",
                "field 'label'", "'xxx'")
    root = make_iemocap(tmp_path / "d")
    audio = root / "audio_librosa8.csv"
    audio.write_text(audio.read_text().replace("Ses01F_impro01_F001,", "Ses01F_impro01_F001,x"))
    check_error(raises(load_iemocap, root), "audio_librosa8.csv", "utterance Ses01F_impro01_F001",
                "field 'sig_mean'")


# --------------------------------------------------------------------------- MOSI


def make_mosi(root: Path, dims=(6, 5, 4), skip_audio_id=None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    records = []
    ids = []
    for v, split in [("aaa", "train"), ("bbb", "train"), ("ccc", "train"), ("ddd", "train"),
                     ("eee", "test")]:
        utts = [{"utterance_id": f"{v}_{n}", "text": f"SEGMENT {n} OF {v.upper()}",
                 "label": n % 2} for n in (1, 2, 3)]
        ids += [u["utterance_id"] for u in utts]
        records.append({"dialogue_id": v, "split": split, "utterances": utts})
    write_jsonl(root / "conversations.jsonl", records)
    for m, d in zip(("text", "audio", "video"), dims):
        keep = [u for u in ids if not (m == "audio" and u == skip_audio_id)]
        write_feature_npz(root / f"{m}.npz", keep, d)
    return root


def test_mosi_loads(tmp_path):
    corpus = load_mosi(make_mosi(tmp_path / "mosi"))
    assert corpus.name == "mosi"
    assert corpus.label_names == MOSI_LABELS
    assert corpus.feature_dims() == {"audio": 5, "text": 6, "video": 4}
    c = corpus.conversations[0]
    assert c.labels == ["positive", "negative", "positive"]
    assert c.speakers == ["speaker"] * 3
    assert c.utterance_ids == ["aaa_1", "aaa_2", "aaa_3"]
    assert corpus.split("valid") == []
    with_valid = ensure_validation_split(corpus, 0.25, seed=0)
    assert len(with_valid.split("valid")) == 1 and len(with_valid.split("train")) == 3
    assert with_valid.valid_split.startswith("seeded: 1 of 4 train dialogues")


def test_mosi_mismatched_modalities(tmp_path):
    root = make_mosi(tmp_path / "a", skip_audio_id="ccc_2")
    check_error(raises(load_mosi, root), "audio.npz", "dialogue ccc", "utterance ccc_2",
                "field 'audio'")
    root = make_mosi(tmp_path / "b")
    (root / "video.npz").unlink()
    check_error(raises(load_mosi, root), "video.npz", "not found")
    root = make_mosi(tmp_path / "c")
    path = root / "conversations.jsonl"
    path.write_text(path.read_text().replace('"label": 1', '"label": 2', 1))
    check_error(raises(load_mosi, root), "conversations.jsonl", "dialogue aaa",
                "utterance aaa_1", "field 'label'")


# --------------------------------------------------------------------------- validation split


def split_corpus(n_train=20, n_test=5, n_valid=0) -> Corpus:
    convs = [conv(f"tr{i}", "train", n=1 + i % 3) for i in range(n_train)]
    convs += [conv(f"va{i}", "valid") for i in range(n_valid)]
    convs += [conv(f"te{i}", "test") for i in range(n_test)]
    return corpus_of(*convs).validate()


def test_ensure_validation_split_carves_whole_train_dialogues():
    corpus = split_corpus()
    out = ensure_validation_split(corpus, 0.2, seed=1)
    original = {c.id: c for c in corpus.conversations}
    valid = out.split("valid")
    assert len(valid) == 4 and len(out.split("train")) == 16
    for c in valid:
        src = original[c.id]
        assert src.split == "train"  # only train dialogues move ...
        assert dataclasses.replace(c, split="train") == src  # ... and they move whole
    # Test is untouched, in order; conversation order is kept.
    assert [c.id for c in out.split("test")] == [c.id for c in corpus.split("test")]
    assert [c.id for c in out.conversations] == [c.id for c in corpus.conversations]
    assert all(c.split == "train" for c in corpus.conversations[:20])  # input not modified
    assert "seeded" in out.valid_split and "seed=1" in out.valid_split


def test_ensure_validation_split_is_deterministic_per_seed():
    corpus = split_corpus()
    ids = lambda c: [x.id for x in c.split("valid")]
    assert ids(ensure_validation_split(corpus, 0.2, seed=5)) == \
        ids(ensure_validation_split(corpus, 0.2, seed=5))
    assert len({tuple(ids(ensure_validation_split(corpus, 0.2, seed=s))) for s in range(6)}) > 1
    assert ensure_validation_split(corpus, 0.2, 0).content_hash() == \
        ensure_validation_split(corpus, 0.2, 0).content_hash()


def test_ensure_validation_split_edge_cases():
    official = split_corpus(n_valid=2)
    assert ensure_validation_split(official, 0.5, seed=9) is official
    # Never empties train, never takes fewer than one dialogue.
    out = ensure_validation_split(split_corpus(n_train=3), 0.9, seed=0)
    assert len(out.split("train")) == 1 and len(out.split("valid")) == 2
    out = ensure_validation_split(split_corpus(n_train=3), 0.01, seed=0)
    assert len(out.split("valid")) == 1
    check_error(raises(ensure_validation_split, split_corpus(n_train=1)), "mem.jsonl",
                "field 'split'", "at least 2")
    with pytest.raises(ValueError):
        ensure_validation_split(split_corpus(), 1.0)


# --------------------------------------------------------------------------- content hash


def test_content_hash_tracks_content(tmp_path):
    root = make_meld(tmp_path / "meld")
    base = load_meld(root).content_hash()
    assert load_meld(root).content_hash() == base  # stable across loads
    moved = make_meld(tmp_path / "elsewhere")
    assert load_meld(moved).content_hash() == base  # location is not content
    rows = [list(r) for r in TRAIN_ROWS]
    rows[3][1] = "Go away!"  # one text
    assert load_meld(make_meld(tmp_path / "t", train=rows)).content_hash() != base
    rows = [list(r) for r in TRAIN_ROWS]
    rows[3][3] = "disgust"  # one label
    assert load_meld(make_meld(tmp_path / "l", train=rows)).content_hash() != base


def test_content_hash_covers_features(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", generic_records())
    a = write_feature_csv(tmp_path / "a.csv", ALL_GENERIC_IDS, 2)
    b = write_feature_csv(tmp_path / "b.csv", ALL_GENERIC_IDS, 2, start=1.0)
    ca = load_jsonl(path, feature_files={"audio": a})
    cb = load_jsonl(path, feature_files={"audio": b})
    assert ca.content_hash() == load_jsonl(path, feature_files={"audio": a}).content_hash()
    assert ca.content_hash() != cb.content_hash()
    assert ca.content_hash(include_features=False) == cb.content_hash(include_features=False)


# --------------------------------------------------------------------------- real data


def _real(name: str, marker: str) -> Path:
    folder = DATA_DIR / name
    if not (folder / marker).exists():
        pytest.skip(f"real data not found at {folder} (set MERC_DATA_DIR)")
    return folder


@pytest.mark.real_data
def test_real_meld():
    corpus = load_meld(_real("meld", "train_sent_emo.csv"))
    assert corpus.counts() == {"train": {"dialogues": 1038, "utterances": 9989},
                               "valid": {"dialogues": 114, "utterances": 1109},
                               "test": {"dialogues": 280, "utterances": 2610}}
    assert corpus.label_names == MELD_EMOTIONS
    assert corpus.valid_split == "official"


@pytest.mark.real_data
def test_real_iemocap(caplog):
    with caplog.at_level(logging.WARNING):
        corpus = load_iemocap(_real("iemocap", "conversations.jsonl"))
    counts = corpus.counts()
    assert {s: v["dialogues"] for s, v in counts.items()} == {"train": 108, "valid": 12,
                                                              "test": 31}
    assert sum(v["utterances"] for v in counts.values()) == 7433
    assert corpus.feature_dims() == {"audio": 8}
    zero = sum(int((~c.feature_present["audio"]).sum()) for c in corpus.conversations
               if "audio" in c.feature_present)
    assert zero == 57
    assert "57 of 7433 utterances have no audio features" in caplog.text


@pytest.mark.real_data
def test_real_mosi():
    corpus = load_mosi(_real("mosi", "conversations.jsonl"))
    counts = corpus.counts()
    assert {s: v["dialogues"] for s, v in counts.items()} == {"train": 62, "valid": 0,
                                                              "test": 31}
    assert counts["train"]["utterances"] == 1447 and counts["test"]["utterances"] == 752
    assert corpus.feature_dims() == {"text": 100, "audio": 73, "video": 100}
