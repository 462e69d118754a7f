"""EmoDB loader and speaker-independent cross-validation, on a tiny synthetic EmoDB folder."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from helpers import shared_data_dir
from merc.cli import main
from merc.config import DataConfig
from merc.data import Conversation, Corpus, get_corpus, load_corpus
from merc.training import prepare
from merc.data.emodb import EMODB_LABELS, load_emodb
from merc.training.prepare import extract_features, load_configured
from merc.training.crossval import (conversation_speakers, make_speaker_folds,
                                  metrics_from_confusion, prepare_fold)
from merc.calibration import pool_reliability
from merc.metrics import classification_metrics
from merc.errors import MercInputError

# EmoDB file-name emotion letters, as in the real corpus (SSTTTEV.wav).
LETTER = {"anger": "W", "sadness": "T", "neutral": "N"}
PITCH = {"anger": 320.0, "sadness": 140.0, "neutral": 210.0}


def write_tone(path: Path, freq: float, *, seconds: float = 0.5, rate: int = 16000,
               loud: float = 0.3, seed: int = 0) -> None:
    """A mono 16-bit wav: a vibrato sine plus a little noise (pitch functionals well defined)."""
    from helpers import write_wav

    write_wav(path, freq, seconds=seconds, rate=rate, loud=loud, vibrato_hz=4.0, seed=seed)


def write_emodb(root: Path, speakers=("03", "08", "09", "10"), per_label: int = 2) -> Path:
    """An EmoDB folder with the real structure: ``labels.csv`` (``file,speaker,label``) + ``wav/``.

    Pitch and loudness depend on the label (plus a small speaker offset), so the label is
    learnable from eGeMAPS across speakers.
    """
    (root / "wav").mkdir(parents=True)
    rows = ["file,speaker,label"]
    k = 0
    for s_i, spk in enumerate(speakers):
        for label, letter in LETTER.items():
            for v in range(per_label):
                name = f"{spk}a0{v + 1}{letter}a.wav"
                loud = 0.6 if label == "anger" else 0.15 if label == "sadness" else 0.3
                write_tone(root / "wav" / name, PITCH[label] * (1 + 0.03 * s_i) + 5 * v,
                           loud=loud, seed=k)
                rows.append(f"{name},{spk},{label}")
                k += 1
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture
def emodb_dir(tmp_path) -> Path:
    return write_emodb(tmp_path / "emodb")


# --------------------------------------------------------------------------- loader


def test_load_emodb_structure(emodb_dir):
    corpus = load_corpus("emodb", emodb_dir)
    assert get_corpus("emodb").loader is load_emodb
    assert corpus.name == "emodb" and corpus.label_names == EMODB_LABELS
    assert len(corpus.conversations) == 4 * 3 * 2
    first = corpus.conversations[0]
    assert (first.id, first.speakers, first.labels) == ("03a01Wa", ["03"], ["anger"])
    assert first.utterance_ids == ["03a01Wa"] and first.utterances == [""]
    assert all(len(c) == 1 and c.split == "train" for c in corpus.conversations)
    assert sorted({c.speakers[0] for c in corpus.conversations}) == ["03", "08", "09", "10"]
    wav = Path(first.media["audio"][0])
    assert wav.is_absolute() and wav == (emodb_dir / "wav" / "03a01Wa.wav").resolve()


def _edit_labels(root: Path, old: str, new: str) -> None:
    path = root / "labels.csv"
    path.write_text(path.read_text().replace(old, new, 1))


@pytest.mark.parametrize("case", ["no_labels", "bad_header", "unknown_label", "missing_wav",
                                  "short_row", "duplicate"])
def test_load_emodb_errors_name_file_row_field(emodb_dir, case):
    if case == "no_labels":
        (emodb_dir / "labels.csv").unlink()
    elif case == "bad_header":
        _edit_labels(emodb_dir, "file,speaker,label", "file,speaker,emotion")
    elif case == "unknown_label":
        _edit_labels(emodb_dir, "08a01Wa.wav,08,anger", "08a01Wa.wav,08,angry")
    elif case == "missing_wav":
        (emodb_dir / "wav" / "09a02Ta.wav").unlink()
    elif case == "short_row":
        _edit_labels(emodb_dir, "08a01Wa.wav,08,anger", "08a01Wa.wav,08")
    else:
        _edit_labels(emodb_dir, "08a02Wa.wav", "08a01Wa.wav")
    with pytest.raises(MercInputError) as e:
        load_emodb(emodb_dir)
    msg = str(e.value)
    assert "\n" not in msg and "labels.csv" in msg
    expected = {
        "no_labels": (None, None, "not found"),
        "bad_header": (None, "header", "['label']"),
        "unknown_label": ("08a01Wa.wav", "label", "'angry'"),
        "missing_wav": ("09a02Ta.wav", "file", "09a02Ta.wav not found"),
        "short_row": (None, "row", "2 columns"),
        "duplicate": ("08a01Wa.wav", "file", "listed again"),
    }[case]
    assert (e.value.utterance, e.value.field) == expected[:2]
    assert expected[2] in msg
    if case in ("unknown_label", "missing_wav", "short_row", "duplicate"):
        assert "line " in msg  # the row of labels.csv


def test_header_whitespace_is_tolerated(emodb_dir):
    _edit_labels(emodb_dir, "file,speaker,label", "file, speaker, label")
    assert len(load_emodb(emodb_dir).conversations) == 24


def test_real_emodb_loads():
    d = shared_data_dir() / "emodb"
    if not (d / "labels.csv").exists():
        pytest.skip(f"EmoDB not found at {d}")
    corpus = load_emodb(d)
    assert len(corpus.conversations) == 535
    speakers = sorted({c.speakers[0] for c in corpus.conversations})
    assert speakers == ["03", "08", "09", "10", "11", "12", "13", "14", "15", "16"]
    counts = {lab: sum(c.labels[0] == lab for c in corpus.conversations) for lab in EMODB_LABELS}
    assert counts == {"anger": 127, "boredom": 81, "disgust": 46, "fear": 69, "happiness": 71,
                      "neutral": 79, "sadness": 62}
    assert all(Path(c.media["audio"][0]).is_file() for c in corpus.conversations[:5])


# --------------------------------------------------------------------------- folds


@pytest.mark.parametrize("folds", [None, 3, 4])
def test_speaker_folds_never_mix_roles(folds):
    speakers = ["16", "03", "08", "09", "10", "03", "11", "12", "13", "14", "15"]
    plan = make_speaker_folds(speakers, folds)
    everyone = set(speakers)
    assert len(plan) == (10 if folds is None else folds)
    tested = []
    for k, f in enumerate(plan):
        test, valid, train = set(f.test), set(f.valid), set(f.train)
        assert test and valid and train
        assert not (test & valid) and not (test & train) and not (valid & train)
        assert test | valid | train == everyone
        assert f.valid == plan[(k + 1) % len(plan)].test  # validation = the next group
        tested += f.test
    assert sorted(tested) == sorted(everyone)  # every speaker tested exactly once
    if folds is None:
        assert [f.test for f in plan[:2]] == [("03",), ("08",)] and plan[0].valid == ("08",)


@pytest.mark.parametrize("folds", [None, 4])
def test_two_validation_groups_are_the_two_after_the_test_group(folds):
    speakers = ["16", "03", "08", "09", "10", "11", "12", "13", "14", "15"]
    plan = make_speaker_folds(speakers, folds, valid_groups=2)
    for k, f in enumerate(plan):
        after = plan[(k + 1) % len(plan)].test + plan[(k + 2) % len(plan)].test
        assert f.valid == tuple(sorted(after))
        assert not set(f.train) & (set(f.test) | set(f.valid))
        assert set(f.test) | set(f.valid) | set(f.train) == set(speakers)
    with pytest.raises(ValueError, match="at least 4 speakers"):
        make_speaker_folds(["a", "b", "c"], valid_groups=2)
    with pytest.raises(ValueError, match="valid_groups must be >= 1"):
        make_speaker_folds(speakers, valid_groups=0)


def test_speaker_folds_reject_too_few():
    with pytest.raises(ValueError, match="at least 3 speakers"):
        make_speaker_folds(["a", "b", "a"])
    with pytest.raises(ValueError, match="folds must be between 3"):
        make_speaker_folds(["a", "b", "c", "d"], folds=5)
    with pytest.raises(ValueError, match="folds must be between 3"):
        make_speaker_folds(["a", "b", "c", "d"], folds=2)


def test_multi_speaker_dialogue_is_refused():
    conv = Conversation(id="d0", split="train", speakers=["A", "B"], utterances=["", ""])
    with pytest.raises(MercInputError) as e:
        conversation_speakers(Corpus("x", [conv], ["neu"], source="x.jsonl"))
    assert (e.value.dialogue, e.value.field) == ("d0", "speaker")


def _with_fake_audio(corpus: Corpus) -> Corpus:
    """Audio features whose scale depends on the speaker, to expose any leak of test speakers."""
    convs = []
    for i, c in enumerate(corpus.conversations):
        offset = 1000.0 if c.speakers[0] == "10" else float(int(c.speakers[0]))
        convs.append(replace(c, features={"audio": np.full((1, 4), offset + i, np.float32)}))
    return replace(corpus, conversations=convs)


def test_fold_splits_and_train_only_statistics(emodb_dir):
    from merc.features import FeatureSpec

    corpus = _with_fake_audio(load_emodb(emodb_dir))
    speaker_of = conversation_speakers(corpus)
    spec = FeatureSpec(text=None, audio="external")
    for fold in make_speaker_folds(list(speaker_of.values())):
        prepared = prepare_fold(corpus, spec, fold, speaker_of)
        for split, allowed in (("train", fold.train), ("valid", fold.valid), ("test", fold.test)):
            got = {c.speakers[0] for c in prepared.corpus.split(split)}
            assert got == set(allowed)
        raw_train = np.concatenate([c.features["audio"] for c in corpus.conversations
                                    if speaker_of[c.id] in fold.train])
        np.testing.assert_allclose(prepared.spec.stats["audio"]["mean"], raw_train.mean(0))
        np.testing.assert_allclose(prepared.spec.stats["audio"]["std"], raw_train.std(0),
                                   rtol=1e-6)
        assert prepared.input_dims == {"audio": 4}
    assert spec.stats == {}  # the shared spec is never filled in
    assert {c.split for c in corpus.conversations} == {"train"}  # the input is not modified


def test_no_audio_extractor_is_a_clear_error(emodb_dir):
    data = DataConfig(corpus="emodb", data_dir=str(emodb_dir)).resolved()
    with pytest.raises(MercInputError, match="--audio eGeMAPSv02"):
        extract_features(load_configured(data), data)


# --------------------------------------------------------------------------- metrics


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_uar_is_balanced_accuracy_and_pooled_metrics_match():
    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 0])
    y_pred = np.array([0, 0, 1, 3, 1, 0, 2, 2, 1, 0])  # class 3 never occurs in y_true
    names = ["a", "b", "c", "d"]
    m = classification_metrics(y_true, y_pred, names)
    assert m["uar"] == pytest.approx(100 * balanced_accuracy_score(y_true, y_pred))
    assert m["uar"] == pytest.approx(100 * (3 / 5 + 1 / 2 + 2 / 3) / 3)
    pooled = metrics_from_confusion(m["confusion"])
    for k in ("uar", "wf1", "acc", "macro_f1"):
        assert pooled[k] == pytest.approx(m[k])


# --------------------------------------------------------------------------- end to end


def test_crossval_cli_end_to_end_with_opensmile(emodb_dir, tmp_path, monkeypatch, capsys):
    fitted_on: list[set[str]] = []
    real_fit = prepare.fit_stats

    def spy(corpus, modalities):
        fitted_on.append({c.speakers[0] for c in corpus.split("train")})
        return real_fit(corpus, modalities)

    monkeypatch.setattr(prepare, "fit_stats", spy)
    out = tmp_path / "cv"
    rc = main(["crossval", "--corpus", "emodb", "--data-dir", str(emodb_dir),
               "--modalities", "audio", "--audio", "eGeMAPSv02", "--out", str(out),
               "--no-progress", "train.max_epochs=3", "train.batch_size=8", "train.lr=0.01",
               "model.hidden_size=32"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert printed.count("fold ") >= 4 and "UAR" in printed and "over folds" in printed

    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "mlp" and summary["modalities"] == ["audio"]
    assert summary["protocol"] == "leave-one-speaker-out" and summary["n_folds"] == 4
    assert summary["chance_uar"] == pytest.approx(100 / 7)
    assert summary["feature_spec"]["audio"] == "eGeMAPSv02"
    assert len(summary["test"]["uar"]["per_fold"]) == 4
    assert 0 <= summary["test"]["uar"]["mean"] <= 100
    assert summary["pooled"]["uar"]["per_seed"][0] == pytest.approx(
        metrics_from_confusion(summary["per_seed"][0]["pooled_confusion"])["uar"])
    assert np.sum(summary["per_seed"][0]["pooled_confusion"]) == 24  # each wav tested once
    # Calibration pooled over the folds: every test wav once, the ECE that of the union.
    pooled_cal = summary["per_seed"][0]["calibration"]["test"]
    assert sum(b["count"] for b in pooled_cal["reliability_after"]) == 24
    fold_tables = [json.loads((out / f"fold_{k}" / "seed_0" / "metrics.json").read_text())
                   ["calibration"]["test"]["reliability_after"] for k in range(4)]
    assert pooled_cal["ece_after"] == pytest.approx(pool_reliability(fold_tables)["ece"])
    assert summary["calibration"]["test_ece_after"]["mean"] == pytest.approx(pooled_cal["ece_after"])
    assert 0 < summary["calibration"]["test_ece_floor_after"]["mean"] < 1
    assert "test ECE pooled over the folds" in printed

    # Normalisation statistics came from each fold's train speakers, never valid/test.
    assert fitted_on == [set(f["train_speakers"]) for f in summary["folds"]]
    for f in summary["folds"]:
        fold_dir = out / f"fold_{f['fold']}"
        info = json.loads((fold_dir / "fold.json").read_text())
        assert not set(info["test_speakers"]) & set(info["train_speakers"] + info["valid_speakers"])
        assert info["utterances"]["test"] == 6
        metrics = json.loads((fold_dir / "seed_0" / "metrics.json").read_text())
        assert metrics["test"]["uar"] == pytest.approx(f["test"]["uar"])
        assert (fold_dir / "seed_0" / "best.ckpt").exists()
