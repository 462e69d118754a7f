"""The pretrained zoo: every model is listed, loads safely, is small, is calibrated, and predicts
the demo conversation (or, for the audio model, a wav) by name."""

from __future__ import annotations

import json

import pytest
import torch

from merc.cli import main
from merc.errors import MercInputError
from merc.predict import Predictor
from merc.pretrained import (DEFAULT_MODEL, bundled_checkpoint, example_conversation,
                             get_pretrained, list_pretrained, pretrained_names)

ZOO = list_pretrained()
MAX_BYTES = {None: 5 * 1024 * 1024, "mpnet": 8 * 1024 * 1024}
REQUIRED = ("name", "summary", "model", "labels", "modalities", "data", "licence", "limits",
            "protocol", "valid", "test", "shipped", "rebuild", "calibration")


def test_the_default_model_is_in_the_zoo_and_listed_first():
    assert ZOO and ZOO[0].name == DEFAULT_MODEL
    assert bundled_checkpoint() == get_pretrained(DEFAULT_MODEL).checkpoint


def test_merc_models_pretrained_lists_every_model(capsys):
    assert main(["models", "--pretrained"]) == 0
    out = capsys.readouterr().out
    for model in ZOO:
        assert model.name in out
    assert main(["models", "--pretrained", "--json"]) == 0
    cards = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in cards] == pretrained_names()


@pytest.mark.parametrize("model", ZOO, ids=[m.name for m in ZOO])
def test_card_package_and_calibration(model):
    card = model.card
    missing = [k for k in REQUIRED if k not in card]
    assert not missing, f"{model.name}: card lacks {missing}"
    files = [f for f in model.folder.rglob("*") if f.is_file() and "__pycache__" not in f.parts]
    assert sum(f.stat().st_size for f in files) <= MAX_BYTES[model.needs]
    raw = torch.load(model.checkpoint, map_location="cpu", weights_only=True)
    meta = raw["merc"]
    assert meta["label_names"] == card["labels"]
    # The card's temperature is the one prediction uses, and it lowered the test ECE.
    assert meta["temperature"] == pytest.approx(card["calibration"]["temperature"])
    assert card["calibration"]["test_ece_after"] <= card["calibration"]["test_ece_before"] + 1.0
    assert "licen" in card["licence"].lower() or "gpl" in card["licence"].lower()
    if "audio" in card["modalities"]:
        assert "openSMILE" in card["licence"]
    assert (model.folder / "MODEL_CARD.md").read_text().startswith(f"# Model card: `{model.name}`")
    assert (model.folder / "reliability.png").is_file()


SHARING = [m for m in ZOO if m.card.get("encoder_of")]


@pytest.mark.parametrize("model", SHARING, ids=[m.name for m in SHARING])
def test_a_model_reading_another_models_encoder_points_at_its_adapter(model):
    from merc.checkpoint import load_checkpoint

    owner = get_pretrained(model.card["encoder_of"])
    assert not (model.folder / "encoder").exists()          # shipped once, with its owner
    meta = torch.load(model.checkpoint, map_location="cpu", weights_only=True)["merc"]
    assert meta["feature_spec"]["text"] == f"../{owner.name}/encoder"
    assert (owner.folder / "encoder" / "adapter.safetensors").is_file()
    spec = load_checkpoint(model.checkpoint).feature_spec
    assert spec.text == str((owner.folder / "encoder").resolve())
    assert model.needs == owner.needs


@pytest.mark.parametrize("model", [m for m in ZOO if "text" in m.modalities],
                         ids=[m.name for m in ZOO if "text" in m.modalities])
def test_text_models_predict_the_demo_by_name(model, tmp_path, capsys):
    out = tmp_path / "pred.json"
    args = ["predict", str(example_conversation()), "--checkpoint", model.name, "--out",
            str(out), "--quiet"]
    if model.needs:
        try:
            model.require_available()
        except MercInputError:
            assert main(args) != 0
            err = capsys.readouterr().err.strip()
            assert "make mpnet" in err and len(err.splitlines()) == 1
            return
    assert main(args) == 0
    pred = json.loads(out.read_text())
    assert pred["labels"] == model.labels and len(pred["utterances"]) > 3
    probs = Predictor.from_pretrained(model.name).predict(example_conversation())
    assert [u.label for u in probs.utterances] == [u["label"] for u in pred["utterances"]]


@pytest.mark.parametrize("model", [m for m in ZOO if m.modalities == ["audio"]],
                         ids=[m.name for m in ZOO if m.modalities == ["audio"]])
def test_audio_models_predict_a_users_wav_by_name(model, tmp_path):
    from helpers import write_wav

    wav = write_wav(tmp_path / "a.wav", 180.0, seconds=1.5)
    talk = tmp_path / "talk.jsonl"
    talk.write_text(json.dumps({"speaker": "A", "text": "", "audio": str(wav)}) + "\n")
    out = tmp_path / "pred.json"
    assert main(["predict", str(talk), "--checkpoint", model.name, "--out", str(out),
                 "--quiet"]) == 0
    pred = json.loads(out.read_text())
    assert pred["utterances"][0]["label"] in model.labels


def test_a_model_over_a_missing_base_is_refused_with_the_command(monkeypatch, tmp_path):
    monkeypatch.setenv("MERC_MODELS_DIR", str(tmp_path / "nothing"))
    for model in ZOO:
        if model.needs:
            with pytest.raises(MercInputError, match="make mpnet"):
                Predictor.from_pretrained(model.name)


def test_unknown_names_list_the_zoo_and_a_real_path_wins(tmp_path, monkeypatch, capsys):
    with pytest.raises(MercInputError, match=DEFAULT_MODEL):
        Predictor.from_pretrained("no-such-model")
    assert main(["predict", str(example_conversation()), "--checkpoint", "no-such-model",
                 "--out", str(tmp_path / "x.json"), "--quiet"]) != 0
    assert "merc models --pretrained" in capsys.readouterr().err
    # A file named like a zoo model in the working directory is what the user meant.
    monkeypatch.chdir(tmp_path)
    (tmp_path / DEFAULT_MODEL).write_bytes(b"not a checkpoint")
    assert main(["predict", str(example_conversation()), "--checkpoint", DEFAULT_MODEL,
                 "--out", str(tmp_path / "x.json"), "--quiet"]) != 0
    err = capsys.readouterr().err
    assert f"{DEFAULT_MODEL}: " in err and ("refused" in err or "cannot read" in err)


def test_text_encoder_mpnet_names_the_assembled_folder(monkeypatch, tmp_path):
    from merc.text.encoder import TextEncoder

    monkeypatch.setenv("MERC_MODELS_DIR", str(tmp_path))
    with pytest.raises(MercInputError, match="make mpnet"):
        TextEncoder("mpnet")
    (tmp_path / "all-mpnet-base-v2").mkdir()
    (tmp_path / "all-mpnet-base-v2" / "model.safetensors").write_bytes(b"")
    assert TextEncoder("mpnet").settings()["model_dir"] == str(tmp_path / "all-mpnet-base-v2")
