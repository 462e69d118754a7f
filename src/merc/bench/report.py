"""Tables and figures of ``merc bench accuracy``, built only from the run folders' JSON/CSV.

Every writer reads what ``merc train`` wrote (``summary.json``, ``seed_<s>/metrics.json``,
``seed_<s>/metrics.csv``, ``seed_<s>/best.ckpt``), so the tables can be rebuilt at any time
without retraining. Numbers are test-split metrics of validation-selected checkpoints, in
percent, mean ± sample std over seeds.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from merc.bench import suite
from merc.bench.suite import FROZEN, READING_TABLES, REFERENCE_MODEL

ACCURACY_COLUMNS = ["corpus", "model", "variant", "modalities", "seeds", "wf1_mean", "wf1_std",
                    "acc_mean", "acc_std"]
"""Leading columns of ``accuracy.csv`` (stable; extra columns follow them)."""

FEATURES_NOTE = (
    "features: `frozen` = the corpus' default text features (the bundled frozen "
    "all-MiniLM-L6-v2; MOSI: its shipped text vectors); another name = the encoder folder given "
    "to `--text-encoder` (column `text_encoder` of accuracy.csv), with how many encoder fine-tunes "
    "stand behind the row (1, or 1 + K with K cross-fit folds). Those fine-tunes are not "
    "repeated per seed: the ± over seeds does not include the encoder's own fine-tuning "
    "variance. `no text`: the run reads no text, so it is shared by every features source.")
"""Written under Table 1 when the suite has a features axis."""


NO_SPREAD = "n/a"
"""The spread of a number measured on one seed: there is none (``significance.md`` says n/a
for its p-values too), so no table prints ``± 0.00`` for it."""


def _n(m: dict | None) -> int:
    return len(m.get("per_seed", ())) if m else 0


def _pm(m: dict | None, digits: int = 2) -> str:
    """``mean ± std`` over seeds; ``mean ± n/a`` for one seed."""
    if not m:
        return "failed"
    std = f"{m['std']:.{digits}f}" if _n(m) > 1 else NO_SPREAD
    return f"{m['mean']:.{digits}f} ± {std}"


def _std(m: dict | None) -> float | None:
    """A CSV's std cell: empty (``None``) where there is no spread (one seed) or no result."""
    return m["std"] if m and _n(m) > 1 else None


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for row in rows:
            w.writerow(["" if v is None else (f"{v:.4f}" if isinstance(v, float) else v)
                        for v in row])
    return path


