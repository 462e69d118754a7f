"""Temperature scaling and ECE (merc.calibration), fitted by merc train and used by prediction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from merc.calibration import (calibration_report, ece_floor, expected_calibration_error,
                              fit_temperature, plot_reliability, pool_reliability, reliability,
                              softmax)
from merc.checkpoint import load_checkpoint
from merc.errors import MercInputError


def _sampled(temperature: float, n: int = 20000, c: int = 5, seed: int = 0):
    """Logits and labels drawn from softmax(logits / temperature): that T is the true one."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=3.0, size=(n, c))
    p = softmax(logits, temperature)
    labels = np.array([rng.choice(c, p=row) for row in p])
    return logits, labels


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_the_generating_temperature(true_t):
    logits, labels = _sampled(true_t)
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.06)


def test_scaling_lowers_ece_and_keeps_the_argmax():
    logits, labels = _sampled(2.0, seed=1)
    t = fit_temperature(logits, labels)
    report = calibration_report(t, logits, labels)
    assert report["ece_before"] > 0.1 > 0.02 > report["ece_after"]
    assert report["nll_after"] < report["nll_before"]
    assert (softmax(logits, t).argmax(-1) == softmax(logits).argmax(-1)).all()


def test_ece_by_hand():
    # Confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.55 (right), 15 bins.
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.45, 0.55]])
    labels = np.array([0, 1, 1, 1])
    # bin (0.8667, 0.9333]: conf 0.9, acc 0.5 -> 2/4 * 0.4; bin (0.5333, 0.6]: conf 0.6 and 0.55
    # both right: conf 0.575, acc 1 -> 2/4 * 0.425.
    assert expected_calibration_error(probs, labels) == pytest.approx(0.5 * 0.4 + 0.5 * 0.425)
    table = reliability(probs, labels)
    assert sum(b["count"] for b in table["bins"]) == 4 and len(table["bins"]) == 15
    assert [b for b in table["bins"] if b["count"] == 0][0]["accuracy"] is None


def test_pooled_tables_equal_the_table_of_the_pooled_predictions():
    logits, labels = _sampled(1.5, n=3000, seed=2)
    probs = softmax(logits)
    parts = [reliability(probs[i::3], labels[i::3])["bins"] for i in range(3)]
    pooled, whole = pool_reliability(parts), reliability(probs, labels)
    assert pooled["ece"] == pytest.approx(whole["ece"], abs=1e-12)
    for p, w in zip(pooled["bins"], whole["bins"]):
        assert p["count"] == w["count"]
        if w["count"]:
            assert p["confidence"] == pytest.approx(w["confidence"])
            assert p["accuracy"] == pytest.approx(w["accuracy"])
    with pytest.raises(ValueError, match="bin edges"):
        pool_reliability([parts[0], reliability(probs, labels, n_bins=10)["bins"]])


@pytest.mark.parametrize("n", [50, 500])
def test_ece_floor_is_what_a_calibrated_model_shows_by_sampling_alone(n):
    # Labels drawn from the model's own probabilities: calibrated by construction, so its mean
    # ECE over many draws is the floor (and shrinks with the number of predictions).
    rng = np.random.default_rng(3)
    logits = rng.normal(scale=2.0, size=(n, 7))
    probs = softmax(logits)
    eces, floors = [], []
    for _ in range(400):
        labels = np.array([rng.choice(7, p=row) for row in probs])
        table = reliability(probs, labels)
        eces.append(table["ece"])
        floors.append(ece_floor(table["bins"]))
    assert np.mean(floors) == pytest.approx(np.mean(eces), rel=0.12)
    assert (0.1 < np.mean(floors) < 0.2) if n == 50 else (0.03 < np.mean(floors) < 0.07)


def test_reliability_diagram_is_written(tmp_path):
    logits, labels = _sampled(2.0, n=500)
    report = calibration_report(fit_temperature(logits, labels), logits, labels)
    path = plot_reliability(report, tmp_path / "rel.png", title="toy")
    assert path.stat().st_size > 5000 and path.read_bytes()[:4] == b"\x89PNG"


