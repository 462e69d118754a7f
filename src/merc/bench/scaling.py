"""``merc bench scaling``: forward time and peak memory of context layers versus dialogue length.

Four context layers of the same width ``W`` (channels in = channels out) read one sequence
``x`` of shape ``(1, L, W)`` (batch 1, ``L`` utterances, float32), with no padding mask:

``bissm``
    :class:`merc.modules.ssm.BiSSMConv` ``(W, N=16)``: Eq. 5 kernels plus FFT convolution,
    ``O(W N L + W L log L)``.
``selective``
    :class:`merc.modules.ssm.BiSelectiveScan` ``(W, N=16)``; on CPU its pure-PyTorch reference
    scan, a Python loop over ``L`` (slow by construction: the time budget stops it).
``attention``
    One ``nn.TransformerEncoderLayer(W, 4 heads, 2W feed-forward, batch_first=True)``: full
    self-attention, ``O(L^2 W)`` time; in eval mode PyTorch's fused path materialises the
    ``(heads, L, L)`` attention weights on CPU, ``O(L^2)`` memory.
``lstm``
    ``nn.LSTM(W, W // 2, bidirectional=True)`` (output width ``W``), ``O(L W^2)``.

Every layer runs in eval mode under ``torch.no_grad()``, on CPU, and also on CUDA when
``device`` is ``auto`` (or ``cuda``) and a GPU is present. The children use PyTorch's default
number of threads; set ``OMP_NUM_THREADS`` (they inherit it) to pin it, e.g. to 1 on a machine
whose cores are busy with other work, where a multi-threaded kernel call can wait a scheduler
time slice for its second thread (tens of milliseconds per call, a floor under short lengths).

How a point ``(method, L)`` is measured. By default in a fresh child process
(``python -m merc.bench.scaling --child``), so that its peak memory is its own: after the
imports, the layer and the input exist, the child reads ``VmRSS`` (the baseline) and caps its
address space (``RLIMIT_AS``) at the current ``VmSize`` plus the memory limit, so an allocation
beyond the limit raises instead of waking the kernel's OOM killer. The memory limit is the
budget, or 85 % of ``MemAvailable`` when that is less, so a point never takes the machine down.
It then runs one untimed warm-up forward (skipped when one forward is predicted to take longer
than :data:`WARMUP_MAX_S`; the prediction extrapolates the method's previous length with its
complexity) and times ``1``-``5`` forwards (:func:`repeats_for`), reporting the median.
``peak_mb`` = (``VmHWM`` at the end - baseline ``VmRSS``) in MiB: the extra resident memory of
the forward passes. On CUDA: ``torch.cuda.max_memory_allocated`` minus the memory allocated
before the forwards, with ``torch.cuda.synchronize()`` around every timing.

Budgets. A method stops at its first point that takes longer than the time budget per forward
(``over_time_budget``), needs more memory than the budget (``over_memory_budget``; for attention
predicted before running when the ``L^2`` weights alone are clearly too big:
``over_memory_budget (estimated ...)``), fails (``error: ...``) or dies by a signal
(``killed (signal N)``); its remaining lengths are ``skipped_after_budget``. A child gets at
most ``3 x time budget + 60`` seconds of wall time.

Outputs in ``out_dir``:

``scaling.csv``
    ``method, length, seconds, peak_mb, status`` (seconds per forward pass, MiB) followed by
    :data:`EXTRA_COLUMNS` (``device``, ``width``, repeats, whether a warm-up ran, the memory
    limit and estimate, the child's wall time). Empty ``seconds``/``peak_mb`` when not measured.
``scaling.png``
    Seconds per forward versus ``L`` on log-log axes, one line per (method, device), with
    dashed ``L log L`` and dotted ``L^2`` reference slopes through the longest measured BiSSM
    and attention points. On log-log axes a slope of 1 is linear growth, 2 quadratic.
``scaling.md``
    The table, the same-run ratio attention/BiSSM at ``L = 16384`` (or why it is missing) and
    the fitted log-log slope of BiSSM's time over the upper half of the lengths (``L log L``
    gives a slope a little above 1, ``L^2`` gives 2).
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

METHODS = ("bissm", "selective", "attention", "lstm")
"""Context layers compared, in table order."""

STATE_SIZE = 16
"""SSM state size ``N`` of ``bissm`` and ``selective``."""

ATTENTION_HEADS = 4
"""Heads of the attention layer (its feed-forward width is ``2 W``)."""

COLUMNS = ["method", "length", "seconds", "peak_mb", "status"]
"""Leading columns of ``scaling.csv``, in this order."""

EXTRA_COLUMNS = ["device", "width", "repeats", "warmup", "memory_limit_mb", "estimated_mb",
                 "wall_s", "seconds_min", "seconds_max"]
"""Columns after :data:`COLUMNS`."""

WARMUP_MAX_S = 5.0
"""No warm-up forward when one forward is predicted to take longer than this (seconds)."""

RATIO_LENGTH = 16384
"""Length at which the attention/BiSSM time ratio is reported."""

SAFE_FRACTION_OF_AVAILABLE = 0.85
"""A point may use at most this fraction of the machine's ``MemAvailable`` (CPU)."""