def write_dict_csv(path: Path, columns: Sequence[str], rows: Iterable[dict]) -> Path:
    """Rows (dicts) as CSV with exactly ``columns``, missing/``None`` values empty, floats
    unrounded (the efficiency and scaling tables)."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return path


def _md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _mods(run) -> str:
    return "+".join(m[0].upper() for m in run.modalities)


class _Results:
    """Lookup of finished summaries by run, shared by the writers."""

    def __init__(self, out: Path, runs, summaries: dict, failures: dict, n_seeds: int,
                 overrides: Sequence[str] = (), echo: Callable[[str], None] = print) -> None:
        self.out, self.runs, self.summaries, self.failures = out, runs, summaries, failures
        self.n_seeds = n_seeds
        self.overrides = list(overrides)
        self.echo = echo
        # The features column appears only with a features axis: the default suite's tables
        # stay exactly as they were.
        self.axis = any(r.features != FROZEN for r in runs)
        self._finetunes: dict[str, int | None] = {}

    @property
    def feat_header(self) -> list[str]:
        return ["features"] if self.axis else []

    def feat_csv(self, run) -> list[str]:
        """The features column of a CSV row: the source name (``no-text`` for a text-free run)."""
        if not self.axis:
            return []
        return [run.features if "text" in run.modalities else "no-text"]

    def feat_md(self, run) -> list[str]:
        """The features column of a Markdown row, saying for a fine-tuned encoder how many
        fine-tunes stand behind the row and that its seeds share them, e.g. ``ft: 1 encoder
        fine-tune shared by 5 seeds``."""
        if not self.axis:
            return []
        if "text" not in run.modalities:
            return ["no text"]
        k = self.finetunes(run)
        if run.features == FROZEN or k is None:
            return [run.features]
        s = self.get(run)
        seeds = len(s["seeds"]) if s else self.n_seeds
        cell = f"{run.features}: {k} encoder fine-tune{'s' if k != 1 else ''}"
        if k > 1:
            cell += f" (1 + {k - 1} cross-fit folds)"
        return [cell + (f" shared by {seeds} seeds" if seeds > 1 else "")]

    def finetunes(self, run) -> int | None:
        """Encoder fine-tunes behind ``run``'s text features (``None``: not a merc encoder)."""
        if run.text is None:
            return None
        if run.text not in self._finetunes:
            self._finetunes[run.text] = suite.encoder_finetunes(run.text)
        return self._finetunes[run.text]

    def get(self, run) -> dict | None:
        return self.summaries.get(run.identity)

    def run_overrides(self, run) -> str:
        """What the row's run was trained with beyond the suite's own settings: the bench
        corpus' overrides, then the command line's (``train.max_epochs=5``), space-separated."""
        bc = suite.BENCH_CORPORA.get(run.corpus)
        return " ".join([*(bc.overrides if bc else ()), *self.overrides])

    def seeds(self, run) -> int:
        """Seeds behind the row: those finished, else those planned."""
        s = self.get(run)
        return len(s["seeds"]) if s else self.n_seeds

    def what(self, runs: Sequence) -> str:
        """The line under every Markdown table's title: seeds and overrides, so that a table
        read on its own says how it was made."""
        counts = sorted({self.seeds(r) for r in runs}) or [self.n_seeds]
        seeds = " or ".join(str(c) for c in counts)
        spread = ("mean ± sample std over seeds" if counts[-1] > 1
                  else f"one seed: no spread ({NO_SPREAD})")
        per_corpus = {r.corpus: suite.BENCH_CORPORA[r.corpus].overrides for r in runs
                      if r.corpus in suite.BENCH_CORPORA and suite.BENCH_CORPORA[r.corpus].overrides}
        ov = [f"`{o}`" for o in self.overrides]
        ov += [f"`{o}` ({c} only)" for c, os_ in per_corpus.items() for o in os_]
        return (f"Seeds per run: {seeds} ({spread}). Overrides: "
                + (", ".join(ov) if ov else "none (the suite's own settings)") + ".")

    def skip(self, name: str, why: str) -> list[Path]:
        """An empty table is not written: one line says why (an earlier file of that name in
        the folder is removed, so that no table of another invocation passes for this one's)."""
        for ext in (".md", ".csv", ".png"):
            (self.out / f"{name}{ext}").unlink(missing_ok=True)
        self.echo(f"{name}: not written: {why}")
        return []

    def in_table(self, table: str, corpus: str | None = None) -> list:
        return [r for r in self.runs if table in r.tables and (corpus is None or r.corpus == corpus)]

    def corpora(self, table: str) -> list[str]:
        seen: list[str] = []
        for r in self.in_table(table):
            if r.corpus not in seen:
                seen.append(r.corpus)
        return seen

    def run_dir(self, run) -> Path:
        return self.out / "runs" / run.corpus / run.folder

    def full(self, corpus: str, model: str, modalities: tuple[str, ...] | None = None,
             features: str = FROZEN):
        for r in self.runs:
            if (r.corpus == corpus and r.model == model and r.variant == suite.FULL
                    and (modalities is None or r.modalities == modalities)
                    # the default-modality full run: the one in Table 1 or in Table 3
                    and (r.tables & {"main", "ablation", *READING_TABLES}
                         or modalities is not None)
                    and (r.features == features or "text" not in r.modalities)):
                return r
        return None

    def suffix(self, run) -> str:
        """File-name suffix of a figure per run (none for frozen features)."""
        return "" if run.features == FROZEN else f"_{run.features}"


