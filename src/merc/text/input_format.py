"""The encoder input for one utterance: the utterance itself plus its dialogue context.

Context in the encoder input is the largest single gain in text ERC (EmoBERTa: past context
+12 W-F1 on IEMOCAP; speaker names +4.6). A fine-tuned merc encoder therefore sees, for target
utterance ``i`` of a conversation, token ids laid out as::

    [CLS] past_{i-P} ... past_{i-1} [SEP] target_i [SEP] future_{i+1} ... future_{i+F} [SEP]

where each piece is ``"Speaker: text"`` (``speakers=True``) or ``"text"``, tokenised on its own
without special tokens. The separators around the target mark it; the utterance vector is the
mean of the target span's output states (:attr:`EncodedInput.target`), so the context informs it
through attention without being averaged in. With no past context the layout starts
``[CLS] target_i [SEP]``; with no future it ends after the target's ``[SEP]``.

Truncation (``max_tokens``, the whole input): the target is always kept whole (it is cut only if
it alone exceeds the model's position limit, and that is counted in
:attr:`InputFormatter.truncated_targets`); context fills the remaining budget nearest utterance
first, alternating past and future (``i-1, i+1, i-2, i+2, ...``); the first context utterance
that does not fit whole is cut at its far end (a past utterance keeps its last tokens, a future
one its first tokens) and closes that side. So far context is always dropped first.

The ``packed`` layout (:attr:`ContextFormat.layout`) puts runs of consecutive utterances into
one input instead, each pooled from its own span, with up to ``past``/``future`` context
utterances around the run (:meth:`InputFormatter._packed`); every token is then encoded about
once instead of about ``past + future + 1`` times.

This module is the single place where inputs are formatted: ``merc finetune`` (training) and
feature extraction (:class:`merc.features.FeatureExtractor`, for training and prediction alike)
call :class:`InputFormatter` with the :class:`ContextFormat` stored in the encoder folder, so
formatting cannot drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from merc.config.context import LAYOUTS, POOLINGS, ContextFormat  # noqa: F401  (re-exported)


@dataclass
class EncodedInput:
    """One formatted encoder input."""

    ids: list[int]
    """Token ids, special tokens included: at most ``max_tokens``, or the target plus its (up to
    four) separators when the target alone is longer. In the ``packed`` layout every utterance
    of one chunk holds the *same* list object (the chunk is encoded once:
    :func:`merc.text.backbone.pad_inputs` groups inputs by it)."""
    target: tuple[int, int]
    """``[start, end)`` positions of the target utterance's tokens in ``ids`` (never empty: an
    empty utterance without a speaker prefix points at its closing separator)."""


class InputFormatter:
    """Formats every utterance of a conversation into an :class:`EncodedInput`.

    Args:
        tokenizer: A ``tokenizers.Tokenizer`` (the encoder folder's ``tokenizer.json``).
        fmt: The context window.
        cls_id, sep_id: The encoder's start and separator token ids (``[CLS]``/``[SEP]`` for
            BERT, ``<s>``/``</s>`` for RoBERTa).
        max_positions: The encoder's position limit (a hard cap on any input).
    """

    def __init__(self, tokenizer, fmt: ContextFormat, *, cls_id: int, sep_id: int,
                 max_positions: int = 512) -> None:
        # A private copy without the file's own padding/truncation settings: pieces are measured
        # and cut here, never padded or truncated behind our back.
        self.tokenizer = type(tokenizer).from_str(tokenizer.to_str())
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.fmt = fmt
        self.cls_id, self.sep_id = int(cls_id), int(sep_id)
        self.max_positions = int(max_positions)
        self.truncated_targets = 0
        """How many targets were longer than the position limit and had to be cut."""

    def pieces(self, texts: Sequence[str], speakers: Sequence[str]) -> list[list[int]]:
        """Token ids of each utterance (with its speaker prefix if configured), no specials."""
        strings = [f"{s}: {t}" if self.fmt.speakers and str(s).strip() else str(t)
                   for t, s in zip(texts, speakers)]
        return [e.ids for e in self.tokenizer.encode_batch(strings, add_special_tokens=False)]

    def conversation(self, texts: Sequence[str], speakers: Sequence[str]) -> list[EncodedInput]:
        """One :class:`EncodedInput` per utterance, in order.

        Args:
            texts: ``n`` utterance texts.
            speakers: ``n`` speaker names (ignored unless ``fmt.speakers``).
        """
        if len(texts) != len(speakers):
            raise ValueError(f"{len(texts)} texts but {len(speakers)} speakers")
        pieces = self.pieces(texts, speakers)
        if self.fmt.layout == "packed":
            return self._packed(pieces)
        return [self._one(pieces, i) for i in range(len(pieces))]

    def _packed(self, pieces: list[list[int]]) -> list[EncodedInput]:
        """The ``packed`` layout: ``[CLS] c_{a-P} [SEP] ... c_{a-1} [SEP] t_a [SEP] ... t_{b-1}
        [SEP] c_b [SEP] ... [SEP]`` for consecutive targets ``a..b-1``.

        Targets fill at most three quarters of the budget (at least one per chunk; one longer
        than the position limit is cut and counted), then context fills what is left nearest
        utterance first, alternating past and future within the ``past``/``future`` widths; a
        context utterance that does not fit whole is cut at its far end and closes its side.
        """
        fmt = self.fmt
        n = len(pieces)
        budget_all = min(fmt.max_tokens, self.max_positions)
        out: list[EncodedInput | None] = [None] * n
        a = 0
        while a < n:
            # Targets first: each costs its tokens + its separator, after [CLS].
            target_room = budget_all - 1 - (budget_all // 4 if (fmt.past or fmt.future) and n > 1
                                            else 0)
            b, used = a, 1
            while b < n and (b == a or used + len(pieces[b]) + 1 <= target_room):
                used += len(pieces[b]) + 1
                b += 1
            targets = [list(p) for p in pieces[a:b]]
            if len(targets[0]) > self.max_positions - 2:  # a lone target over the limit
                targets[0] = targets[0][:self.max_positions - 2]
                used = len(targets[0]) + 2
                self.truncated_targets += 1
            budget = budget_all - used
            taken: dict[int, list[list[int]]] = {-1: [], 1: []}
            is_open = {-1: fmt.past > 0 and a > 0, 1: fmt.future > 0 and b < n}
            width = {-1: fmt.past, 1: fmt.future}
            k = 1
            while budget > 1 and (is_open[-1] or is_open[1]):
                for side in (-1, 1):
                    j = a - k if side < 0 else b - 1 + k
                    if not is_open[side] or budget <= 1:
                        continue
                    if k > width[side] or not 0 <= j < n:
                        is_open[side] = False
                        continue
                    piece = pieces[j]
                    if len(piece) + 1 > budget:  # cut at the far end; nothing further this side
                        keep = budget - 1
                        piece = piece[len(piece) - keep:] if side < 0 else piece[:keep]
                        is_open[side] = False
                    taken[side].append(piece)
                    budget -= len(piece) + 1
                k += 1
            ids = [self.cls_id]
            for piece in reversed(taken[-1]):
                ids += piece + [self.sep_id]
            spans = []
            for piece in targets:
                start = len(ids)
                ids += piece
                spans.append((start, max(len(ids), start + 1)))  # empty: pool its separator
                ids.append(self.sep_id)
            for piece in taken[1]:
                ids += piece + [self.sep_id]
            for i, span in zip(range(a, b), spans):
                out[i] = EncodedInput(ids=ids, target=span)
            a = b
        return out  # type: ignore[return-value]

    def _one(self, pieces: list[list[int]], i: int) -> EncodedInput:
        fmt = self.fmt
        target = pieces[i]
        has_past = fmt.past > 0 and i > 0
        has_future = fmt.future > 0 and i + 1 < len(pieces)
        # [CLS] (past [SEP])? target [SEP] (future [SEP])?  A side's separator is reserved up
        # front and dropped again if no context from that side fits.
        specials = 2 + int(has_past) + int(has_future)
        limit = self.max_positions - specials
        if len(target) > limit:
            target = target[:limit]
            self.truncated_targets += 1
        budget = min(fmt.max_tokens, self.max_positions) - specials - len(target)
        taken: dict[int, list[list[int]]] = {-1: [], 1: []}  # side -> pieces, nearest first
        is_open = {-1: has_past, 1: has_future}
        width = {-1: fmt.past, 1: fmt.future}
        k = 1
        while budget > 0 and (is_open[-1] or is_open[1]):
            for side in (-1, 1):
                j = i + side * k
                if not is_open[side] or budget <= 0:
                    continue
                if k > width[side] or not 0 <= j < len(pieces):
                    is_open[side] = False
                    continue
                piece = pieces[j]
                if len(piece) > budget:  # cut at the far end; nothing further on this side
                    piece = piece[len(piece) - budget:] if side < 0 else piece[:budget]
                    is_open[side] = False
                taken[side].append(piece)
                budget -= len(piece)
            k += 1
        past, future = taken[-1], taken[1]
        ids = [self.cls_id]
        if past:
            for piece in reversed(past):
                ids += piece
            ids.append(self.sep_id)
        start = len(ids)
        ids += target
        end = len(ids)
        ids.append(self.sep_id)
        if future:
            for piece in future:
                ids += piece
            ids.append(self.sep_id)
        if end == start:  # empty utterance, no speaker prefix: pool its closing separator
            end = start + 1
        return EncodedInput(ids=ids, target=(start, end))
