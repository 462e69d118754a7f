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
    """Past utterances in the window (0 = none); the nearest are kept first. Chosen on
    validation with ``future``: utterance alone 54.62, past 4 57.56, past 4 + future 1 58.20
    (mean fine-tune validation W-F1 over MELD and IEMOCAP; scripts/finetune_suite.py)."""
    future: int = 1
    """Future utterances in the window (0 = none; a causal, online setting needs 0)."""
    speakers: bool = False
    """Prefix each utterance with its speaker's name (``"Ana: ..."``). Off by default: chosen on
    validation (fine-tuned MiniLM, mean over MELD and IEMOCAP, a tie: 58.20 off vs 58.19 on;
    MELD's real names gained 0.66, IEMOCAP's M/F labels cost 0.69; packed input on a CPU:
    58.21 off vs 57.61 on). Through Broad Mamba on the features the names win instead (MELD
    +0.82, IEMOCAP +0.19 validation W-F1; docs/finetune.md), so turn it on for corpora with
    real speaker names."""
    max_tokens: int = 256
    """Token budget of the whole input, special tokens included; far context is dropped first,
    the target is never cut (unless it alone exceeds the encoder's position limit). 256 was
    measured with ``packed``; the ``window`` study used 128."""
    layout: str = "packed"
    """``packed`` (default): consecutive utterances share one input of at most ``max_tokens``
    tokens, each pooled from its own span, with up to ``past``/``future`` utterances of context
    on either side of the run; every token is encoded about once (DF-ERC's official code packs
    whole dialogues, ``WHULACC/DFERC src/loader.py``). ``window``: one input per utterance, the
    target between separators inside its own ``past``/``future`` window, so every utterance is
    encoded about ``past + future + 1`` times. Chosen on validation (2-core CPU, full fine-tune
    of MiniLM, the encoder's own validation W-F1): MELD packed 58.59 vs window 58.03 at 2.6x
    less time per epoch, IEMOCAP packed 57.83 vs window 56.57 (GPU); docs/finetune.md."""

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