_EXPONENT = {"bissm": 1.0, "selective": 1.0, "attention": 2.0, "lstm": 1.0}
"""Growth exponent of each method's time in ``L`` (``L log L`` counted as 1 plus the log)."""


# --------------------------------------------------------------------------------------------
# Layers and estimates
# --------------------------------------------------------------------------------------------

def build_layer(method: str, width: int):
    """The ``method``'s layer at ``width`` channels, in eval mode, and its forward function.

    Returns:
        ``(module, fn)`` where ``fn(x)`` maps ``x (1, L, width)`` to ``(1, L, width)``.
    """
    import torch
    from torch import nn

    from merc.modules.ssm import BiSelectiveScan, BiSSMConv

    if method == "bissm":
        layer = BiSSMConv(width, STATE_SIZE)
        fn = layer
    elif method == "selective":
        layer = BiSelectiveScan(width, STATE_SIZE)
        fn = layer
    elif method == "attention":
        layer = nn.TransformerEncoderLayer(width, ATTENTION_HEADS, 2 * width, batch_first=True)
        fn = layer
    elif method == "lstm":
        if width % 2:
            raise ValueError(f"lstm needs an even width, got {width}")
        layer = nn.LSTM(width, width // 2, batch_first=True, bidirectional=True)

        def fn(x: torch.Tensor) -> torch.Tensor:
            return layer(x)[0]
    else:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    return layer.eval(), fn


def estimate_memory_mb(method: str, length: int, width: int) -> float | None:
    """Memory a forward is predicted to need beyond its input, in MiB, or ``None``.

    Only attention gets an estimate: ``L^2 * heads * 4`` bytes for the float32 attention
    weights that PyTorch's fused CPU path materialises (it dominates for long ``L``). The other
    layers grow linearly and are left to the measurement and the address-space cap.
    """
    if method == "attention":
        return length * length * ATTENTION_HEADS * 4 / 2**20
    return None


def predict_seconds(method: str, prev_length: int | None, prev_seconds: float | None,
                    length: int) -> float | None:
    """Extrapolate one forward's time from the method's previous point, or ``None``."""
    if not prev_length or prev_seconds is None or prev_seconds != prev_seconds:
        return None
    r = length / prev_length
    growth = r ** _EXPONENT[method]
    if method == "bissm":
        growth *= math.log2(max(length, 2)) / math.log2(max(prev_length, 2))
    return prev_seconds * growth


def repeats_for(predicted_s: float | None) -> int:
    """Timed forwards for a point: 5 when short or unknown, 3 below 2 s, else 1."""
    if predicted_s is None or predicted_s < 0.2:
        return 5
    return 3 if predicted_s < 2.0 else 1


# --------------------------------------------------------------------------------------------
# Measuring one point (runs in the child, or in-process for tests)
# --------------------------------------------------------------------------------------------

def _proc_status() -> dict[str, int]:
    """``VmRSS``/``VmHWM``/``VmSize`` of this process in bytes (empty off Linux)."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return {}
    return {k: int(v) * 1024 for k, v in re.findall(r"^(Vm\w+):\s+(\d+) kB", text, re.M)}


def mem_available_bytes() -> int | None:
    """``MemAvailable`` of the machine in bytes (``None`` off Linux)."""
    try:
        m = re.search(r"^MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) * 1024 if m else None


def _reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ``clear_refs`` 5); False if not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_limit_bytes(budget_bytes: float, device: str) -> float:
    """The budget, lowered on CPU to a safe share of the machine's available memory."""
    if device != "cpu":
        return budget_bytes
    avail = mem_available_bytes()
    return min(budget_bytes, SAFE_FRACTION_OF_AVAILABLE * avail) if avail else budget_bytes


def measure_point(method: str, length: int, width: int, *, device: str = "cpu",
                  memory_limit: float | None = None, predicted_s: float | None = None,
                  cap_address_space: bool = False, seed: int = 0) -> dict[str, Any]:
    """Time ``repeats`` forwards of ``method`` on ``x (1, length, width)``; report peak memory.

    Args:
        memory_limit: Bytes; with ``cap_address_space`` (only in a child process) the address
            space is capped at ``VmSize + memory_limit`` so a bigger allocation raises.
        predicted_s: Predicted seconds per forward: picks the repeats and the warm-up.

    Returns:
        ``{"seconds", "seconds_min", "seconds_max", "peak_mb", "repeats", "warmup"}``
        (``seconds``: the median of the repeats); exceptions propagate.
    """
    import torch

    torch.manual_seed(seed)
    layer, fn = build_layer(method, width)
    layer.to(device)
    x = torch.randn(1, length, width, device=device)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        _reset_peak_rss()
        status = _proc_status()
        base = status.get("VmRSS", 0)
        if cap_address_space and memory_limit is not None and "VmSize" in status:
            import resource

            cap = int(status["VmSize"] + memory_limit)
            _, hard = resource.getrlimit(resource.RLIMIT_AS)
            if hard != resource.RLIM_INFINITY:
                cap = min(cap, hard)
            resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    warmup = predicted_s is None or predicted_s <= WARMUP_MAX_S
    repeats = repeats_for(predicted_s)
    times = []
    with torch.no_grad():
        if warmup:
            fn(x)
            if cuda:
                torch.cuda.synchronize()
        for _ in range(repeats):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn(x)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    if cuda:
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _proc_status().get("VmHWM", 0) - base
    return {"seconds": float(statistics.median(times)), "seconds_min": float(min(times)),
            "seconds_max": float(max(times)), "peak_mb": max(0.0, peak / 2**20),
            "repeats": repeats, "warmup": warmup}


def _child_main(spec_json: str) -> int:
    """Entry of the child process: measure the point in ``spec_json``; print one JSON line."""
    spec = json.loads(spec_json)
    threads = spec.get("threads") or 0
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    try:
        result = measure_point(spec["method"], spec["length"], spec["width"],
                               device=spec["device"], memory_limit=spec.get("memory_limit"),
                               predicted_s=spec.get("predicted_s"), cap_address_space=True)
    except MemoryError:
        result = {"error": "MemoryError: allocation beyond the memory limit", "oom": True}
    except Exception as e:  # noqa: BLE001 - reported back as the point's status
        msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        result = {"error": msg, "oom": _looks_like_oom(msg)}
    print("MERC_SCALING_RESULT " + json.dumps(result), flush=True)
    return 0


def _looks_like_oom(message: str) -> bool:
    m = message.lower()
    return any(s in m for s in ("can't allocate memory", "cannot allocate memory",
                                "out of memory", "memoryerror", "bad_alloc",
                                "not enough memory"))


def run_point(method: str, length: int, width: int, *, device: str, memory_limit: float,
              predicted_s: float | None, timeout_s: float, isolate: bool = True,
              threads: int = 0) -> dict[str, Any]:
    """Measure one point, in a fresh child process (``isolate``) or in this one.

    Returns the child's result dict (``seconds``, ``peak_mb``, ...) or one with ``error``
    (and ``oom``), ``signal`` (killed) or ``timeout``; always with ``wall_s``.
    """
    t0 = time.perf_counter()
    if not isolate:
        try:
            result = measure_point(method, length, width, device=device,
                                   memory_limit=memory_limit, predicted_s=predicted_s)
        except MemoryError:
            result = {"error": "MemoryError", "oom": True}
        except Exception as e:  # noqa: BLE001
            msg = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
            result = {"error": msg, "oom": _looks_like_oom(msg)}
        result["wall_s"] = time.perf_counter() - t0
        return result
    spec = {"method": method, "length": length, "width": width, "device": device,
            "memory_limit": memory_limit, "predicted_s": predicted_s, "threads": threads}
    cmd = [sys.executable, "-m", "merc.bench.scaling", "--child", json.dumps(spec)]
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])  # the folder holding the merc package
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"timeout": True, "wall_s": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    if proc.returncode < 0:
        return {"signal": -proc.returncode, "wall_s": wall}
    for line in reversed(out.splitlines()):
        if line.startswith("MERC_SCALING_RESULT "):
            result = json.loads(line.split(" ", 1)[1])
            result["wall_s"] = wall
            return result
    tail = (err.strip().splitlines() or [f"exit status {proc.returncode}, no result"])[-1]
    return {"error": tail[:200], "oom": _looks_like_oom(err), "wall_s": wall}


