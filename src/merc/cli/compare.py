"""``merc compare``: paired significance test of two runs over their shared seeds."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from merc.errors import MercInputError

HELP = "paired significance test of two runs over shared seeds"

#: Its line in the table of `merc --help` (rendered from the parser by args.synopsis).
MAIN_FLAGS = ("run_a", "run_b", "--metric")


def add_parser(sub) -> argparse.ArgumentParser:
    c = sub.add_parser("compare", help=HELP)
    c.add_argument("run_a", help="run directory (with summary.json)")
    c.add_argument("run_b", help="run directory (with summary.json)")
    c.add_argument("--metric", default="wf1", choices=("wf1", "acc", "macro_f1"))
    return c


def run(args: argparse.Namespace) -> int:
    from merc.training.provenance import check_comparable
    from merc.training.stats import paired_test

    names = (args.run_a, args.run_b)
    runs = []
    for d in names:
        path = Path(d) / "summary.json"
        if not path.exists():
            raise MercInputError(path, "summary.json not found (is this a merc run directory?)")
        runs.append(json.loads(path.read_text()))
    note = check_comparable(runs[0], runs[1], names)  # different corpora: refused here
    if note:
        print(f"merc compare: {note}", file=sys.stderr)
    by_seed = [dict(zip(r["seeds"], r["test"][args.metric]["per_seed"])) for r in runs]
    shared = sorted(set(by_seed[0]) & set(by_seed[1]))
    if not shared:
        raise ValueError("the two runs share no seeds; a paired test needs the same seeds")
    a, b = ([s[k] for k in shared] for s in by_seed)
    res = paired_test(a, b)
    # Both means over the shared seeds, so that they and the difference describe the same
    # seeds; each run's mean over all its seeds is kept beside it.
    for r, d, scores in zip(runs, names, (a, b)):
        m = r["test"][args.metric]
        print(f"{d}: {r['model']} on {r['corpus']}, {len(r['seeds'])} seed(s) {r['seeds']}: test "
              f"{args.metric} {sum(scores) / len(scores):.2f} over the {len(shared)} shared "
              f"seed(s) (all seeds {m['mean']:.2f} ± {m['std']:.2f})")
    fmt = lambda p: "n/a" if p is None else f"{p:.4f}"  # noqa: E731
    print(f"paired over seeds {shared} (shared): mean diff {names[0]} − {names[1]} "
          f"{res['mean_diff']:+.2f}, t-test p={fmt(res['t_pvalue'])}, "
          f"Wilcoxon p={fmt(res['wilcoxon_pvalue'])}")
    if len(shared) < 5:
        print(f"caution: only {len(shared)} shared seed(s); a paired test over fewer than 5 "
              "seeds says little (with 5, the exact Wilcoxon test cannot go below p=0.0625); "
              "train more seeds before reading the p-values", file=sys.stderr)
    return 0