def write_accuracy_report(out: Path, runs, summaries: dict, failures: dict, n_seeds: int,
                          echo: Callable[[str], None] = print,
                          overrides: Sequence[str] = ()) -> list[Path]:
    """Write every table and figure of the suite into ``out``; returns the paths written.

    ``overrides`` (the command line's, applied to every run) are named in every table; a
    table no run was planned for is not written (one line through ``echo`` says so)."""
    res = _Results(Path(out), runs, summaries, failures, n_seeds, overrides, echo)
    res.out.mkdir(parents=True, exist_ok=True)  # every run may have failed before writing one
    written = [_accuracy_csv(res)]
    for writer in (_table_main, _table_ablation, _table_modalities, _fig_fusion,
                   _reading_tables, _significance):
        written += writer(res)
    for writer in (_confusions, _loss_curves, _tsne):
        try:
            written += writer(res)
        except Exception as e:  # noqa: BLE001 - a figure failing must not hide the tables
            echo(f"could not draw {writer.__name__.strip('_')}: {type(e).__name__}: {e}")
    fail_path = res.out / "failures.md"
    if failures:
        lines = ["# Failed runs", ""] + [
            f"- {r.label}: {failures[r.identity]}" for r in runs if r.identity in failures]
        fail_path.write_text("\n".join(lines) + "\n")
        written.append(fail_path)
    elif fail_path.exists():
        fail_path.unlink()
    return written


# ------------------------------------------------------------------------------------ tables

def _accuracy_csv(res: _Results) -> Path:
    rows = []
    for run in res.runs:
        s = res.get(run)
        status = "ok" if s else f"failed: {res.failures.get(run.identity, 'not run')}"
        t = s["test"] if s else {}
        v = s["valid"] if s else {}
        rows.append([
            run.corpus, run.model, run.variant, "+".join(run.modalities),
            len(s["seeds"]) if s else 0,
            t.get("wf1", {}).get("mean"), _std(t.get("wf1")),
            t.get("acc", {}).get("mean"), _std(t.get("acc")),
            v.get("wf1", {}).get("mean"), _std(v.get("wf1")),
            t.get("macro_f1", {}).get("mean"), s["params"] if s else None,
            (s or {}).get("seconds_to_best", {}).get("mean"),
            ";".join(sorted(run.tables)), str(res.run_dir(run).relative_to(res.out)), status]
            + (res.feat_csv(run) + [run.text, res.finetunes(run)] if res.axis else [])
            + [res.run_overrides(run)])
    return _write_csv(res.out / "accuracy.csv", ACCURACY_COLUMNS + [
        "valid_wf1_mean", "valid_wf1_std", "macro_f1_mean", "params", "seconds_to_best_mean",
        "tables", "run_dir", "status"]
        + (["features", "text_encoder", "encoder_finetunes"] if res.axis else [])
        + ["overrides"], rows)


def _table_main(res: _Results) -> list[Path]:
    if not res.in_table("main"):
        return res.skip("table1_main", "no runs planned for this table")
    md = ["# Table 1: test results per model (per-class F1, W-F1, accuracy)", "",
          "Validation-selected test metrics, percent. " + res.what(res.in_table("main")), ""]
    csv_rows = []
    for corpus in res.corpora("main"):
        runs = res.in_table("main", corpus)
        labels = next((res.get(r)["label_names"] for r in runs if res.get(r)), [])
        md += [f"## {corpus}", ""]
        rows = []
        for run in runs:
            s = res.get(run)
            t = s["test"] if s else None
            rows.append([run.model, *res.feat_md(run), _mods(run), s["params"] if s else "-"]
                        + [_pm(t["per_class_f1"].get(lab)) if t else "failed" for lab in labels]
                        + [_pm(t["wf1"]) if t else "failed", _pm(t["acc"]) if t else "failed"])
            if t:
                for lab in labels:
                    m = t["per_class_f1"][lab]
                    csv_rows.append([corpus, run.model, *res.feat_csv(run),
                                     "+".join(run.modalities), len(s["seeds"]), f"f1[{lab}]",
                                     m["mean"], _std(m), res.run_overrides(run)])
                for key in ("wf1", "acc", "macro_f1"):
                    csv_rows.append([corpus, run.model, *res.feat_csv(run),
                                     "+".join(run.modalities), len(s["seeds"]), key,
                                     t[key]["mean"], _std(t[key]), res.run_overrides(run)])
        md += [_md_table(["model", *res.feat_header, "mod.", "params"] + labels + ["W-F1", "Acc"],
                         rows), ""]
    if res.axis:
        md += [FEATURES_NOTE, ""]
    (res.out / "table1_main.md").write_text("\n".join(md))
    return [res.out / "table1_main.md", _write_csv(
        res.out / "table1_main.csv",
        ["corpus", "model", *res.feat_header, "modalities", "seeds", "metric", "mean", "std",
         "overrides"], csv_rows)]


