"""``merc bench efficiency``: size, FLOPs, inference and training time of every registered model.

For each corpus (default IEMOCAP and MELD, cached features, the same preparation as
``merc train``) and each registered model (randomly initialised with ``torch.manual_seed(0)``;
timing does not depend on the weights' values) the benchmark measures, in one process:

``params``
    Trainable parameters (:func:`merc.models.count_parameters`).
``flops_per_dialogue``
    Mean, over the test dialogues, of the floating-point operations of one eval forward pass on
    that dialogue alone (a batch of 1, so no padding is counted), from
    :class:`torch.utils.flop_counter.FlopCounterMode`. A multiply-add counts as 2. Only the
    heavy operators are counted (matrix products, convolutions, attention, FFTs); element-wise
    work (activations, norms, ``exp``) is not. See :func:`count_flops` for what is added to
    PyTorch's own formulas.
``infer_seconds_test_split``
    Wall time of the whole test split through the model: eval mode, ``torch.no_grad()``,
    batches of :data:`EVAL_BATCH_SIZE` dialogues (the batch size ``merc evaluate`` uses), collated
    once beforehand so only the forward passes are timed. One untimed warm-up pass, then
    ``repeats`` timed passes; the median is reported. The batches carry no labels (all
    :data:`~merc.data.collate.IGNORE_INDEX`), as in deployment, so label-dependent auxiliary
    losses are not computed; ``infer_seconds_with_labels`` times the same passes with the labels
    present (what ``merc evaluate`` runs).
``train_seconds_per_epoch``
    One epoch over the train split: train mode, AdamW (the :class:`~merc.config.TrainConfig`
    learning rate and weight decay), masked cross-entropy plus the model's ``aux_loss`` (the loss
    of training, :func:`merc.engine.loop.masked_loss`), gradient clipping as in training, batches of
    ``TrainConfig().batch_size`` shuffled with a fixed seed, collation included. Two untimed
    warm-up steps come first. Plain PyTorch, no Lightning: its per-step overhead is left out.

Outputs in ``out_dir``:

``efficiency.csv``
    One row per (corpus, model). Leading columns :data:`COLUMNS`; then :data:`EXTRA_COLUMNS`,
    among them ``infer_ratio_to_broad_mamba`` (model inference time / broad-mamba's, same run)
    and ``threads`` (``torch.get_num_threads()`` during the run).
``efficiency.md``
    The same numbers as a Markdown table per corpus, with each model's inference time relative
    to broad-mamba's and, in words, broad-mamba's time relative to bc-LSTM's and the
    Transformer's. Ratios are only ever taken within one run: absolute times depend on the
    machine and its load, ratios much less so.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from merc.bench.suite import REFERENCE_MODEL

EVAL_BATCH_SIZE = 16
"""Dialogues per batch for the inference timing (``merc evaluate`` uses 16 as well)."""

TRAIN_WARMUP_STEPS = 2
"""Untimed optimiser steps before the timed training epoch (first-call allocations, caches)."""

COLUMNS = ["corpus", "model", "params", "flops_per_dialogue", "infer_seconds_test_split",
           "train_seconds_per_epoch"]
"""Leading columns of ``efficiency.csv``, in this order."""

EXTRA_COLUMNS = ["infer_ratio_to_broad_mamba", "infer_seconds_with_labels",
                 "fft_flops_per_dialogue", "test_dialogues", "test_utterances",
                 "train_dialogues", "eval_batch_size", "train_batch_size", "repeats", "threads"]
"""Columns after :data:`COLUMNS`."""

aten = torch.ops.aten


# --------------------------------------------------------------------------------------------
# FLOP counting
# --------------------------------------------------------------------------------------------

def _fft_flops(shape: Sequence[int], dims: Sequence[int], per_point_log: float) -> int:
    """``per_point_log * n * log2(n)`` per transform times the number of transforms.

    ``shape`` is the shape of the real-or-complex signal of full length (the input of a
    forward transform, the output of an inverse real one); ``dims`` the transformed axes, whose
    sizes multiply to ``n``; every other axis indexes independent transforms.
    """
    shape = list(shape)
    axes = {d % len(shape) for d in dims}
    n = math.prod(shape[d] for d in axes)
    if n <= 1:
        return 0
    batch = math.prod(s for i, s in enumerate(shape) if i not in axes)
    return int(round(per_point_log * n * math.log2(n) * batch))


def _fft_r2c_flop(self_shape, dim, *args, out_shape=None, **kwargs) -> int:
    """``aten._fft_r2c(self, dim, normalization, onesided)``: real -> complex, 2.5 n log2 n."""
    return _fft_flops(self_shape, dim, 2.5)


def _fft_c2r_flop(self_shape, dim, *args, out_shape=None, **kwargs) -> int:
    """``aten._fft_c2r(self, dim, normalization, last_dim_size)``: complex -> real; ``n`` is the
    real output's length, 2.5 n log2 n."""
    return _fft_flops(out_shape, dim, 2.5)


