"""``merc bench efficiency`` on a tiny synthetic corpus: columns, counts, FLOPs incl. FFTs."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from helpers import write_generic_corpus

from merc.bench import efficiency
from merc.bench.efficiency import (COLUMNS, bench_prepared, count_flops, run_efficiency_bench,
                                   write_outputs)
from merc.config import ExperimentConfig
from merc.data.collate import collate_dialogues
from merc.training import prepare
from merc.models import count_parameters, create_model, list_models


def _data_config(corpus_dir):
    cfg = ExperimentConfig()
    cfg.data.corpus = "jsonl"
    cfg.data.data_dir = str(corpus_dir)
    cfg.data.modalities = ["text", "audio"]
    cfg.data.text = "external"
    return cfg.data.resolved()


@pytest.fixture
def prepared(tmp_path):
    corpus = write_generic_corpus(tmp_path / "corpus", n_train=6, n_test=3)
    return prepare.prepare_data(_data_config(corpus), progress=False)


def test_bench_prepared_rows_and_files(prepared, tmp_path):
    rows = bench_prepared(prepared, "synthetic", repeats=2, train_repeats=1)
    assert [r["model"] for r in rows] == list_models()
    n_classes = len(prepared.corpus.label_names)
    for r in rows:
        torch.manual_seed(0)
        model = create_model(r["model"], prepared.input_dims, n_classes)
        assert r["params"] == count_parameters(model)
        assert r["flops_per_dialogue"] > 0
        assert r["infer_seconds_test_split"] > 0 and r["train_seconds_per_epoch"] > 0
        assert r["infer_seconds_with_labels"] > 0
        assert r["test_dialogues"] == 3 and r["threads"] == torch.get_num_threads()
    by_model = {r["model"]: r for r in rows}
    # The BiSSM's FFT convolution is counted through the custom formulas, and only there.
    assert by_model["broad-mamba"]["fft_flops_per_dialogue"] > 0
    assert by_model["bc-lstm"]["fft_flops_per_dialogue"] == 0
    assert by_model["broad-mamba"]["infer_ratio_to_broad_mamba"] == pytest.approx(1.0)

    csv_path, md_path = write_outputs(rows, tmp_path / "out")
    with open(csv_path) as f:
        reader = csv.reader(f)
        header = next(reader)
        body = list(reader)
    assert header[:len(COLUMNS)] == COLUMNS
    assert header[:6] == ["corpus", "model", "params", "flops_per_dialogue",
                          "infer_seconds_test_split", "train_seconds_per_epoch"]
    assert len(body) == len(rows)
    md = md_path.read_text()
    assert "| broad-mamba |" in md and "inference / broad-mamba" in md
    assert "x bc-lstm's" in md and "x transformer's" in md


def test_fft_formula_is_applied():
    class Spectral(torch.nn.Module):
        def forward(self, x):
            return torch.fft.irfft(torch.fft.rfft(x, n=16), n=16)

    x = torch.randn(2, 3, 16)
    total, per_op = count_flops(Spectral(), x)
    one = 2.5 * 16 * math.log2(16) * 2 * 3        # per real transform x 6 transforms
    assert per_op["aten._fft_r2c"] == pytest.approx(one)
    assert per_op["aten._fft_c2r"] == pytest.approx(one)
    assert total == pytest.approx(2 * one)

    class Complex(torch.nn.Module):
        def forward(self, z):
            return torch.fft.fft(z)

    _, per_op = count_flops(Complex(), torch.randn(4, 8, dtype=torch.complex64))
    assert per_op["aten._fft_c2c"] == pytest.approx(5 * 8 * 3 * 4)


def _dialogue(length=12, dims=None):
    dims = dims or {"text": 6, "audio": 3}
    item = {"id": "d", "features": {m: torch.randn(length, d) for m, d in dims.items()},
            "present": {m: torch.ones(length, dtype=torch.bool) for m in dims},
            "speakers": torch.zeros(length, dtype=torch.long),
            "labels": torch.full((length,), -100, dtype=torch.long)}
    return collate_dialogues([item])


def test_recurrence_and_attention_are_counted():
    """oneDNN's LSTM and the Transformer fast path would count zero without countable_kernels."""
    batch = _dialogue()
    L = 12
    lstm = create_model("bc-lstm", {"text": 6, "audio": 3}, 3, hidden_size=8)
    total, _ = count_flops(lstm, batch)
    recurrence = 2 * L * 2 * 4 * 8 * (8 + 8)        # 2 directions, 4 gates, input + hidden
    assert total >= recurrence
    tr = create_model("transformer", {"text": 6, "audio": 3}, 3)
    _, per_op = count_flops(tr, batch)
    assert any("attention" in op for op in per_op)
    assert torch.backends.mha.get_fastpath_enabled()   # restored afterwards