# --------------------------------------------------------------------------------------------
# Budget decisions (pure)
# --------------------------------------------------------------------------------------------

def classify(result: dict[str, Any], time_budget_s: float, memory_budget_mb: float,
             timeout_s: float | None = None) -> str:
    """Status of a measured point from its result dict (see the module docstring)."""
    if result.get("timeout"):
        return (f"over_time_budget (no result after {timeout_s:.0f} s)" if timeout_s
                else "over_time_budget")
    if "signal" in result:
        return f"killed (signal {result['signal']})"
    if "error" in result:
        if result.get("oom"):
            return "over_memory_budget"
        return "error: " + " ".join(str(result["error"]).split())[:200]
    if result.get("seconds") is not None and result["seconds"] > time_budget_s:
        return "over_time_budget"
    if result.get("peak_mb") is not None and result["peak_mb"] > memory_budget_mb:
        return "over_memory_budget"
    return "ok"


def stops_method(status: str) -> bool:
    """Whether a point with ``status`` ends its method (every status but ``ok`` does)."""
    return status != "ok"


def plan_statuses(statuses: Sequence[str]) -> list[str]:
    """Apply the stop rule to a method's per-length statuses in length order.

    Everything after the first non-``ok`` status becomes ``skipped_after_budget``.
    """
    out, stopped = [], False
    for s in statuses:
        out.append("skipped_after_budget" if stopped else s)
        stopped = stopped or stops_method(s)
    return out


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------

