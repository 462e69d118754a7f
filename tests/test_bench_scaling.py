"""``merc bench scaling`` at tiny lengths: outputs, statuses, the budget-stop rule."""

from __future__ import annotations

import csv

import pytest

from merc.bench.scaling import (COLUMNS, METHODS, classify, estimate_memory_mb, loglog_slope,
                                plan_statuses, run_method, run_point, run_scaling_bench,
                                summarize)


def _read(path):
    with open(path) as f:
        reader = csv.reader(f)
        header = next(reader)
        return header, [dict(zip(header, row)) for row in reader]


def test_all_methods_tiny_lengths(tmp_path):
    out = tmp_path / "out"
    rows = run_scaling_bench(out_dir=out, min_log2=3, max_log2=5, width=16, device="cpu",
                             isolate=False, echo=lambda s: None)
    assert len(rows) == len(METHODS) * 3
    header, body = _read(out / "scaling.csv")
    assert header[:5] == ["method", "length", "seconds", "peak_mb", "status"] == COLUMNS
    assert {r["method"] for r in body} == set(METHODS)
    assert {int(r["length"]) for r in body} == {8, 16, 32}
    for r in body:
        assert r["status"] == "ok", r
        assert float(r["seconds"]) > 0 and float(r["peak_mb"]) >= 0
        assert r["device"] == "cpu" and r["width"] == "16"
    assert (out / "scaling.png").stat().st_size > 0
    md = (out / "scaling.md").read_text()
    assert "| bissm | 8 |" in md and "slope" in md


def test_time_budget_stops_the_method(tmp_path):
    rows = run_scaling_bench(out_dir=tmp_path, min_log2=3, max_log2=5, width=8,
                             time_budget_s=0.0, methods=["bissm", "lstm"], device="cpu",
                             isolate=False, echo=lambda s: None)
    for method in ("bissm", "lstm"):
        statuses = [r["status"] for r in rows if r["method"] == method]
        assert statuses == ["over_time_budget", "skipped_after_budget", "skipped_after_budget"]


def test_attention_memory_estimate_skips_without_running():
    # 1e-6 GiB ~ 1 KiB: attention weights of L = 64 (64 KiB) are clearly over it.
    rows = run_method("attention", [64, 128], 8, device="cpu", time_budget_s=10,
                      memory_budget_gb=1e-6, isolate=False)
    assert rows[0]["status"].startswith("over_memory_budget (estimated")
    assert rows[0]["seconds"] is None
    assert rows[1]["status"] == "skipped_after_budget"
    assert estimate_memory_mb("attention", 1024, 128) == pytest.approx(1024 ** 2 * 4 * 4 / 2**20)
    assert estimate_memory_mb("bissm", 1024, 128) is None


def test_stop_rule_and_classification():
    assert plan_statuses(["ok", "ok", "over_time_budget", "ok", "ok"]) == [
        "ok", "ok", "over_time_budget", "skipped_after_budget", "skipped_after_budget"]
    assert plan_statuses(["ok", "error: boom", "ok"])[-1] == "skipped_after_budget"
    assert classify({"seconds": 2.0, "peak_mb": 1.0}, 1.0, 100) == "over_time_budget"
    assert classify({"seconds": 0.5, "peak_mb": 200.0}, 1.0, 100) == "over_memory_budget"
    assert classify({"seconds": 0.5, "peak_mb": 1.0}, 1.0, 100) == "ok"
    assert classify({"timeout": True}, 1.0, 100, 63).startswith("over_time_budget")
    assert classify({"signal": 9}, 1.0, 100) == "killed (signal 9)"
    assert classify({"error": "RuntimeError: can't allocate memory", "oom": True}, 1, 100) == (
        "over_memory_budget")
    assert classify({"error": "ValueError: bad\nsecond line"}, 1, 100) == (
        "error: ValueError: bad second line")


def test_summary_ratio_and_slope():
    rows = [{"method": m, "length": n, "seconds": s, "status": st, "device": "cpu"}
            for m, n, s, st in [("bissm", 4096, 0.1, "ok"), ("bissm", 8192, 0.2, "ok"),
                                ("bissm", 16384, 0.4, "ok"), ("bissm", 32768, 0.8, "ok"),
                                ("attention", 16384, 10.0, "ok")]]
    s = summarize(rows)
    assert s["ratio"] == pytest.approx(25.0)
    assert s["bissm_slope"] == pytest.approx(1.0)
    assert s["bissm_max_ok"] == 32768
    rows[-1].update(seconds=None, status="over_time_budget")
    assert "attention exceeded the budget" in summarize(rows)["ratio_note"]
    assert loglog_slope([1, 2, 4], [1, 4, 16]) == pytest.approx(2.0)


def test_isolated_child_measures_one_point():
    """The default path: one fresh process per point, peak memory from its own VmHWM."""
    result = run_point("bissm", 16, 8, device="cpu", memory_limit=2 * 2**30, predicted_s=None,
                       timeout_s=120, isolate=True)
    assert "error" not in result, result
    assert result["seconds"] > 0 and result["peak_mb"] >= 0 and result["repeats"] == 5
    assert classify(result, 60, 2048) == "ok"


def test_timings_report_their_spread():
    """Issue 14, defect 8: a point reports the min and max of its timed forwards beside the
    median, and the attention/BiSSM ratio says how far the repeats let it move."""
    from merc.bench.scaling import format_table, measure_point

    point = measure_point("bissm", 16, 8)
    assert point["seconds_min"] <= point["seconds"] <= point["seconds_max"]
    rows = [{"method": "bissm", "length": 16384, "seconds": 0.4, "seconds_min": 0.3,
             "seconds_max": 0.5, "status": "ok", "device": "cpu"},
            {"method": "attention", "length": 16384, "seconds": 10.0, "seconds_min": 9.0,
             "seconds_max": 12.0, "status": "ok", "device": "cpu"}]
    s = summarize(rows)
    assert s["ratio"] == pytest.approx(25.0)
    assert s["ratio_range"] == pytest.approx((18.0, 40.0))
    assert "18.0x–40.0x over the repeats" in s["ratio_note"]
    assert "| 0.3–0.5 |" in format_table(rows, markdown=True)