def _fft_c2c_flop(self_shape, dim, *args, out_shape=None, **kwargs) -> int:
    """``aten._fft_c2c(self, dim, normalization, forward)``: complex -> complex, 5 n log2 n."""
    return _fft_flops(self_shape, dim, 5.0)


def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """The CPU attention kernel: same count as PyTorch's CUDA attention kernels
    (``2 b h s_q s_k d`` for ``Q K^T`` plus ``2 b h s_q s_k d_v`` for the weighted sum)."""
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


FFT_OPS = (aten._fft_r2c, aten._fft_c2r, aten._fft_c2c)
"""The aten FFT operators every ``torch.fft`` call on CPU/CUDA ends in."""


def flop_mapping() -> dict[Any, Callable[..., int]]:
    """Formulas added to :class:`~torch.utils.flop_counter.FlopCounterMode`'s own.

    PyTorch counts no FFTs. The conventional estimate for a radix-2 style FFT of length ``n``
    is ``5 n log2 n`` real flops for a complex transform and half that, ``2.5 n log2 n``, for a
    real-input (``rfft``) or real-output (``irfft``) one; a batch of transforms multiplies it by
    the number of transforms (e.g. ``(B, D, n)`` transformed along the last axis: ``B * D``).
    The formulas receive the operator's argument shapes and ``out_shape`` (FlopCounterMode's
    ``shape_wrapper`` convention). PyTorch's attention formulas cover the CUDA kernels only, so
    the CPU kernel ``_scaled_dot_product_flash_attention_for_cpu`` is added with the same count.
    """
    mapping: dict[Any, Callable[..., int]] = {
        aten._fft_r2c: _fft_r2c_flop, aten._fft_c2r: _fft_c2r_flop,
        aten._fft_c2c: _fft_c2c_flop}
    cpu_sdpa = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_sdpa is not None:
        from torch.utils.flop_counter import flop_registry

        if cpu_sdpa not in flop_registry:
            mapping[cpu_sdpa] = _sdpa_cpu_flop
    return mapping


@contextmanager
def countable_kernels():
    """Route modules through operators FlopCounterMode can see, for the duration.

    In eval mode without gradients ``nn.TransformerEncoderLayer`` takes a fused "fast path"
    (``aten._transformer_encoder_layer_fwd``) and ``nn.LSTM`` on CPU calls oneDNN
    (``aten.mkldnn_rnn_layer``); FlopCounterMode has no formula for either and would count zero
    for the attention and the whole recurrence. Disabling the fast path and oneDNN makes the
    same computation go through ``addmm``/``mm``/attention kernels, which are counted. Only
    used while counting, never while timing.
    """
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # oneDNN's flags() warns about TF32 on Intel GPUs
            with torch.backends.mkldnn.flags(enabled=False):
                yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def count_flops(model: torch.nn.Module, batch) -> tuple[int, dict[str, int]]:
    """FLOPs of one ``model(batch)`` call (eval, no grad): ``(total, {operator: flops})``.

    Uses :class:`~torch.utils.flop_counter.FlopCounterMode` with :func:`flop_mapping` added,
    inside :func:`countable_kernels`. The model is left in eval mode.
    """
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    counter = FlopCounterMode(display=False, custom_mapping=flop_mapping())
    with countable_kernels(), torch.no_grad(), counter:
        model(batch)
    per_op = {str(op): int(v) for op, v in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), per_op


def _is_fft(op_name: str) -> bool:
    return any(op_name == str(op) for op in FFT_OPS)


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------

def without_labels(batch):
    """Copy of ``batch`` whose labels are all ``IGNORE_INDEX`` (what a deployed model sees)."""
    from merc.data.collate import IGNORE_INDEX

    return dataclasses.replace(batch, labels=torch.full_like(batch.labels, IGNORE_INDEX))


def time_inference(model: torch.nn.Module, batches: Sequence, repeats: int) -> float:
    """Median seconds of ``repeats`` passes of ``model`` over the pre-collated ``batches``.

    Eval mode, ``torch.no_grad()``; one untimed warm-up pass first; ``time.perf_counter``.
    """
    model.eval()
    times = []
    with torch.no_grad():
        for b in batches:  # warm-up
            model(b)
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            for b in batches:
                model(b)
            times.append(time.perf_counter() - t0)
    return float(statistics.median(times))


