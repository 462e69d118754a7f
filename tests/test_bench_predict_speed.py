"""``merc bench predict`` reports every measure with its spread (issue 14, defect 8), checked
with the fresh processes replaced by fakes (the real ones load PyTorch and the model)."""

from __future__ import annotations

import csv

from merc.bench import predict_speed


def test_every_measure_has_median_min_max(tmp_path, monkeypatch):
    walls = iter([9.0, 2.0, 4.0, 3.0])  # the first is the untimed cache warm-up
    loads = iter([1.0, 3.0, 2.0])
    monkeypatch.setattr(predict_speed, "_whole_command", lambda cmd, env: next(walls))
    monkeypatch.setattr(predict_speed, "_phases", lambda conv, ckpt, env: {
        "imports": next(loads), "load_checkpoint": 0.5, "threads": 2})
    rows = predict_speed.run_predict_bench(tmp_path, n_utterances=5, repeats=3,
                                           echo=lambda _: None)
    by = {r["measure"]: r for r in rows}
    assert (by["whole command"]["seconds"], by["whole command"]["seconds_min"],
            by["whole command"]["seconds_max"]) == (3.0, 2.0, 4.0)
    assert (by["imports"]["seconds"], by["imports"]["seconds_min"],
            by["imports"]["seconds_max"]) == (2.0, 1.0, 3.0)
    assert all(r["repeats"] == 3 for r in rows)
    with open(tmp_path / "predict_speed.csv") as f:
        header = next(csv.reader(f))
    assert header[:4] == ["measure", "seconds", "seconds_min", "seconds_max"]
    assert "| whole command | 3.00 | 2.00–4.00 |" in (tmp_path / "predict_speed.md").read_text()