def _config(corpus_dir, calibrate=True):
    from merc.config import ExperimentConfig

    cfg = ExperimentConfig()
    cfg.data.corpus, cfg.data.data_dir = "jsonl", str(corpus_dir)
    cfg.data.modalities, cfg.data.text = ["text", "audio"], "external"
    cfg.model = {"name": "bc-lstm", "hidden_size": 16}
    cfg.train.max_epochs, cfg.train.patience, cfg.train.batch_size = 6, 3, 4
    cfg.train.lr, cfg.train.calibrate = 1e-2, calibrate
    cfg.seeds = [0]
    return cfg


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory):
    """One tiny calibrated run (seed 0), trained once for the module."""
    from helpers import write_generic_corpus

    from merc.training.experiment import run_experiment

    root = tmp_path_factory.mktemp("calibrated")
    summary = run_experiment(_config(write_generic_corpus(root / "corpus")), root / "run",
                             echo=lambda s: None)
    return root / "run", summary


def test_train_fits_the_temperature_on_validation_and_prediction_uses_it(calibrated_run,
                                                                         tmp_path):
    from merc.training.evaluate import evaluate_checkpoint
    from merc.training.evaluate import prepare_for_checkpoint
    from merc.training.loop import evaluate
    from merc.training.prepare import make_loader

    run, summary = calibrated_run
    metrics = json.loads((run / "seed_0" / "metrics.json").read_text())
    cal = metrics["calibration"]
    ckpt = run / "seed_0" / "best.ckpt"
    loaded = load_checkpoint(ckpt)
    assert loaded.temperature == pytest.approx(cal["temperature"]) and cal["bins"] == 15
    assert (run / "seed_0" / "reliability.png").stat().st_size > 5000
    assert set(summary["calibration"]) >= {"temperature", "test_ece_before", "test_ece_after"}
    # The stored temperature is the NLL optimum on the validation split's logits, not test's.
    prepared = prepare_for_checkpoint(loaded)
    valid = evaluate(loaded.model, make_loader(prepared, "valid", 4))
    assert cal["temperature"] == pytest.approx(fit_temperature(valid.logits, valid.y_true),
                                               rel=1e-4)
    test = evaluate(loaded.model, make_loader(prepared, "test", 4))
    assert cal["test"]["ece_after"] == pytest.approx(
        expected_calibration_error(softmax(test.logits, cal["temperature"]), test.y_true))
    # Prediction (the shared batch_predictions, here through evaluate --predictions) divides
    # the logits by it.
    raw = torch.load(ckpt, weights_only=True)
    assert raw["merc"]["temperature"] == pytest.approx(cal["temperature"])
    out = tmp_path / "pred.jsonl"
    evaluate_checkpoint(ckpt, split="test", predictions=out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    got = np.array([[u["probs"][lab] for lab in rows[0]["labels"]]
                    for r in rows for u in r["utterances"]])
    np.testing.assert_allclose(got, softmax(test.logits, cal["temperature"]), atol=1e-5)


def test_calibrate_false_keeps_the_raw_softmax(generic_corpus, tmp_path):
    from merc.training.experiment import run_experiment

    summary = run_experiment(_config(generic_corpus, calibrate=False), tmp_path / "run",
                             echo=lambda s: None)
    assert "calibration" not in summary
    assert load_checkpoint(tmp_path / "run" / "seed_0" / "best.ckpt").temperature == 1.0


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), "2", True])
def test_a_bad_stored_temperature_is_one_line(calibrated_run, tmp_path, bad):
    raw = torch.load(calibrated_run[0] / "seed_0" / "best.ckpt", weights_only=True)
    ckpt = tmp_path / "edited.ckpt"
    raw["merc"]["temperature"] = bad
    torch.save(raw, ckpt)
    with pytest.raises(MercInputError, match="merc.temperature"):
        load_checkpoint(ckpt)