def _train_step(model, optimizer, batch, grad_clip: float) -> None:
    from merc.engine.loop import masked_loss

    loss, _ = masked_loss(model(batch), batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()


def time_train_epoch(model: torch.nn.Module, prepared, *, batch_size: int, seed: int = 0,
                     warmup_steps: int = TRAIN_WARMUP_STEPS) -> float:
    """Seconds of one training epoch over the train split (see the module docstring).

    ``warmup_steps`` untimed steps on the first batches come first; then every batch of a
    shuffled (``seed``) pass is loaded, collated and trained on, and that pass is timed.
    The model's weights are changed (it is a throw-away, randomly initialised model).
    """
    from merc.config import TrainConfig
    from merc.data.prepare import make_loader
    from merc.engine.loop import make_optimizer

    tc = TrainConfig().resolved()  # the generic settings, the same for every model
    model.train()
    optimizer = make_optimizer(model, tc.lr, tc.weight_decay)
    loader = make_loader(prepared, "train", batch_size, shuffle=True, seed=seed)
    for i, batch in enumerate(loader):
        if i >= warmup_steps:
            break
        _train_step(model, optimizer, batch, tc.grad_clip)
    t0 = time.perf_counter()
    for batch in loader:
        _train_step(model, optimizer, batch, tc.grad_clip)
    seconds = time.perf_counter() - t0
    model.eval()
    return seconds


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------

def bench_prepared(prepared, corpus: str, models: Iterable[str] | None = None, *,
                   repeats: int = 10, echo: Callable[[str], None] | None = None
                   ) -> list[dict[str, Any]]:
    """Measure every model on one prepared corpus; one row (dict) per model.

    Args:
        prepared: :class:`merc.data.prepare.PreparedData` with a test and a train split.
        corpus: Name written in the ``corpus`` column.
        models: Registered model names (default: all).
        repeats: Timed inference passes (median reported).
        echo: Receives one progress line per model.
    """
    from merc.config import TrainConfig
    from merc.data.prepare import make_loader
    from merc.models import count_parameters, create_model, list_models

    names = list(models) if models else list_models()
    num_classes = len(prepared.corpus.label_names)
    test_batches = list(make_loader(prepared, "test", EVAL_BATCH_SIZE))
    unlabelled = [without_labels(b) for b in test_batches]
    singles = [without_labels(b) for b in make_loader(prepared, "test", 1)]
    train_bs = TrainConfig().resolved().batch_size
    counts = prepared.corpus.counts()
    rows = []
    for name in names:
        torch.manual_seed(0)
        model = create_model(name, prepared.input_dims, num_classes)
        params = count_parameters(model)
        total = fft = 0
        for b in singles:
            n, per_op = count_flops(model, b)
            total += n
            fft += sum(v for op, v in per_op.items() if _is_fft(op))
        infer = time_inference(model, unlabelled, repeats)
        infer_labels = time_inference(model, test_batches, repeats)
        train = time_train_epoch(model, prepared, batch_size=train_bs, seed=0)
        row = {
            "corpus": corpus, "model": name, "params": params,
            "flops_per_dialogue": total / max(1, len(singles)),
            "infer_seconds_test_split": infer, "train_seconds_per_epoch": train,
            "infer_ratio_to_broad_mamba": None, "infer_seconds_with_labels": infer_labels,
            "fft_flops_per_dialogue": fft / max(1, len(singles)),
            "test_dialogues": counts.get("test", {}).get("dialogues", len(singles)),
            "test_utterances": counts.get("test", {}).get("utterances"),
            "train_dialogues": counts.get("train", {}).get("dialogues"),
            "eval_batch_size": EVAL_BATCH_SIZE, "train_batch_size": train_bs,
            "repeats": repeats, "threads": torch.get_num_threads(),
        }
        rows.append(row)
        if echo:
            echo(f"{corpus} {name}: {params:,} params, {row['flops_per_dialogue'] / 1e6:.2f} "
                 f"MFLOPs/dialogue, inference {infer:.4f} s, train epoch {train:.2f} s")
    ref = next((r for r in rows if r["model"] == REFERENCE_MODEL), None)
    for r in rows:
        if ref is not None and ref["infer_seconds_test_split"] > 0:
            r["infer_ratio_to_broad_mamba"] = (r["infer_seconds_test_split"]
                                               / ref["infer_seconds_test_split"])
    return rows


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.4e}"
    return str(value)


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """``efficiency.csv``: :data:`COLUMNS` then :data:`EXTRA_COLUMNS` (floats unrounded)."""
    from merc.bench.report import write_dict_csv

    return write_dict_csv(path, COLUMNS + EXTRA_COLUMNS, rows)


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The Markdown report: one table per corpus plus broad-mamba's same-run ratios."""
    lines = ["# Efficiency", "",
             "Random-weight models, one process, CPU. FLOPs: mean per test dialogue (batch of 1, "
             "multiply-add = 2, FFT = 2.5 n log2 n per real transform). Inference: whole test "
             f"split, batches of {EVAL_BATCH_SIZE}, no labels, median of the timed passes after "
             "one warm-up. Training: one epoch over the train split (plain PyTorch loop, AdamW, "
             "loss incl. aux terms). Only ratios within a run are comparable across machines.",
             ""]
    for corpus in dict.fromkeys(r["corpus"] for r in rows):
        sub = [r for r in rows if r["corpus"] == corpus]
        first = sub[0]
        lines += [f"## {corpus}", "",
                  f"{first.get('test_dialogues')} test dialogues "
                  f"({first.get('test_utterances')} utterances), "
                  f"{first.get('train_dialogues')} train dialogues, "
                  f"{first.get('threads')} thread(s), {first.get('repeats')} timed repeats.", "",
                  "| model | params | MFLOPs / dialogue | inference, test split (s) "
                  f"| inference / {REFERENCE_MODEL} | train epoch (s) |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in sub:
            ratio = r.get("infer_ratio_to_broad_mamba")
            lines.append(
                f"| {r['model']} | {r['params']:,} | {r['flops_per_dialogue'] / 1e6:.2f} "
                f"| {r['infer_seconds_test_split']:.4f} "
                f"| {'' if ratio is None else f'{ratio:.2f}'} "
                f"| {r['train_seconds_per_epoch']:.2f} |")
        ref = next((r for r in sub if r["model"] == REFERENCE_MODEL), None)
        if ref is not None:
            parts = []
            for other in ("bc-lstm", "transformer"):
                o = next((r for r in sub if r["model"] == other), None)
                if o is not None and o["infer_seconds_test_split"] > 0:
                    parts.append(f"{ref['infer_seconds_test_split'] / o['infer_seconds_test_split']:.2f}"
                                 f"x {other}'s")
            lines += ["", f"{REFERENCE_MODEL} inference on the {corpus} test split: "
                      f"{ref['infer_seconds_test_split']:.4f} s"
                      + (f" ({' and '.join(parts)}, same run)." if parts else ".")]
        lines.append("")
    return "\n".join(lines)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Plain-text table of :data:`COLUMNS` plus the ratio, for the terminal."""
    cols = COLUMNS + ["infer_ratio_to_broad_mamba"]
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    out = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(out)


def write_outputs(rows: Sequence[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """Write ``efficiency.csv`` and ``efficiency.md`` into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "efficiency.md"
    md.write_text(markdown(rows))
    return [write_csv(rows, out / "efficiency.csv"), md]


def run_efficiency_bench(data_dir: str | Path | None = None, out_dir: str | Path = "results",
                         corpora: Sequence[str] | None = None, models: Sequence[str] | None = None,
                         repeats: int = 10, threads: int = 0, cache_dir: str | None = None,
                         *, echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run the benchmark on each corpus' test (and train) split; write and print the results.

    Args:
        data_dir: Folder holding the corpora (or one corpus folder); default
            :func:`merc.config.default_data_dir`.
        out_dir: Where ``efficiency.csv`` and ``efficiency.md`` go.
        corpora: Corpus loaders (default ``iemocap``, ``meld``); features are prepared exactly
            as ``merc train`` does with the default data config.
        models: Registered models (default: all).
        repeats: Timed inference passes; the median is reported.
        threads: ``torch.set_num_threads(threads)`` when > 0 (restored afterwards).
        cache_dir: Feature cache (default ``$MERC_CACHE_DIR``).

    Returns:
        The rows written to ``efficiency.csv``.
    """
    from merc.config import DataConfig, default_data_dir
    from merc.data.prepare import prepare_data, resolve_corpus_dir

    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    rows: list[dict[str, Any]] = []
    try:
        for corpus in corpora or ["iemocap", "meld"]:
            data = DataConfig(corpus=corpus, data_dir=str(resolve_corpus_dir(corpus, data_dir)),
                              cache_dir=cache_dir)
            prepared = prepare_data(data.resolved(), progress=False)
            rows += bench_prepared(prepared, corpus, models, repeats=repeats, echo=echo)
    finally:
        torch.set_num_threads(before)
    paths = write_outputs(rows, out_dir)
    echo(format_table(rows))
    for p in paths:
        echo(f"wrote {p}")
    return rows