def _delta_rows(res: _Results, table: str, key_of, base_of) -> tuple[list, list]:
    """Rows ``(corpus, name, wf1, acc, delta wf1, delta acc)`` for a comparison table."""
    md_rows, csv_rows = [], []
    for corpus in res.corpora(table):
        for run in res.in_table(table, corpus):
            s, base = res.get(run), res.get(base_of(run))
            name = key_of(run)
            md_name, csv_name = [*name, *res.feat_md(run)], [*name, *res.feat_csv(run)]
            tail = [res.seeds(run), res.run_overrides(run)]  # CSV: what the row is made of
            if not s:
                md_rows.append([corpus, *md_name, "failed", "failed", "", ""])
                csv_rows.append([corpus, *csv_name, None, None, None, None, None, None, *tail])
                continue
            t = s["test"]
            dw = t["wf1"]["mean"] - base["test"]["wf1"]["mean"] if base else None
            da = t["acc"]["mean"] - base["test"]["acc"]["mean"] if base else None
            md_rows.append([corpus, *md_name, _pm(t["wf1"]), _pm(t["acc"]),
                            "" if dw is None or run is base_of(run) else f"{dw:+.2f}",
                            "" if da is None or run is base_of(run) else f"{da:+.2f}"])
            csv_rows.append([corpus, *csv_name, t["wf1"]["mean"], _std(t["wf1"]),
                             t["acc"]["mean"], _std(t["acc"]), dw, da, *tail])
    return md_rows, csv_rows


def _table_ablation(res: _Results) -> list[Path]:
    if not res.in_table("ablation"):
        return res.skip("table3_ablation", "no runs planned for this table")
    md_rows, csv_rows = _delta_rows(
        res, "ablation", lambda r: [r.model, r.variant, _mods(r)],
        lambda r: res.full(r.corpus, r.model, features=r.features))
    md = ["# Table 3: ablations (test W-F1 / accuracy, change against the full model)", "",
          "w/o PE: no position encoding (Eq. 10); w/o BLS: no broad learning system or L_norm "
          "(Eq. 12-15); w/o PFM: modalities summed without the probability weights of Eq. 17.",
          "", res.what(res.in_table("ablation")), "",
          _md_table(["corpus", "model", "variant", "mod.", *res.feat_header, "W-F1", "Acc",
                     "Δ W-F1", "Δ Acc"], md_rows), ""]
    (res.out / "table3_ablation.md").write_text("\n".join(md))
    return [res.out / "table3_ablation.md", _write_csv(
        res.out / "table3_ablation.csv", ["corpus", "model", "variant", "modalities",
                                          *res.feat_header, "wf1_mean",
                                          "wf1_std", "acc_mean", "acc_std", "delta_wf1",
                                          "delta_acc", "seeds", "overrides"], csv_rows)]


