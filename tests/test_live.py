"""The causal (live) Broad Mamba: no prediction reads ahead, and stepping utterance by utterance
from a fixed-size state equals the offline forward pass."""

from __future__ import annotations

import pytest
import torch

from merc.config import ModelConfig  # noqa: F401  (registers the config machinery)
from merc.data.collate import Batch
from merc.models import create_model
from merc.modules.ssm import BiSSMConv


def _batch(features: dict[str, torch.Tensor]) -> Batch:
    L = next(iter(features.values())).shape[1]
    return Batch(features=features, mask=torch.ones(1, L, dtype=torch.bool),
                 labels=torch.full((1, L), -100), speakers=torch.zeros(1, L, dtype=torch.long))


def _model(dims: dict[str, int], **options):
    torch.manual_seed(0)
    return create_model("broad-mamba", dims, 4, causal=True, **options).eval()


def test_causal_ssm_matches_its_recurrence_and_steps():
    torch.manual_seed(1)
    ssm = BiSSMConv(5, 3, bidirectional=False)
    x = torch.randn(2, 7, 5)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 5:] = False
    torch.testing.assert_close(ssm(x, mask), ssm.reference(x, mask), atol=1e-5, rtol=1e-4)
    h = ssm.init_state(1)
    steps = []
    for t in range(7):
        y, h = ssm.step(x[:1, t], h)
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), ssm(x[:1]), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="causal"):
        BiSSMConv(5, 3).step(x[:1, 0], h)


@pytest.mark.parametrize("dims,options", [
    ({"text": 6}, {}),
    ({"text": 6, "audio": 4}, {}),
    ({"text": 6, "audio": 4}, {"conv_kernel": 3}),
    ({"text": 6, "audio": 4}, {"fusion": "concat", "use_bls": False}),
])
def test_streaming_equals_the_causal_model_offline(dims, options):
    model = _model(dims, **options)
    torch.manual_seed(2)
    L = 12
    feats = {m: torch.randn(1, L, d) for m, d in dims.items()}
    offline = model(_batch(feats))
    state = model.init_stream()
    logits, weights = [], []
    for t in range(L):
        out, w = model.step({m: f[:, t] for m, f in feats.items()}, state)
        logits.append(out)
        weights.append(w)
    torch.testing.assert_close(torch.stack(logits, 1), offline.logits, atol=1e-5, rtol=1e-5)
    if offline.modality_weights is not None:
        for m in dims:
            got = torch.stack([w[m] for w in weights], 1)
            torch.testing.assert_close(got, offline.modality_weights[m], atol=1e-5, rtol=1e-5)
    assert state["t"] == L and all(t.shape[-1] == model.config.conv_kernel - 1
                                   for t in state["tail"].values())


@pytest.mark.parametrize("dims", [{"text": 6}, {"text": 6, "audio": 4}])
def test_the_causal_bc_lstm_streams_like_its_offline_pass(dims):
    torch.manual_seed(0)
    model = create_model("bc-lstm", dims, 4, causal=True, hidden_size=8, num_layers=2).eval()
    feats = {m: torch.randn(1, 9, d) for m, d in dims.items()}
    offline = model(_batch(feats)).logits
    state = model.init_stream()
    steps = [model.step({m: f[:, t] for m, f in feats.items()}, state)[0] for t in range(9)]
    torch.testing.assert_close(torch.stack(steps, 1), offline, atol=1e-5, rtol=1e-5)
    assert state["t"] == 9 and state["hc"][0].shape == (2, 1, 8)
    with pytest.raises(ValueError, match="causal"):
        create_model("bc-lstm", dims, 4).init_stream()


def test_a_later_utterance_never_changes_an_earlier_prediction():
    dims = {"text": 6, "audio": 4}
    model = _model(dims, conv_kernel=3)
    torch.manual_seed(3)
    feats = {m: torch.randn(1, 10, d) for m, d in dims.items()}
    before = model(_batch(feats)).logits
    for m in feats:
        feats[m][:, 6:] = torch.randn(1, 4, dims[m])
    after = model(_batch(feats)).logits
    torch.testing.assert_close(after[:, :6], before[:, :6])
    assert not torch.allclose(after[:, 6:], before[:, 6:])


