"""merc's bundled default model: Broad Mamba trained on MELD text (MiniLM sentence embeddings).

The checkpoint and its model card (``MODEL_CARD.md``: data and licence, config, measured
validation-selected test W-F1) live in this folder; ``scripts/train_bundled_model.py`` rebuilds
both reproducibly from the MELD CSV release. ``merc predict`` without ``--model`` uses it.
"""

from __future__ import annotations

from pathlib import Path

BUNDLED_NAME = "broad-mamba-meld-text.ckpt"
"""File name of the bundled checkpoint inside this package."""


def bundled_checkpoint() -> Path:
    """Path of the bundled checkpoint.

    Raises:
        FileNotFoundError: the package was installed without it (e.g. a source checkout where
            ``scripts/train_bundled_model.py`` has not been run).
    """
    path = Path(__file__).with_name(BUNDLED_NAME)
    if not path.is_file():
        raise FileNotFoundError(
            f"the bundled model {path} is missing from this installation; reinstall merc, pass "
            "--checkpoint RUN_DIR/seed_<s>/best.ckpt, or rebuild it with scripts/train_bundled_model.py")
    return path


def model_card() -> str:
    """The bundled model's card (Markdown)."""
    return Path(__file__).with_name("MODEL_CARD.md").read_text(encoding="utf-8")


def example_conversation() -> Path:
    """A short conversation written for merc's demo (``merc/examples/dinner_party.jsonl``)."""
    return Path(__file__).parent.parent / "examples" / "dinner_party.jsonl"