def _table_reading(res: _Results, table: str, title: str, explain: str) -> list[Path]:
    """One of :data:`~merc.bench.suite.READING_TABLES`: each model's variant beside its default
    on validation *and* test (the variant is not chosen by either, so both are shown), with the
    paired difference over the shared seeds and its t-test p."""
    from merc.training.stats import paired_test

    name = f"table_{table}"
    if not res.in_table(table):
        return res.skip(name, "no runs planned for this table")
    md_rows, csv_rows = [], []
    for corpus in res.corpora(table):
        for run in res.in_table(table, corpus):
            base_run = res.full(corpus, run.model, features=run.features)
            s, base = res.get(run), res.get(base_run) if base_run else None
            row = [corpus, run.model, run.variant, _mods(run)]
            csv_row = [corpus, run.model, run.variant, "+".join(run.modalities)]
            tail = [res.seeds(run), res.run_overrides(run)]
            if not s:
                md_rows.append([*row, *res.feat_md(run), "failed", "failed", "failed", "", "", ""])
                csv_rows.append([*csv_row, *res.feat_csv(run), *[None] * 10, *tail])
                continue
            v, t = s["valid"]["wf1"], s["test"]["wf1"]
            dv = dt = p = None
            if base and run is not base_run:
                dv = v["mean"] - base["valid"]["wf1"]["mean"]
                seeds = dict(zip(s["seeds"], t["per_seed"]))
                ref = dict(zip(base["seeds"], base["test"]["wf1"]["per_seed"]))
                shared = sorted(set(seeds) & set(ref))
                test = paired_test([seeds[k] for k in shared], [ref[k] for k in shared])
                dt, p = test["mean_diff"], test["t_pvalue"]
            md_rows.append([*row, *res.feat_md(run), _pm(v), _pm(t), _pm(s["test"]["acc"]),
                            "" if dv is None else f"{dv:+.2f}",
                            "" if dt is None else f"{dt:+.2f}",
                            "" if p is None else f"{p:.3f}"])
            csv_rows.append([*csv_row, *res.feat_csv(run), v["mean"], _std(v), t["mean"], _std(t),
                             s["test"]["acc"]["mean"], _std(s["test"]["acc"]), dv, dt, p,
                             base_run.variant if base_run and run is not base_run else None,
                             *tail])
    md = [f"# {title}", "", explain, "", res.what(res.in_table(table)), "",
          _md_table(["corpus", "model", "variant", "mod.", *res.feat_header, "valid W-F1",
                     "test W-F1", "test Acc", "Δ valid", "Δ test", "p (test)"], md_rows), ""]
    (res.out / f"{name}.md").write_text("\n".join(md))
    return [res.out / f"{name}.md", _write_csv(
        res.out / f"{name}.csv",
        ["corpus", "model", "variant", "modalities", *res.feat_header, "valid_wf1_mean",
         "valid_wf1_std", "wf1_mean", "wf1_std", "acc_mean", "acc_std", "delta_valid_wf1",
         "delta_wf1", "t_pvalue", "against", "seeds", "overrides"], csv_rows)]


_READING_TEXT = {
    "paper": ("The papers' literal models beside merc's readings (W-F1)",
              "`paper`: every choice at the paper's literal reading at once (each model's "
              "docstring lists them). `full`: merc's default. Δ = paper − full (valid: "
              "difference of means; test: paired over the shared seeds, t-test p). Nothing here "
              "chose anything: the defaults were chosen on validation before, one setting at a "
              "time."),
    "causal": ("Past-only context: the price of predicting live (W-F1)",
               "`causal`: no future anywhere in the model (Broad Mamba: forward SSM only, "
               "left-padded Conv1D; bc-LSTM: forward LSTM), the models `merc predict --live` "
               "and `/v1/live` stream. `full`: the "
               "bidirectional default. Δ = causal − full (valid: difference of means; test: "
               "paired over the shared seeds, t-test p)."),
}
"""Title and explanation of each table of :data:`~merc.bench.suite.READING_TABLES`."""


def _reading_tables(res: _Results) -> list[Path]:
    written: list[Path] = []
    for table in READING_TABLES:
        written += _table_reading(res, table, *_READING_TEXT[table])
    return written


def _table_modalities(res: _Results) -> list[Path]:
    if not res.in_table("modalities"):
        return res.skip("table4_modalities", "no runs planned for this table")

    def base(run):
        return res.full(run.corpus, run.model,
                        suite.default_modalities(suite.BENCH_CORPORA[run.corpus]), run.features)

    md_rows, csv_rows = _delta_rows(res, "modalities",
                                    lambda r: [r.model, "+".join(r.modalities)], base)
    md = ["# Table 4: modality subsets (test W-F1 / accuracy, change against all modalities)", "",
          res.what(res.in_table("modalities")), "",
          _md_table(["corpus", "model", "modalities", *res.feat_header, "W-F1", "Acc", "Δ W-F1",
                     "Δ Acc"], md_rows), ""]
    (res.out / "table4_modalities.md").write_text("\n".join(md))
    return [res.out / "table4_modalities.md", _write_csv(
        res.out / "table4_modalities.csv", ["corpus", "model", "modalities", *res.feat_header,
                                            "wf1_mean",
                                            "wf1_std", "acc_mean", "acc_std", "delta_wf1",
                                            "delta_acc", "seeds", "overrides"], csv_rows)]


def _fusion_name(run) -> str:
    return run.options.get("fusion", "pfm")