def test_the_bidirectional_model_refuses_to_stream():
    model = create_model("broad-mamba", {"text": 6}, 4)
    with pytest.raises(ValueError, match="causal"):
        model.init_stream()


@pytest.fixture(scope="module")
def live_runs(tmp_path_factory):
    """Two tiny causal Broad Mamba runs on a corpus with transcripts and wavs: text only
    (bundled MiniLM) and text + audio (openSMILE eGeMAPS)."""
    import json

    from helpers import write_wav

    from merc.config import ExperimentConfig
    from merc.training.experiment import run_experiment

    root = tmp_path_factory.mktemp("live")
    (root / "wav").mkdir()
    words = {"joy": "we won, wonderful", "anger": "how dare you, furious",
             "neutral": "the bus leaves at nine"}
    labels = sorted(words)
    lines = []
    for d, split in enumerate(["train"] * 6 + ["valid"] * 2 + ["test"] * 2):
        utts = []
        for i in range(4):
            lab = labels[(d + i) % 3]
            wav = write_wav(root / "wav" / f"{d}_{i}.wav", 150.0 + 60 * labels.index(lab),
                            seconds=0.6, seed=d * 10 + i)
            utts.append({"speaker": "AB"[i % 2], "text": f"{words[lab]} {i}", "label": lab,
                         "audio": f"wav/{wav.name}"})
        lines.append(json.dumps({"dialogue_id": f"d{d}", "split": split, "utterances": utts}))
    (root / "conversations.jsonl").write_text("\n".join(lines) + "\n")
    runs = {}
    for name, modalities, audio in (("text", ["text"], "external"),
                                    ("text+audio", ["text", "audio"], "eGeMAPSv02")):
        cfg = ExperimentConfig()
        cfg.data.corpus, cfg.data.data_dir = "jsonl", str(root)
        cfg.data.modalities, cfg.data.audio = modalities, audio
        cfg.model = {"name": "broad-mamba", "causal": True, "conv_kernel": 3, "d_model": 16}
        cfg.train.max_epochs, cfg.train.batch_size = 2, 4
        cfg.seeds = [0]
        run_experiment(cfg, root / name, echo=lambda s: None)
        runs[name] = root / name / "seed_0" / "best.ckpt"
    return root, runs


@pytest.mark.parametrize("kind", ["text", "text+audio"])
def test_a_live_session_equals_the_causal_model_offline(live_runs, kind, monkeypatch):
    import json

    import numpy as np

    from merc.predict import Predictor

    root, runs = live_runs
    monkeypatch.chdir(root)        # the records' wav paths are relative to the corpus folder
    predictor = Predictor.from_checkpoint(runs[kind])
    conv = json.loads((root / "conversations.jsonl").read_text().splitlines()[-1])
    records = conv["utterances"] * 3                    # a 12-utterance conversation
    offline = predictor.predict([{k: v for k, v in r.items()} for r in records])
    session = predictor.session()
    live = [session.add(r) for r in records]
    assert session.state["t"] == len(records)
    want = np.array([[u.probs[lab] for lab in offline.labels] for u in offline.utterances])
    got = np.array([[u.probs[lab] for lab in offline.labels] for u in live])
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert [u.id for u in live] == [f"u{i}" for i in range(len(records))]
    if kind == "text+audio":
        assert set(live[0].modality_weights) == {"text", "audio"}


def test_a_bidirectional_checkpoint_refuses_a_session():
    from merc.predict import Predictor
    from merc.errors import MercInputError

    with pytest.raises(MercInputError, match="causal"):
        Predictor.from_checkpoint().session()


