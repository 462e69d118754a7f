"""End-to-end on the real corpora (skipped when ../shared/data is absent).

Uses MOSI's shipped feature vectors so no text encoding is needed and the run takes seconds.
"""

from __future__ import annotations

import json

import pytest

from merc.cli import main


@pytest.mark.real_data
def test_mosi_train_is_validation_selected_and_learns(real_data, tmp_path):
    out = tmp_path / "mosi"
    code = main(["train", "--corpus", "mosi", "--data-dir", str(real_data), "--model", "bc-lstm",
                 "--seeds", "1", "--out", str(out), "train.max_epochs=6", "train.patience=3"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["modalities"] == ["text", "audio", "video"]
    # MOSI has no validation split: 10% of train videos, never test videos.
    assert summary["valid_split"].startswith("seeded: 6 of 62 train dialogues")
    # 62% of test utterances are positive: a working model must clearly beat the majority class.
    assert summary["test"]["acc"]["mean"] > 68
