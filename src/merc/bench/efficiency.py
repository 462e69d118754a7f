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
    once beforehand so only the forward passes are timed. One untimed warm-up pass per model,
    then ``repeats`` rounds; in each round every model makes one timed pass, in an order rotated
    from round to round, so that all models meet the same machine load. The median over the
    rounds is reported with its min and max (``infer_seconds_min``, ``infer_seconds_max``).
    The batches carry no labels (all
    :data:`~merc.data.collate.IGNORE_INDEX`), as in deployment, so label-dependent auxiliary
    losses are not computed; ``infer_seconds_with_labels`` times the same passes with the labels
    present (what ``merc evaluate`` runs).
``train_seconds_per_epoch``
    One epoch over the train split: train mode, AdamW (the :class:`~merc.config.TrainConfig`
    learning rate and weight decay), masked cross-entropy plus the model's ``aux_loss`` (the loss
    of training, :func:`merc.training.loop.masked_loss`), gradient clipping as in training, batches of
    ``TrainConfig().batch_size`` shuffled with a fixed seed, collation included. Two untimed
    warm-up steps come first. Plain PyTorch, no Lightning: its per-step overhead is left out.
    ``train_repeats`` epochs per model, interleaved between the models like the inference
    rounds; median with min and max.
``infer_ratio_to_broad_mamba``
    Pair by pair: in each round, the model's pass time divided by broad-mamba's pass of the
    same round; the median of these per-round ratios, with their min and max. Two runs of the
    benchmark on a busy machine gave single-median ratios 2.91x and 1.19x for the same pair:
    a ratio of two medians taken minutes apart mixes two machine states.

Outputs in ``out_dir``:

``efficiency.csv``
    One row per (corpus, model). Leading columns :data:`COLUMNS`; then :data:`EXTRA_COLUMNS`,
    among them ``infer_ratio_to_broad_mamba`` (median per-round ratio to broad-mamba, with
    ``infer_ratio_min``/``infer_ratio_max``), the min/max of every timing and ``threads``
    (``torch.get_num_threads()`` during the run).
``efficiency.md``
    The same numbers as a Markdown table per corpus (median [min–max]), with each model's
    inference time relative to broad-mamba's and, in words, broad-mamba's time relative to
    bc-LSTM's and the Transformer's (per-round ratios, median [min–max]). Ratios are only ever
    taken within one round of one run: absolute times depend on the machine and its load,
    ratios much less so.
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

TRAIN_REPEATS = 3
"""Timed training epochs per model (median, min and max reported)."""

COLUMNS = ["corpus", "model", "params", "flops_per_dialogue", "infer_seconds_test_split",
           "train_seconds_per_epoch"]
"""Leading columns of ``efficiency.csv``, in this order."""

EXTRA_COLUMNS = ["infer_ratio_to_broad_mamba", "infer_seconds_with_labels",
                 "fft_flops_per_dialogue", "test_dialogues", "test_utterances",
                 "train_dialogues", "eval_batch_size", "train_batch_size", "repeats", "threads",
                 "infer_seconds_min", "infer_seconds_max", "infer_ratio_min", "infer_ratio_max",
                 "infer_seconds_with_labels_min", "infer_seconds_with_labels_max",
                 "train_seconds_min", "train_seconds_max", "train_repeats"]
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


def time_pass(model: torch.nn.Module, batches: Sequence) -> float:
    """Seconds of one pass of ``model`` over the pre-collated ``batches`` (eval, no grad)."""
    model.eval()
    with torch.no_grad():
        t0 = time.perf_counter()
        for b in batches:
            model(b)
        return time.perf_counter() - t0


def time_inference(model: torch.nn.Module, batches: Sequence, repeats: int) -> float:
    """Median seconds of ``repeats`` passes of ``model`` over the pre-collated ``batches``.

    Eval mode, ``torch.no_grad()``; one untimed warm-up pass first; ``time.perf_counter``.
    """
    time_pass(model, batches)  # warm-up
    return float(statistics.median(time_pass(model, batches) for _ in range(max(1, repeats))))


def interleaved(names: Sequence[str], rounds: int, measure: Callable[[str], float]
                ) -> dict[str, list[float]]:
    """``measure(name)`` for every name in each of ``rounds`` rounds, the order rotated by one
    per round (no model always runs first, right after another's allocations); returns each
    name's values in round order, so that index ``r`` of two names was measured in one round."""
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(max(1, rounds)):
        k = r % max(1, len(names))
        for name in list(names[k:]) + list(names[:k]):
            out[name].append(measure(name))
    return out


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """``(median, min, max)``."""
    return float(statistics.median(values)), float(min(values)), float(max(values))