def test_run_efficiency_bench_writes_outputs(tmp_path, monkeypatch):
    corpus = write_generic_corpus(tmp_path / "corpus", n_train=4, n_test=2)
    real_prepare = prepare.prepare_data

    def prepare_external_text(data, **kw):  # skip the sentence encoder: external text vectors
        data.modalities, data.text = ["text", "audio"], "external"
        return real_prepare(data, **kw)

    monkeypatch.setattr(prepare, "prepare_data", prepare_external_text)
    lines = []
    rows = run_efficiency_bench(data_dir=corpus, out_dir=tmp_path / "out", corpora=["jsonl"],
                                models=["mlp", "broad-mamba"], repeats=1, threads=1,
                                echo=lines.append)
    assert [r["model"] for r in rows] == ["mlp", "broad-mamba"]
    assert all(r["threads"] == 1 for r in rows)
    assert (tmp_path / "out" / "efficiency.csv").exists()
    assert (tmp_path / "out" / "efficiency.md").exists()
    assert any("wrote" in s for s in lines)
    assert efficiency.EVAL_BATCH_SIZE == 16


def test_ratios_are_taken_pair_by_pair_within_a_round():
    """Issue 14, defect 8: two identical runs gave broad-mamba/bc-LSTM 2.91x and 1.19x, each a
    ratio of medians measured minutes apart. Under a machine load that changes between rounds,
    the per-round ratio stays the true one and the spread says how stable it was."""
    from merc.bench.efficiency import interleaved, pairwise_ratio

    cost = {"a": 1.0, "b": 2.0, "c": 3.0}
    calls: list[str] = []

    def measure(name):  # the load jumps from round to round (3 calls per round)
        calls.append(name)
        return cost[name] * (1 + 10 * ((len(calls) - 1) // 3))

    times = interleaved(list(cost), 4, measure)
    assert calls[:3] == ["a", "b", "c"] and calls[3:6] == ["b", "c", "a"]  # order rotates
    assert all(len(v) == 4 for v in times.values())
    assert pairwise_ratio(times["b"], times["a"]) == pytest.approx((2.0, 2.0, 2.0))
    assert pairwise_ratio(times["a"], [0.0] * 4) is None


def test_every_timing_reports_its_spread(prepared, tmp_path):
    rows = bench_prepared(prepared, "synthetic", models=["mlp", "broad-mamba"], repeats=3,
                          train_repeats=2)
    for r in rows:
        for key, prefix in (("infer_seconds_test_split", "infer_seconds"),
                            ("infer_seconds_with_labels", "infer_seconds_with_labels"),
                            ("train_seconds_per_epoch", "train_seconds"),
                            ("infer_ratio_to_broad_mamba", "infer_ratio")):
            assert r[prefix + "_min"] <= r[key] <= r[prefix + "_max"], key
        assert r["repeats"] == 3 and r["train_repeats"] == 2
    ref = next(r for r in rows if r["model"] == "broad-mamba")
    assert ref["infer_ratio_min"] == ref["infer_ratio_max"] == pytest.approx(1.0)
    csv_path, md_path = write_outputs(rows, tmp_path / "out")
    with open(csv_path) as f:
        header = next(csv.reader(f))
    assert {"infer_seconds_min", "infer_seconds_max", "infer_ratio_min", "infer_ratio_max",
            "train_seconds_min", "train_seconds_max"} <= set(header)
    assert "median [min–max]" in md_path.read_text()