def _devices(device: str) -> list[str]:
    import torch

    has_cuda = torch.cuda.is_available()
    if device == "auto":
        return ["cpu", "cuda"] if has_cuda else ["cpu"]
    if device == "cuda" and not has_cuda:
        raise ValueError("--device cuda: no CUDA device is available")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu, cuda or auto, got {device!r}")
    return [device]


def run_method(method: str, lengths: Sequence[int], width: int, *, device: str,
               time_budget_s: float, memory_budget_gb: float, isolate: bool = True,
               threads: int = 0, echo: Callable[[str], None] | None = None
               ) -> list[dict[str, Any]]:
    """All lengths of one method on one device, stopping at the first point over a budget."""
    budget_bytes = memory_budget_gb * 2**30
    timeout_s = 3 * time_budget_s + 60
    rows: list[dict[str, Any]] = []
    stopped = False
    prev_len = prev_s = None
    for length in lengths:
        row: dict[str, Any] = {"method": method, "length": length, "seconds": None,
                               "peak_mb": None, "status": "", "device": device,
                               "width": width, "repeats": None, "warmup": None,
                               "memory_limit_mb": None, "estimated_mb": None, "wall_s": None,
                               "seconds_min": None, "seconds_max": None}
        rows.append(row)
        if stopped:
            row["status"] = "skipped_after_budget"
            continue
        limit = memory_limit_bytes(budget_bytes, device)
        row["memory_limit_mb"] = limit / 2**20
        est = estimate_memory_mb(method, length, width)
        row["estimated_mb"] = est
        if est is not None and est > limit / 2**20:
            row["status"] = (f"over_memory_budget (estimated {est:,.0f} MiB > limit "
                             f"{limit / 2**20:,.0f} MiB)")
        else:
            predicted = predict_seconds(method, prev_len, prev_s, length)
            result = run_point(method, length, width, device=device, memory_limit=limit,
                               predicted_s=predicted, timeout_s=timeout_s, isolate=isolate,
                               threads=threads)
            row["status"] = classify(result, time_budget_s, limit / 2**20, timeout_s)
            for k in ("seconds", "seconds_min", "seconds_max", "peak_mb", "repeats", "warmup",
                      "wall_s"):
                row[k] = result.get(k)
            prev_len, prev_s = length, result.get("seconds")
        stopped = stops_method(row["status"])
        if echo:
            sec = f"{row['seconds']:.4g} s" if row["seconds"] is not None else "-"
            mb = f"{row['peak_mb']:.1f} MiB" if row["peak_mb"] is not None else "-"
            echo(f"{method:9s} {device:4s} L={length:6d}: {sec:>12s} {mb:>14s}  {row['status']}")
    return rows