def pairwise_ratio(num: Sequence[float], den: Sequence[float]
                   ) -> tuple[float, float, float] | None:
    """Median, min and max of the per-round ratios ``num[r] / den[r]`` (``None`` if any
    denominator is 0)."""
    if not num or any(d <= 0 for d in den):
        return None
    return spread([a / b for a, b in zip(num, den)])


def _train_step(model, optimizer, batch, grad_clip: float) -> None:
    from merc.training.loop import masked_loss

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
    from merc.training.prepare import make_loader
    from merc.training.loop import make_optimizer

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
                   repeats: int = 10, train_repeats: int = TRAIN_REPEATS,
                   echo: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Measure every model on one prepared corpus; one row (dict) per model.

    Args:
        prepared: :class:`merc.training.prepare.PreparedData` with a test and a train split.
        corpus: Name written in the ``corpus`` column.
        models: Registered model names (default: all).
        repeats: Timed inference rounds (median, min and max reported).
        train_repeats: Timed training epochs per model.
        echo: Receives one progress line per model.
    """
    from merc.config import TrainConfig
    from merc.training.prepare import make_loader
    from merc.models import count_parameters, create_model, list_models

    names = list(models) if models else list_models()
    num_classes = len(prepared.corpus.label_names)
    test_batches = list(make_loader(prepared, "test", EVAL_BATCH_SIZE))
    unlabelled = [without_labels(b) for b in test_batches]
    singles = [without_labels(b) for b in make_loader(prepared, "test", 1)]
    train_bs = TrainConfig().resolved().batch_size
    counts = prepared.corpus.counts()
    built, rows = {}, []
    for name in names:
        torch.manual_seed(0)
        model = create_model(name, prepared.input_dims, num_classes)
        total = fft = 0
        for b in singles:
            n, per_op = count_flops(model, b)
            total += n
            fft += sum(v for op, v in per_op.items() if _is_fft(op))
        time_pass(model, unlabelled)  # warm-ups, untimed
        time_pass(model, test_batches)
        built[name] = model
        rows.append({
            "corpus": corpus, "model": name, "params": count_parameters(model),
            "flops_per_dialogue": total / max(1, len(singles)),
            "fft_flops_per_dialogue": fft / max(1, len(singles)),
            "test_dialogues": counts.get("test", {}).get("dialogues", len(singles)),
            "test_utterances": counts.get("test", {}).get("utterances"),
            "train_dialogues": counts.get("train", {}).get("dialogues"),
            "eval_batch_size": EVAL_BATCH_SIZE, "train_batch_size": train_bs,
            "repeats": repeats, "train_repeats": train_repeats,
            "threads": torch.get_num_threads()})
    # Every timing is taken in rounds across the models, so a ratio compares passes made under
    # the same machine load (see the module docstring).
    infer = interleaved(names, repeats, lambda n: time_pass(built[n], unlabelled))
    labelled = interleaved(names, repeats, lambda n: time_pass(built[n], test_batches))
    train = interleaved(names, train_repeats, lambda n: time_train_epoch(
        built[n], prepared, batch_size=train_bs, seed=0))
    for row in rows:
        name = row["model"]
        (row["infer_seconds_test_split"], row["infer_seconds_min"],
         row["infer_seconds_max"]) = spread(infer[name])
        (row["infer_seconds_with_labels"], row["infer_seconds_with_labels_min"],
         row["infer_seconds_with_labels_max"]) = spread(labelled[name])
        (row["train_seconds_per_epoch"], row["train_seconds_min"],
         row["train_seconds_max"]) = spread(train[name])
        row["infer_times"] = infer[name]  # per round, for the Markdown's pairwise ratios
        ratio = pairwise_ratio(infer[name], infer[REFERENCE_MODEL]) \
            if REFERENCE_MODEL in infer else None
        row["infer_ratio_to_broad_mamba"], row["infer_ratio_min"], row["infer_ratio_max"] = (
            ratio or (None, None, None))
        if echo:
            echo(f"{corpus} {name}: {row['params']:,} params, "
                 f"{row['flops_per_dialogue'] / 1e6:.2f} MFLOPs/dialogue, inference "
                 f"{_range(row, 'infer_seconds_test_split', 'infer_seconds', 4)} s, train epoch "
                 f"{_range(row, 'train_seconds_per_epoch', 'train_seconds', 2)} s")
    return rows


def _range(row: dict[str, Any], key: str, prefix: str, digits: int) -> str:
    """``median [min–max]`` of a timing, e.g. ``0.0180 [0.0172–0.0441]``."""
    return (f"{row[key]:.{digits}f} [{row[prefix + '_min']:.{digits}f}–"
            f"{row[prefix + '_max']:.{digits}f}]")


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
    """The Markdown report: one table per corpus plus broad-mamba's same-run ratios; every
    timing and ratio as median [min–max] over the rounds."""
    lines = ["# Efficiency", "",
             "Random-weight models, one process, CPU. FLOPs: mean per test dialogue (batch of 1, "
             "multiply-add = 2, FFT = 2.5 n log2 n per real transform). Inference: whole test "
             f"split, batches of {EVAL_BATCH_SIZE}, no labels, one warm-up pass, then rounds in "
             "which every model makes one timed pass (order rotated per round). Training: one "
             "epoch over the train split (plain PyTorch loop, AdamW, loss incl. aux terms), "
             "epochs interleaved the same way. Times and ratios: median [min–max] over the "
             "rounds; a ratio is taken pair by pair within each round, then its median. Only "
             "ratios within a run are comparable across machines.", ""]
    for corpus in dict.fromkeys(r["corpus"] for r in rows):
        sub = [r for r in rows if r["corpus"] == corpus]
        first = sub[0]
        lines += [f"## {corpus}", "",
                  f"{first.get('test_dialogues')} test dialogues "
                  f"({first.get('test_utterances')} utterances), "
                  f"{first.get('train_dialogues')} train dialogues, "
                  f"{first.get('threads')} thread(s), {first.get('repeats')} inference rounds, "
                  f"{first.get('train_repeats')} training epochs per model.", "",
                  "| model | params | MFLOPs / dialogue | inference, test split (s) "
                  f"| inference / {REFERENCE_MODEL} | train epoch (s) |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in sub:
            ratio = ("" if r.get("infer_ratio_to_broad_mamba") is None else
                     _range(r, "infer_ratio_to_broad_mamba", "infer_ratio", 2))
            lines.append(
                f"| {r['model']} | {r['params']:,} | {r['flops_per_dialogue'] / 1e6:.2f} "
                f"| {_range(r, 'infer_seconds_test_split', 'infer_seconds', 4)} | {ratio} "
                f"| {_range(r, 'train_seconds_per_epoch', 'train_seconds', 2)} |")
        ref = next((r for r in sub if r["model"] == REFERENCE_MODEL), None)
        if ref is not None:
            parts = []
            for other in ("bc-lstm", "transformer"):
                o = next((r for r in sub if r["model"] == other), None)
                pr = (pairwise_ratio(ref.get("infer_times", []), o.get("infer_times", []))
                      if o is not None else None)
                if pr is not None:
                    parts.append(f"{pr[0]:.2f}x {other}'s [{pr[1]:.2f}–{pr[2]:.2f}]")
            lines += ["", f"{REFERENCE_MODEL} inference on the {corpus} test split: "
                      f"{_range(ref, 'infer_seconds_test_split', 'infer_seconds', 4)} s"
                      + (f" ({' and '.join(parts)}, per-round ratios in the same run)."
                         if parts else ".")]
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
                         *, train_repeats: int = TRAIN_REPEATS,
                         echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run the benchmark on each corpus' test (and train) split; write and print the results.

    Args:
        data_dir: Folder holding the corpora (or one corpus folder); default
            :func:`merc.config.default_data_dir`.
        out_dir: Where ``efficiency.csv`` and ``efficiency.md`` go.
        corpora: Corpus loaders (default ``iemocap``, ``meld``); features are prepared exactly
            as ``merc train`` does with the default data config.
        models: Registered models (default: all).
        repeats: Timed inference rounds; median, min and max are reported.
        train_repeats: Timed training epochs per model.
        threads: ``torch.set_num_threads(threads)`` when > 0 (restored afterwards).
        cache_dir: Feature cache (default ``$MERC_CACHE_DIR``).

    Returns:
        The rows written to ``efficiency.csv``.
    """
    from merc.config import DataConfig, default_data_dir
    from merc.training.prepare import prepare_data, resolve_corpus_dir

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
            rows += bench_prepared(prepared, corpus, models, repeats=repeats,
                                   train_repeats=train_repeats, echo=echo)
    finally:
        torch.set_num_threads(before)
    paths = write_outputs(rows, out_dir)
    echo(format_table(rows))
    for p in paths:
        echo(f"wrote {p}")
    return rows