def _fig_fusion(res: _Results) -> list[Path]:
    if not res.in_table("fusion"):
        return res.skip("fig5_fusion", "no runs planned for this table")
    md_rows, csv_rows = _delta_rows(res, "fusion", lambda r: [_fusion_name(r)],
                                    lambda r: res.full(r.corpus, r.model, features=r.features))
    md = ["# Fig. 5: fusion strategies (test W-F1 / accuracy, change against PFM)", "",
          res.what(res.in_table("fusion")), "",
          _md_table(["corpus", "fusion", *res.feat_header, "W-F1", "Acc", "Δ W-F1", "Δ Acc"],
                    md_rows), ""]
    paths = [res.out / "fig5_fusion.md"]
    (res.out / "fig5_fusion.md").write_text("\n".join(md))
    paths.append(_write_csv(res.out / "fig5_fusion.csv",
                            ["corpus", "fusion", *res.feat_header, "wf1_mean", "wf1_std",
                             "acc_mean", "acc_std", "delta_wf1", "delta_acc", "seeds",
                             "overrides"], csv_rows))
    # The plot reads (corpus, bar name, W-F1 mean, std); a features column joins the bar name.
    n = len(res.feat_header)
    done = [(r[0], r[1] if not n or r[2] == FROZEN else f"{r[1]} [{r[2]}]", *r[2 + n:])
            for r in csv_rows if r[2 + n] is not None]
    if done:
        plt = _pyplot()
        corpora = list(dict.fromkeys(r[0] for r in done))
        fusions = list(dict.fromkeys(r[1] for r in done))
        fig, ax = plt.subplots(figsize=(3.2 + 1.8 * len(corpora), 3.4))
        width = 0.8 / len(fusions)
        for j, fu in enumerate(fusions):
            xs, ys, es = [], [], []
            for i, c in enumerate(corpora):
                row = next((r for r in done if r[0] == c and r[1] == fu), None)
                if row:
                    xs.append(i + j * width)
                    ys.append(row[2])
                    es.append(row[3] or 0.0)  # one seed: no error bar
            ax.bar(xs, ys, width, yerr=es, capsize=3, label=fu)
        ax.set_xticks([i + width * (len(fusions) - 1) / 2 for i in range(len(corpora))],
                      corpora)
        ax.set_ylabel("test W-F1 (%)")
        lo = min(r[2] - (r[3] or 0.0) for r in done)
        ax.set_ylim(max(0, lo - 5), min(100, max(r[2] + (r[3] or 0.0) for r in done) + 3))
        ax.legend(fontsize=8, title="fusion", title_fontsize=8, loc="upper left",
                  bbox_to_anchor=(1.01, 1.0))
        spread = "mean ± std" if res.n_seeds > 1 else "no spread"
        ax.set_title(f"Fusion strategies ({res.n_seeds} seed(s), {spread})", fontsize=10)
        paths.append(_save(fig, res.out / "fig5_fusion.png"))
    return paths


def _significance(res: _Results) -> list[Path]:
    from merc.training.stats import paired_test

    md_rows, csv_rows = [], []
    for corpus in res.corpora("main"):
        for run in res.in_table("main", corpus):
            # Against the reference model on the same text features.
            ref_run = res.full(corpus, REFERENCE_MODEL, features=run.features)
            ref = res.get(ref_run) if ref_run else None
            s = res.get(run)
            if not ref or run is ref_run or not s:
                continue
            ref_by_seed = dict(zip(ref["seeds"], ref["test"]["wf1"]["per_seed"]))
            by_seed = dict(zip(s["seeds"], s["test"]["wf1"]["per_seed"]))
            shared = sorted(set(by_seed) & set(ref_by_seed))
            t = paired_test([by_seed[k] for k in shared], [ref_by_seed[k] for k in shared])
            fmt = lambda p: "n/a" if p is None else ("<0.0001" if p < 1e-4 else f"{p:.4f}")  # noqa: E731
            md_rows.append([corpus, run.model, *res.feat_csv(run), REFERENCE_MODEL, t["n"],
                            f"{t['mean_diff']:+.2f}", fmt(t["t_pvalue"]),
                            fmt(t["wilcoxon_pvalue"])])
            csv_rows.append([corpus, run.model, *res.feat_csv(run), REFERENCE_MODEL, t["n"],
                             t["mean_diff"],
                             t["t_pvalue"], t["wilcoxon_pvalue"], res.run_overrides(run)])
    if not md_rows:
        return res.skip("significance", f"no finished run to pair with {REFERENCE_MODEL} "
                        "(the reference model) on the same corpus")
    md = ["# Paired significance against the reference model (test W-F1, shared seeds)", "",
          "mean diff = model − reference. p-values need at least 2 seeds (n/a otherwise); with "
          "5 seeds the Wilcoxon test cannot go below 0.0625.", "",
          res.what(res.in_table("main")), "",
          _md_table(["corpus", "model", *res.feat_header, "reference", "seeds", "mean diff",
                     "t-test p", "Wilcoxon p"], md_rows), ""]
    (res.out / "significance.md").write_text("\n".join(md))
    return [res.out / "significance.md", _write_csv(
        res.out / "significance.csv", ["corpus", "model", *res.feat_header, "reference", "n",
                                       "mean_diff", "t_pvalue", "wilcoxon_pvalue", "overrides"],
        csv_rows)]


