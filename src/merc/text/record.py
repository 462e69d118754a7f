"""What a ``merc finetune`` encoder folder is: its record (``merc_encoder.json``: input format,
pooling, special tokens, how it was trained), how to recognise one, its tokenizer, and the
fingerprint of the corpus it was fine-tuned on. Read by the backbone loader
(:mod:`merc.text.backbone`), by extraction (:mod:`merc.text.folder`) and by ``merc finetune``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from merc.data.conversation import split_fingerprint
from merc.errors import MercInputError
from merc.text.input_format import ContextFormat

RECORD_FILE = "merc_encoder.json"
"""Name of the record inside an encoder folder."""

RECORD_VERSION = 1


def is_encoder_folder(path: str | Path | None) -> bool:
    """Whether ``path`` is a merc encoder folder (holds ``merc_encoder.json``)."""
    if path is None:
        return False
    try:
        return (Path(path).expanduser() / RECORD_FILE).is_file()
    except (OSError, ValueError):
        return False


@dataclass
class EncoderRecord:
    """``merc_encoder.json``: everything needed to format inputs exactly as in training, and
    how the encoder was trained."""

    context: ContextFormat
    """Input layout (context window, speaker names, token budget)."""
    cls_id: int
    """Start token id (``[CLS]`` / ``<s>``)."""
    sep_id: int
    """Separator token id (``[SEP]`` / ``</s>``)."""
    pad_id: int
    """Padding token id."""
    max_positions: int
    """The encoder's position limit."""
    dim: int
    """Output dimension of the pooled utterance vector."""
    pooling: str = "target-mean"
    """How the target span's final hidden states become the vector: ``target-mean`` (their
    mean) or ``first-last`` (mean of its first and last); :func:`merc.text.backbone.
    pool_target`."""
    base_model: str = ""
    """What was fine-tuned (the bundled package name or the folder given)."""
    adapter: dict[str, Any] | None = None
    """``None`` for a folder holding the whole encoder (``model.safetensors``). For a LoRA
    folder (``adapter.safetensors`` only): ``rank``, ``alpha``, ``scale`` and ``base_sha256``
    (SHA-256 of the base model's ``model.safetensors``; loading refuses another base)."""
    training: dict[str, Any] = field(default_factory=dict)
    """The fine-tuning settings (``FinetuneConfig``), the corpus (name, fingerprint, labels),
    per-epoch validation W-F1 and seconds, the selected epoch and total time."""
    version: int = RECORD_VERSION

    def save(self, folder: str | Path) -> None:
        d = asdict(self)
        d["context"] = self.context.to_dict()
        (Path(folder) / RECORD_FILE).write_text(json.dumps(d, indent=2))

    @classmethod
    def load(cls, folder: str | Path) -> "EncoderRecord":
        path = Path(folder).expanduser() / RECORD_FILE
        try:
            d = json.loads(path.read_text())
            if not isinstance(d, dict):
                raise ValueError("not a JSON object")
            if d.get("version") != RECORD_VERSION:
                raise ValueError(f"record version {d.get('version')!r}, this merc reads "
                                 f"{RECORD_VERSION}")
            # Records written before the packed layout existed were all ``window``.
            d["context"] = ContextFormat.from_dict({"layout": "window", **d["context"]})
            return cls(**d)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise MercInputError(path, f"not a readable merc encoder record: {e}",
                                 field="merc_encoder") from None


def load_tokenizer(model_dir: str | Path):
    """The folder's ``tokenizers.Tokenizer`` (from ``tokenizer.json``)."""
    from tokenizers import Tokenizer

    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise MercInputError(path, "missing: merc needs a fast tokenizer (tokenizer.json) in the "
                             "encoder folder", field="text_encoder")
    return Tokenizer.from_file(str(path))


def corpus_fingerprint(conversations: Sequence[Any]) -> str:
    """What a fine-tune saw: SHA-256 over the :func:`~merc.data.conversation.split_fingerprint`
    of the train dialogues and that of the validation dialogues (test dialogues, and where the
    validation dialogues sit among the train ones, do not change it)."""
    parts = [split_fingerprint([c for c in conversations if getattr(c, "split", None) == s])
             for s in ("train", "valid")]
    return hashlib.sha256(":".join(parts).encode()).hexdigest()