def loglog_slope(lengths: Sequence[float], seconds: Sequence[float]) -> float | None:
    """Least-squares slope of ``log(seconds)`` on ``log(length)`` (``None`` below 2 points)."""
    pts = [(math.log(n), math.log(s)) for n, s in zip(lengths, seconds) if s and s > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def summarize(rows: Sequence[dict[str, Any]], device: str = "cpu",
              ratio_length: int = RATIO_LENGTH) -> dict[str, Any]:
    """Same-run headline numbers for one device.

    Returns ``ratio`` (attention seconds / bissm seconds at ``ratio_length``, or ``None``),
    ``ratio_range`` (``(lowest, highest)`` the repeats allow: attention's fastest over BiSSM's
    slowest, and the reverse; ``None`` without min/max), ``ratio_note`` (the sentence for the
    report), ``bissm_slope`` (log-log slope of BiSSM time
    over the upper half of its measured lengths), ``slope_lengths`` and ``bissm_max_ok`` (the
    longest length BiSSM finished within budget).
    """
    def point(method: str, length: int) -> dict[str, Any] | None:
        return next((r for r in rows if r["method"] == method and r["length"] == length
                     and r["device"] == device), None)

    att, ssm = point("attention", ratio_length), point("bissm", ratio_length)
    ratio, note, bounds = None, "", None
    if ssm is None or att is None:
        note = f"L = {ratio_length} was not run for both attention and bissm"
    elif ssm["status"] != "ok":
        note = f"bissm at L = {ratio_length}: {ssm['status']}"
    elif att["status"] == "ok":
        ratio = att["seconds"] / ssm["seconds"]
        # The two points run in separate processes (each its own peak memory), so the repeats
        # cannot be paired; the spread is bounded by the extremes instead.
        if all(p.get(k) for p in (att, ssm) for k in ("seconds_min", "seconds_max")):
            bounds = (att["seconds_min"] / ssm["seconds_max"],
                      att["seconds_max"] / ssm["seconds_min"])
        spread = f", {bounds[0]:.1f}x–{bounds[1]:.1f}x over the repeats" if bounds else ""
        note = (f"at L = {ratio_length}, attention takes {ratio:.1f}x the time of bissm "
                f"(medians {att['seconds']:.4g} s vs {ssm['seconds']:.4g} s{spread}, same run)")
    else:
        note = f"attention exceeded the budget at L = {ratio_length} ({att['status']})"
    ok = sorted((r["length"], r["seconds"]) for r in rows
                if r["method"] == "bissm" and r["device"] == device and r["status"] == "ok")
    upper = ok[len(ok) // 2:] if len(ok) >= 4 else ok
    slope = loglog_slope([n for n, _ in upper], [s for _, s in upper])
    return {"ratio": ratio, "ratio_range": bounds, "ratio_note": note, "bissm_slope": slope,
            "slope_lengths": [n for n, _ in upper],
            "bissm_max_ok": ok[-1][0] if ok else None}


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _spread(row: dict[str, Any]) -> str:
    """``min–max`` of a point's timed forwards (empty when not measured)."""
    lo, hi = row.get("seconds_min"), row.get("seconds_max")
    return "" if lo is None or hi is None else f"{_fmt(lo)}–{_fmt(hi)}"


def format_table(rows: Sequence[dict[str, Any]], markdown: bool = False) -> str:
    """The :data:`COLUMNS` (with the min–max of the timed forwards after ``seconds``, and the
    device) as plain text or a Markdown table."""
    cols = COLUMNS[:3] + ["min–max"] + COLUMNS[3:] + ["device"]
    cells = [[_spread(r) if c == "min–max" else _fmt(r.get(c)) for c in cols] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(cols) + " |",
                 "|" + "|".join("---:" if c in ("length", "seconds", "min–max", "peak_mb")
                                else "---"
                                for c in cols) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    out = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(out)


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """``scaling.csv``: :data:`COLUMNS` then :data:`EXTRA_COLUMNS` (floats unrounded)."""
    from merc.bench.report import write_dict_csv

    return write_dict_csv(path, COLUMNS + EXTRA_COLUMNS, rows)


def write_plot(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Log-log seconds vs length per (method, device) with dashed ``L log L``/``L^2`` guides."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    devices = list(dict.fromkeys(r["device"] for r in rows))
    for device in devices:
        for method in dict.fromkeys(r["method"] for r in rows):
            pts = sorted((r["length"], r["seconds"]) for r in rows
                         if r["method"] == method and r["device"] == device
                         and r["status"] == "ok" and r["seconds"])
            if pts:
                label = method if len(devices) == 1 else f"{method} ({device})"
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    all_lengths = sorted({r["length"] for r in rows})
    if all_lengths:
        grid = [float(n) for n in all_lengths]

        def anchor(method: str) -> tuple[float, float] | None:
            # The longest measured point: the asymptotic regime the guides are about (short
            # lengths are dominated by fixed per-call overheads).
            pts = sorted((r["length"], r["seconds"]) for r in rows
                         if r["method"] == method and r["status"] == "ok" and r["seconds"])
            return pts[-1] if pts else None

        a = anchor("bissm") or anchor("lstm")
        if a:
            n0, s0 = a
            ax.plot(grid, [s0 * (n * math.log2(n)) / (n0 * math.log2(n0)) for n in grid],
                    "k--", lw=1, alpha=0.6, label="∝ L log L")
        b = anchor("attention") or a
        if b:
            n0, s0 = b
            ax.plot(grid, [s0 * (n / n0) ** 2 for n in grid], "k:", lw=1.2, alpha=0.6,
                    label="∝ L²")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("conversation length L (utterances)")
    ax.set_ylabel("seconds per forward (batch 1)")
    width = rows[0]["width"] if rows else ""
    ax.set_title(f"Context layer forward time vs length (width {width})")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no point finished within the budgets", ha="center",
                transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def markdown_report(rows: Sequence[dict[str, Any]], *, time_budget_s: float,
                    memory_budget_gb: float) -> str:
    """``scaling.md``: table, attention/BiSSM ratio at 16384 and BiSSM's fitted slope."""
    width = rows[0]["width"] if rows else ""
    lines = ["# Scaling with conversation length", "",
             f"Batch 1, width {width}, float32, eval mode, no grad; one fresh process per point. "
             f"Budgets per forward: {time_budget_s:g} s, {memory_budget_gb:g} GiB (capped at "
             f"{SAFE_FRACTION_OF_AVAILABLE:.0%} of the machine's available memory). `seconds`: "
             "median forward time of the point's 1-5 timed forwards, `min–max` their range; "
             "`peak_mb`: peak resident memory above the baseline with "
             "layer and input allocated (CUDA: peak allocated).", "",
             format_table(rows, markdown=True), ""]
    for device in dict.fromkeys(r["device"] for r in rows):
        s = summarize(rows, device)
        lines.append(f"## Headline numbers ({device}, same run)")
        lines.append("")
        lines.append(f"* {s['ratio_note'][0].upper() + s['ratio_note'][1:]}.")
        if s["bissm_slope"] is not None:
            lines.append(f"* BiSSM log-log slope of time over L = "
                         f"{', '.join(str(n) for n in s['slope_lengths'])}: "
                         f"{s['bissm_slope']:.2f} (L log L ≈ 1.1, L² = 2).")
        else:
            lines.append("* BiSSM log-log slope: fewer than 2 measured points.")
        if s["bissm_max_ok"] is not None:
            lines.append(f"* Longest BiSSM length within the budgets: {s['bissm_max_ok']}.")
        lines.append("")
    return "\n".join(lines)


def run_scaling_bench(out_dir: str | Path = "results", min_log2: int = 6, max_log2: int = 16,
                      width: int = 128, time_budget_s: float = 60.0,
                      memory_budget_gb: float = 24.0, methods: Sequence[str] | None = None,
                      device: str = "auto", *, isolate: bool = True, threads: int = 0,
                      echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Measure ``L = 2^min_log2 .. 2^max_log2`` for each method; write CSV, PNG and Markdown.

    Args:
        out_dir: Where ``scaling.csv``, ``scaling.png`` and ``scaling.md`` go.
        width: Channels ``W`` of every layer (input ``x`` is ``(1, L, W)``).
        time_budget_s: Seconds per forward beyond which a method stops.
        memory_budget_gb: Peak memory (GiB) beyond which a method stops.
        methods: Subset of :data:`METHODS` (default all).
        device: ``cpu``, ``cuda`` or ``auto`` (CPU, plus CUDA when present).
        isolate: One child process per point (default; needed for honest peak memory and the
            address-space cap). ``False`` measures in this process (tests).
        threads: ``torch.set_num_threads`` in the children when > 0 (default: PyTorch's).

    Returns:
        The rows of ``scaling.csv``.
    """
    methods = list(methods) if methods else list(METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; expected a subset of {list(METHODS)}")
    if min_log2 > max_log2 or min_log2 < 0:
        raise ValueError(f"need 0 <= min_log2 <= max_log2, got {min_log2}, {max_log2}")
    lengths = [2 ** k for k in range(min_log2, max_log2 + 1)]
    rows: list[dict[str, Any]] = []
    for dev in _devices(device):
        for method in methods:
            rows += run_method(method, lengths, width, device=dev, time_budget_s=time_budget_s,
                               memory_budget_gb=memory_budget_gb, isolate=isolate,
                               threads=threads, echo=echo)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [write_csv(rows, out / "scaling.csv"), write_plot(rows, out / "scaling.png")]
    md = out / "scaling.md"
    md.write_text(markdown_report(rows, time_budget_s=time_budget_s,
                                  memory_budget_gb=memory_budget_gb))
    paths.append(md)
    echo(format_table(rows))
    for dev in dict.fromkeys(r["device"] for r in rows):
        s = summarize(rows, dev)
        slope = f"{s['bissm_slope']:.2f}" if s["bissm_slope"] is not None else "n/a"
        echo(f"[{dev}] {s['ratio_note']}; bissm log-log slope (upper half): {slope}")
    for p in paths:
        echo(f"wrote {p}")
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        sys.exit(_child_main(sys.argv[2]))
    sys.exit("usage: python -m merc.bench.scaling --child '<json spec>' "
             "(internal; use `merc bench scaling`)")