# ----------------------------------------------------------------------------------- figures

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int = 120) -> Path:
    fig.tight_layout()
    # "tight": the saved area grows to hold every title and label instead of cutting them off.
    fig.savefig(path, dpi=dpi, bbox_inches="tight", pad_inches=0.1)
    _pyplot().close(fig)
    return path


def _seed_metrics(res: _Results, run) -> list[dict]:
    s = res.get(run)
    return [json.loads((res.run_dir(run) / f"seed_{k}" / "metrics.json").read_text())
            for k in (s["seeds"] if s else [])]


def _confusions(res: _Results) -> list[Path]:
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _pyplot()
    folder = res.out / "confusion"
    paths = []
    for run in res.in_table("main"):
        seeds = _seed_metrics(res, run)
        if not seeds:
            continue
        labels = res.get(run)["label_names"]
        cm = np.sum([np.asarray(m["test"]["confusion"]) for m in seeds], axis=0)
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        folder.mkdir(exist_ok=True)
        # At least 4.2 x 3.6 in: a 2-label matrix (MOSI) must still hold a two-line title and
        # readable cells; larger label sets grow with their count.
        n = len(labels)
        fig, ax = plt.subplots(figsize=(max(4.2, 1.6 + 0.75 * n), max(3.6, 1.4 + 0.7 * n)))
        ConfusionMatrixDisplay(norm, display_labels=labels).plot(
            ax=ax, values_format=".2f", cmap="Blues", colorbar=False, xticks_rotation=45)
        feats = "" if run.features == FROZEN else f", {run.features} features"
        ax.set_title(f"{run.corpus} {run.model}{feats}: test, rows = true\n"
                     f"(summed over {len(seeds)} seed(s), row-normalised)", fontsize=9)
        paths.append(_save(fig, folder / f"{run.corpus}_{run.model}{res.suffix(run)}.png",
                           dpi=130))
    return paths


