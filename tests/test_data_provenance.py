"""Runs, evaluations and comparisons say which data they looked at (issue 14, defect 4)."""

from __future__ import annotations

import json

import pytest
import torch

from merc.cli import main
from helpers import write_generic_corpus


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One seed of a tiny MLP, 2 epochs: a run folder and the corpus it was trained on."""
    root = tmp_path_factory.mktemp("prov")
    corpus = write_generic_corpus(root / "corpus", n_train=10, n_test=4)
    run = root / "run"
    assert main(["train", "--corpus", "jsonl", "--data-dir", str(corpus), "--modalities",
                 "text,audio", "--text-encoder", "external", "--model", "mlp", "--out", str(run),
                 "--cache-dir", str(root / "cache"), "train.max_epochs=2",
                 "train.batch_size=4", "model.hidden_size=8"]) == 0
    return corpus, run


def _rewrite(src, dst, edit):
    """A copy of the corpus folder ``src`` with each dialogue record passed through ``edit``."""
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    lines = [edit(json.loads(x)) for x in (src / "conversations.jsonl").read_text().splitlines()]
    (dst / "conversations.jsonl").write_text(
        "\n".join(json.dumps(x) for x in lines) + "\n")
    return dst


def test_run_records_data_block(trained):
    corpus, run = trained
    summary = json.loads((run / "summary.json").read_text())
    data = summary["data"]
    assert data["corpus"] == summary["corpus"]
    assert data["splits"]["test"] == {"dialogues": 4, "utterances": data["splits"]["test"][
        "utterances"], "fingerprint": data["splits"]["test"]["fingerprint"]}
    assert data["splits"]["train"]["dialogues"] + data["splits"]["valid"]["dialogues"] == 10
    assert len({data["splits"][s]["fingerprint"] for s in ("train", "valid", "test")}) == 3
    assert json.loads((run / "seed_0" / "metrics.json").read_text())["data"] == data
    meta = torch.load(run / "seed_0" / "best.ckpt", weights_only=True)["merc"]
    assert meta["data"] == data


def test_evaluate_refuses_swapped_splits(trained, tmp_path, capsys):
    corpus, run = trained
    swap = {"train": "test", "test": "train"}
    swapped = _rewrite(corpus, tmp_path / "swapped", lambda d: {**d, "split": swap[d["split"]]})
    code = main(["evaluate", "--checkpoint", str(run / "seed_0" / "best.ckpt"),
                 "--data-dir", str(swapped)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "training dialogues" in err


def test_evaluate_warns_when_the_split_differs(trained, tmp_path, capsys):
    corpus, run = trained
    test_ids = [json.loads(x)["dialogue_id"] for x in
                (corpus / "conversations.jsonl").read_text().splitlines()
                if json.loads(x)["split"] == "test"]

    def relabel(d):  # one test label corrected after training: not the same test split
        if d["dialogue_id"] == test_ids[0]:
            u = d["utterances"][0]
            u["label"] = "neu" if u["label"] != "neu" else "ang"
        return d

    fewer = _rewrite(corpus, tmp_path / "relabelled", relabel)
    out = tmp_path / "ev.json"
    assert main(["evaluate", "--checkpoint", str(run / "seed_0" / "best.ckpt"),
                 "--data-dir", str(fewer), "--out", str(out)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "warning: the test split differs" in err[0]
    ev = json.loads(out.read_text())
    assert ev["data"]["dialogues"] == 4 and ev["data"]["matches_training"] is False
    # The data it was trained on: no line at all, and the record says so.
    assert main(["evaluate", "--checkpoint", str(run / "seed_0" / "best.ckpt"),
                 "--out", str(out)]) == 0
    assert capsys.readouterr().err == ""
    assert json.loads(out.read_text())["data"]["matches_training"] is True


def test_old_checkpoint_without_data_block_still_evaluates(trained, tmp_path, capsys):
    corpus, run = trained
    raw = torch.load(run / "seed_0" / "best.ckpt", weights_only=True)
    del raw["merc"]["data"]
    old = tmp_path / "old.ckpt"
    torch.save(raw, old)
    assert main(["evaluate", "--checkpoint", str(old)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "predates data fingerprints" in err[0]


def _summary(path, corpus="meld", seeds=(0, 1, 2), wf1=(60.0, 62.0, 64.0), test_fp="aaaa",
             data=True):
    path.mkdir()
    s = {"model": "m", "corpus": corpus, "seeds": list(seeds),
         "test": {"wf1": {"mean": sum(wf1) / len(wf1), "std": 1.0, "per_seed": list(wf1)}}}
    if data:
        s["data"] = {"corpus": corpus, "splits": {
            sp: {"dialogues": 1, "utterances": 2, "fingerprint": test_fp if sp == "test" else sp}
            for sp in ("train", "valid", "test")}}
    (path / "summary.json").write_text(json.dumps(s))
    return str(path)


def test_compare_refuses_other_corpora(tmp_path, capsys):
    a = _summary(tmp_path / "a")
    assert main(["compare", a, _summary(tmp_path / "b", corpus="iemocap")]) == 2
    assert "different corpora" in capsys.readouterr().err
    assert main(["compare", a, _summary(tmp_path / "c", test_fp="bbbb")]) == 2
    err = capsys.readouterr().err.strip()
    assert "test splits differ" in err and "\n" not in err


def test_compare_reports_both_means_over_shared_seeds(tmp_path, capsys):
    a = _summary(tmp_path / "a", seeds=(0, 1, 2), wf1=(60.0, 62.0, 70.0))
    b = _summary(tmp_path / "b", seeds=(0, 1), wf1=(59.0, 60.5), data=False)
    assert main(["compare", a, b]) == 0
    captured = capsys.readouterr()
    assert "fingerprint could not be checked" in captured.err
    lines = captured.out.splitlines()
    assert "3 seed(s) [0, 1, 2]" in lines[0] and "61.00 over the 2 shared seed(s)" in lines[0]
    assert "2 seed(s) [0, 1]" in lines[1] and "59.75 over the 2 shared seed(s)" in lines[1]
    assert "paired over seeds [0, 1]" in lines[2] and "+1.25" in lines[2]
