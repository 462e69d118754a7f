"""How a fine-tuned text encoder's input is laid out: :class:`ContextFormat`, a config section
(``finetune.context.*``) stored in every encoder folder. The formatter that applies it is
:class:`merc.text.input_format.InputFormatter`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from merc.errors import ConfigError

POOLINGS = ("target-mean", "first-last")
LAYOUTS = ("window", "packed")
"""How utterances become encoder inputs (``finetune.context.layout``): one input per utterance
with its own context window, or consecutive utterances packed into one input."""
"""How a fine-tuned encoder turns the target span's output states into one vector
(``finetune.pooling``; :func:`merc.text.backbone.pool_target`)."""


@dataclass
class ContextFormat:
    """How an utterance and its dialogue context become one encoder input."""

    past: int = 4
    """Past utterances in the window (0 = none); the nearest are kept first. Chosen with
    ``future`` on the fine-tunes' validation W-F1 (docs/results.md, "Fine-tuned text
    encoders")."""
    future: int = 1
    """Future utterances in the window (0 = none; a causal, online setting needs 0)."""
    speakers: bool = False
    """Prefix each utterance with its speaker's name (``"Ana: ..."``). Off by default (a tie on
    the fine-tunes' validation W-F1); corpora with real speaker names (not M/F labels) may gain
    from it (docs/results.md, "Speaker names and partial fine-tuning")."""
    max_tokens: int = 256
    """Token budget of the whole input, special tokens included; far context is dropped first,
    the target is never cut (unless it alone exceeds the encoder's position limit)."""
    layout: str = "packed"
    """``packed`` (default): consecutive utterances share one input of at most ``max_tokens``
    tokens, each pooled from its own span, with up to ``past``/``future`` utterances of context
    on either side of the run; every token is encoded about once (DF-ERC's official code packs
    whole dialogues, ``WHULACC/DFERC src/loader.py``). ``window``: one input per utterance, the
    target between separators inside its own ``past``/``future`` window, so every utterance is
    encoded about ``past + future + 1`` times. ``packed`` was chosen on validation and costs
    less time per epoch (docs/results.md, "Packed inputs and LoRA")."""

    def __post_init__(self) -> None:
        for name in ("past", "future"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"context.{name}", f"expected an integer >= 0, got {v!r}")
        if (not isinstance(self.max_tokens, int) or isinstance(self.max_tokens, bool)
                or self.max_tokens < 8):
            raise ConfigError("context.max_tokens", f"expected an integer >= 8, got "
                              f"{self.max_tokens!r}")
        if not isinstance(self.speakers, bool):
            raise ConfigError("context.speakers", f"expected true/false, got {self.speakers!r}")
        if self.layout not in LAYOUTS:
            raise ConfigError("context.layout", f"expected one of {list(LAYOUTS)}, got "
                              f"{self.layout!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ContextFormat":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"context.{sorted(unknown)[0]}", f"unknown option; known: "
                              f"{sorted(known)}")
        return cls(**d)

    def describe(self) -> str:
        """Short human-readable form, e.g. ``past 4 + future 1, speakers, <=128 tokens``."""
        window = ("utterance alone" if not (self.past or self.future) else
                  " + ".join(x for x in (f"past {self.past}" if self.past else "",
                                         f"future {self.future}" if self.future else "") if x))
        packed = "packed, " if self.layout == "packed" else ""
        return (f"{packed}{window}, {'speakers' if self.speakers else 'no speakers'}, "
                f"<={self.max_tokens} tokens")