def test_merc_predict_live_answers_each_line_as_it_arrives(live_runs, monkeypatch, capsys):
    import io
    import json

    from merc.cli import main

    root, runs = live_runs
    monkeypatch.chdir(root)
    lines = [json.dumps({"speaker": "A", "text": "we won, wonderful"}),
             "{not json", "",
             '{"speaker": "B", "text": "how dare you", "text": "twice"}',
             json.dumps({"speaker": "B", "text": "how dare you, furious"})]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    assert main(["predict", "--live", "--checkpoint", str(runs["text"]),
                 "--on-error", "skip"]) == 0
    cap = capsys.readouterr()
    rows = [json.loads(x) for x in cap.out.splitlines()]
    assert [r["index"] for r in rows] == [0, 1] and [r["id"] for r in rows] == ["u0", "u1"]
    assert "line 2: not JSON" in cap.err and "line 4: key 'text' given twice" in cap.err
    # The same utterances through a session in Python give the same probabilities.
    from merc.predict import Predictor

    session = Predictor.from_checkpoint(runs["text"]).session()
    for r, text in zip(rows, ("we won, wonderful", "how dare you, furious")):
        u = session.add({"speaker": r["speaker"], "text": text})
        assert u.probs == pytest.approx(r["probs"])
    monkeypatch.setattr("sys.stdin", io.StringIO("{not json\n"))
    assert main(["predict", "--live", "--checkpoint", str(runs["text"])]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "line 1" in err


def test_bench_live_writes_both_curves(tmp_path):
    import csv

    from merc.cli import main

    assert main(["bench", "live", "--out", str(tmp_path), "--points", "5,20",
                 "--repeats", "3", "--dim", "8"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "live.csv")))
    assert {(r["method"], r["utterance"]) for r in rows} == {
        (m, n) for m in ("stream", "rerun") for n in ("5", "20")}
    assert all(float(r["ms_median"]) > 0 for r in rows)
    assert "| 20 |" in (tmp_path / "live.md").read_text()


def test_a_past_only_fine_tuned_encoder_streams_and_a_packed_one_is_refused(tmp_path):
    """A merc finetune folder with the window layout and future=0 runs live: each utterance's
    features come from the session's last ``past`` utterances, and the probabilities equal the
    causal model's offline. The same weights in the packed layout are refused."""
    import json
    import shutil

    import numpy as np

    from merc.data import load_corpus
    from merc.data.conversation import ensure_validation_split
    from merc.errors import MercInputError
    from merc.features.spec import FeatureSpec
    from merc.finetune import FinetuneConfig, finetune_encoder
    from merc.predict import Predictor
    from merc.text.input_format import ContextFormat

    from test_finetune import write_text_corpus
    from test_predict import make_checkpoint

    corpus = ensure_validation_split(load_corpus("jsonl", write_text_corpus(tmp_path / "c")),
                                     0.1, 0)
    enc = tmp_path / "enc"
    cfg = FinetuneConfig(context=ContextFormat(past=2, future=0, max_tokens=48,
                                               layout="window"),
                         train_layers=1, max_epochs=1, batch_size=8, accelerator="cpu")
    finetune_encoder(corpus, cfg, enc, echo=lambda s: None)
    ckpt = make_checkpoint(tmp_path / "live.ckpt", FeatureSpec(text=str(enc)), {"text": 384},
                           causal=True, conv_kernel=3)
    predictor = Predictor.from_checkpoint(ckpt)
    records = [{"speaker": "AB"[i % 2], "text": t} for i, t in enumerate(
        ["we won, wonderful", "how dare you", "the bus leaves at nine", "furious, really",
         "what a lovely day", "fine", "no way"])]
    offline = predictor.predict(records)
    session = predictor.session()
    live = [session.add(r) for r in records]
    assert session.window.maxlen == 2                          # the past 2 it reads
    want = np.array([[u.probs[lab] for lab in offline.labels] for u in offline.utterances])
    got = np.array([[u.probs[lab] for lab in offline.labels] for u in live])
    np.testing.assert_allclose(got, want, atol=1e-5)

    packed = tmp_path / "packed"
    shutil.copytree(enc, packed)
    record = json.loads((packed / "merc_encoder.json").read_text())
    record["context"]["layout"] = "packed"
    (packed / "merc_encoder.json").write_text(json.dumps(record))
    ckpt2 = make_checkpoint(tmp_path / "packed.ckpt", FeatureSpec(text=str(packed)),
                            {"text": 384}, causal=True)
    with pytest.raises(MercInputError, match="reads ahead"):
        Predictor.from_checkpoint(ckpt2).session()