def _epoch_curves(path: Path, epochs_run: int) -> dict[str, dict[int, float]]:
    """``metric -> {epoch: value}`` from a Lightning ``metrics.csv`` (epoch-level rows).

    Only epochs ``< epochs_run`` are training epochs; the re-validation of the selected
    checkpoint after training is logged at epoch ``epochs_run`` and is left out."""
    curves: dict[str, dict[int, float]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if not row.get("epoch") or int(float(row["epoch"])) >= epochs_run:
                continue
            for key in ("train_ce", "val_ce"):
                if row.get(key):
                    curves.setdefault(key, {})[int(float(row["epoch"]))] = float(row[key])
    return curves


def _loss_curves(res: _Results) -> list[Path]:
    plt = _pyplot()
    paths = []
    groups = [(corpus, features) for corpus in res.corpora("lnorm")
              for features in dict.fromkeys(r.features for r in res.in_table("lnorm", corpus))]
    for corpus, features in groups:
        pairs = []
        for run in res.in_table("lnorm", corpus):
            s = res.get(run)
            if run.features != features:
                continue
            if not s:
                continue
            seed_dir = res.run_dir(run) / f"seed_{s['seeds'][0]}"
            if (seed_dir / "metrics.csv").exists():
                epochs_run = json.loads((seed_dir / "metrics.json").read_text())["epochs_run"]
                name = "with L_norm" if run.variant == suite.FULL else "without L_norm"
                pairs.append((name, _epoch_curves(seed_dir / "metrics.csv", epochs_run),
                              s["seeds"][0]))
        if not pairs:
            continue
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        for (name, curves, _), color in zip(sorted(pairs), ("tab:blue", "tab:red")):
            for key, style in (("train_ce", "--"), ("val_ce", "-")):
                pts = sorted(curves.get(key, {}).items())
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=color,
                            label=f"{name}, {'train' if key == 'train_ce' else 'validation'}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("cross-entropy")
        feats = "" if features == FROZEN else f", {features} features"
        ax.set_title(f"{corpus}: loss with and without L_norm (seed {pairs[0][2]}{feats})",
                     fontsize=10)
        ax.legend(fontsize=8)
        tail = "" if features == FROZEN else f"_{features}"
        paths.append(_save(fig, res.out / f"fig6_loss_{corpus}{tail}.png"))
    return paths


def fused_representations(checkpoint: Path, split: str = "test"):
    """``(hidden (N, H), labels (N,), label_names)`` of a checkpoint on ``split``'s labelled
    utterances, with the checkpoint's own feature spec."""
    from merc.training.prepare import make_loader
    from merc.checkpoint import load_checkpoint
    from merc.training.evaluate import prepare_for_checkpoint
    from merc.training.loop import evaluate

    loaded = load_checkpoint(checkpoint)
    prepared = prepare_for_checkpoint(loaded)
    try:
        preds = evaluate(loaded.model, make_loader(prepared, split, 16), keep_hidden=True)
    except ValueError as e:
        raise ValueError(f"{loaded.config.model_name}: {e}") from None
    return preds.hidden, preds.y_true, loaded.label_names


LABEL_KINDS = {"iemocap": "emotion", "emodb": "emotion", "mosi": "sentiment",
               "dialoguernn-iemocap": "emotion", "mmgcn-iemocap": "emotion"}
"""What the labels of a corpus loader are; a loader that takes ``data.label`` (MELD and its
pickles) has that kind. A loader not listed (the generic JSONL) has labels of no known kind:
"label"."""


def label_kind(config_path: Path) -> str:
    """``emotion``, ``sentiment`` or, when the run's config does not say, ``label``."""
    from merc.config import ExperimentConfig

    try:
        data = ExperimentConfig.load(config_path).data
    except (OSError, ValueError):
        return "label"
    from merc.data.corpora import get_corpus

    try:
        if get_corpus(data.corpus).takes_label:
            return data.label
    except ValueError:
        pass
    return LABEL_KINDS.get(data.corpus, "label")


def _tsne(res: _Results) -> list[Path]:
    from sklearn.manifold import TSNE


    plt = _pyplot()
    paths = []
    refs = [r for corpus in res.corpora("main") for r in res.in_table("main", corpus)
            if r.model == REFERENCE_MODEL and r.variant == suite.FULL]
    for run in refs:
        corpus = run.corpus
        s = res.get(run)
        if not s:
            continue
        kind = label_kind(res.run_dir(run) / "config.yaml")
        seed_dir = res.run_dir(run) / f"seed_{s['seeds'][0]}"
        ckpt = seed_dir / json.loads((seed_dir / "metrics.json").read_text())["checkpoint"]
        h, y, labels = fused_representations(ckpt)
        xy = TSNE(n_components=2, init="pca", random_state=0,
                  perplexity=min(30.0, max(2.0, (len(h) - 1) / 3))).fit_transform(h)
        fig, ax = plt.subplots(figsize=(5.2, 4.4))
        cmap = plt.get_cmap("tab10")
        for i, lab in enumerate(labels):
            sel = y == i
            ax.scatter(xy[sel, 0], xy[sel, 1], s=4, color=cmap(i % 10), label=lab, alpha=0.7)
        ax.set_xticks([])
        ax.set_yticks([])
        feats = "" if run.features == FROZEN else f", {run.features} features"
        ax.set_title(f"{corpus}: t-SNE of {REFERENCE_MODEL} fused test representations\n"
                     f"(seed {s['seeds'][0]}{feats}, colour = true {kind}, n={len(h)})",
                     fontsize=9)
        ax.legend(fontsize=7, markerscale=3, loc="best", title=f"true {kind}",
                  title_fontsize=7)
        paths.append(_save(fig, res.out / f"fig7_tsne_{corpus}{res.suffix(run)}.png"))
    return paths
