"""Live conversations: one prediction per utterance as it arrives, in constant time per utterance.

A :class:`LiveSession` (``Predictor.session()``) holds one conversation's state: the causal
model's per-modality state (:meth:`merc.models.broad_mamba.BroadMamba.init_stream`: the Conv1D's
last ``k - 1`` inputs and the SSM state, fixed size) and the last few utterances a contextual
text encoder reads as past context. :meth:`LiveSession.add` computes the new utterance's
features through the one feature path (:meth:`Predictor._features`, as ``merc predict``), takes
the model one step, and returns the utterance's prediction -- the same probabilities, up to float
rounding, as the causal model run offline on the whole conversation, because nothing in it reads
ahead.

What may run live:

* the model must stream (a registered model with ``init_stream``/``step`` in its causal
  configuration: ``--model broad-mamba`` variant ``causal``);
* the text encoder must not read ahead: a sentence encoder (each utterance alone) or a ``merc
  finetune`` folder with the ``window`` layout and ``future=0`` (then the last ``past``
  utterances are kept as its context). A ``packed`` encoder attends across the utterances of a
  chunk, later ones included, and is refused.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any

from merc.data.conversation import Conversation
from merc.data.conversation_file import MAX_UTTERANCE_CHARS
from merc.errors import MercInputError
from merc.predict.results import UtterancePrediction, build_prediction, calibrated_probs


def text_context_window(predictor) -> int:
    """How many utterances (the new one included) the text features of an utterance depend on:
    1 for a sentence encoder, ``past + 1`` for a past-only encoder folder.

    Raises:
        MercInputError: the encoder reads ahead (``future > 0`` or the packed layout).
    """
    from merc.features.spec import TextSource

    text = predictor.spec.text
    if "text" not in predictor.modalities or text is None:
        return 1
    source = TextSource.parse(text)
    if source.kind != "folder":
        return 1
    from merc.text.record import EncoderRecord

    ctx = EncoderRecord.load(source.name).context
    if ctx.future > 0 or ctx.layout != "window":
        raise MercInputError(predictor.checkpoint, f"its text encoder reads ahead ("
                             f"{ctx.describe()}); live prediction needs a past-only encoder: "
                             "merc finetune ... finetune.context.future=0 "
                             "finetune.context.layout=window", field="feature_spec.text")
    return ctx.past + 1


def check_streams(predictor) -> int:
    """That ``predictor`` can run live: its model streams and its text encoder reads no
    future. Returns :func:`text_context_window`.

    Raises:
        MercInputError: one line naming the checkpoint, the field and what would stream.
    """
    model = getattr(getattr(predictor, "loaded", None), "model", None)
    if not hasattr(model, "init_stream") or not getattr(model.config, "causal", False):
        raise MercInputError(predictor.checkpoint, f"{predictor.model_name} is not a causal "
                             "model; live prediction needs one trained with the 'causal' "
                             "variant (merc train --model broad-mamba --variant causal)",
                             field="model.causal")
    return text_context_window(predictor)


class LiveSession:
    """One live conversation (see the module docstring). Create with ``Predictor.session()``.

    Args:
        predictor: A :class:`~merc.predict.Predictor` whose model streams.
        conversation_id: Reported in the predictions (default ``live``).
        base_dir: Folder that ``audio``/``video`` paths are resolved against and must stay in
            (unless the predictor allows outside media); default the current directory.
        source: Named in input errors (``merc serve`` says ``request``).
        max_chars: Longest ``text`` accepted (``None``: no limit).
    """

    def __init__(self, predictor, conversation_id: str = "live", *,
                 base_dir: str | Path | None = None, source: str = "<live>",
                 max_chars: int | None = MAX_UTTERANCE_CHARS) -> None:
        window = check_streams(predictor)
        model = predictor.loaded.model
        self.predictor = predictor
        self.id = str(conversation_id)
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self.source, self.max_chars = source, max_chars
        # The utterances before the new one that its text features read (none for a sentence
        # encoder): each add extracts features for these plus the new one, never more.
        self.window: deque[dict[str, Any]] = deque(maxlen=window - 1)
        self.state = model.init_stream(device=predictor.device)
        self.count = 0

    def add_line(self, line: str, lineno: int, source: str = "<stdin>") -> UtterancePrediction:
        """:meth:`add` for one JSON line (``merc predict --live``): a bad line is a one-line
        :class:`MercInputError` naming the source, line and field, and leaves the session as
        it was."""
        import json

        from merc.data.validate import DuplicateKey, loads_json

        where = f"line {lineno}"
        try:
            record = loads_json(line)
        except DuplicateKey as e:
            raise MercInputError(source, f"{where}: key {e.key!r} given twice",
                                 dialogue=self.id, field=str(e.key)) from None
        except json.JSONDecodeError as e:
            raise MercInputError(source, f"{where}: not JSON ({e.msg})", dialogue=self.id,
                                 field="line") from None
        if not isinstance(record, dict):
            raise MercInputError(source, f"{where}: expected one utterance object "
                                 '{"speaker": ..., "text": ...}', dialogue=self.id,
                                 field="line")
        try:
            return self.add(record)
        except MercInputError as e:
            raise MercInputError(source, f"{where}: {e.args[0] if e.args else e}",
                                 dialogue=self.id) from None

    def add(self, utterance: dict[str, Any]) -> UtterancePrediction:
        """Predict one new utterance: ``{"speaker", "text"}`` plus optional ``audio`` /
        ``video`` paths (relative to the current directory) and ``id``, as one line of a
        ``merc predict`` conversation file. Cost independent of how many came before: the
        features of the new utterance and of the few earlier ones its text encoder reads. A
        model that hears needs each utterance's wav (one line names the field otherwise)."""
        from merc.data.collate import DialogueDataset, collate_dialogues
        from merc.data.conversation_file import conversation_from_records, default_utterance_id

        p = self.predictor
        record = dict(utterance)
        # Only the new utterance's media are analysed; earlier ones serve as text context only.
        past = [{k: v for k, v in r.items() if k not in ("audio", "video")} for r in self.window]
        conv = conversation_from_records(past + [record], source=self.source,
                                         conversation_id=self.id, base_dir=self.base_dir,
                                         allow_outside_media=p.allow_outside_media,
                                         max_chars=self.max_chars)
        uid = record.get("id") or record.get("utterance_id") or default_utterance_id(self.count)
        conv = replace(conv, id=self.id, labels=None)
        # A model that hears needs each live utterance's wav (its features are computed alone).
        ready = p._features([conv], progress=False)
        batch = collate_dialogues([DialogueDataset(ready, p.label_names, p.modalities)[0]])
        batch = batch.to(p.device)
        features = {m: batch.features[m][:, -1] for m in p.modalities}          # (1, D_m)
        logits, weights = p.loaded.model.step(features, self.state)
        probs = calibrated_probs(logits, p.loaded.temperature)                  # (1, C)
        last = Conversation(id=self.id, split="test", speakers=[conv.speakers[-1]],
                            utterances=[conv.utterances[-1]], labels=None,
                            utterance_ids=[str(uid)])
        pred = build_prediction(
            last, probs, ({m: w.float().cpu().numpy() for m, w in weights.items()}
                          if weights is not None else None),
            label_names=p.label_names, model=p.model_name, checkpoint=str(p.checkpoint),
            modalities=p.modalities, gold=[record.get("label")])
        self.window.append(record)
        self.count += 1
        return pred.utterances[0]
