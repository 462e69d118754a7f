"""The model behind ``merc serve``: request validation into conversations, one model call at a
time with the requests that wait batched together, and the bounded queue in front of it."""

from __future__ import annotations

import math
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from merc.data.conversation_file import MAX_UTTERANCE_CHARS, default_utterance_id
from merc.data.conversation import Conversation
from merc.data.conversation_file import conversation_from_records
from merc.errors import MercInputError
from merc.predict.predictor import Predictor
from merc.predict.serve.bodies import RequestError

DEFAULT_MAX_QUEUE = 4
"""Requests admitted to the model at once by default (see ``Limits.max_queue``)."""

MAX_BATCH_UTTERANCES = 512
"""Most utterances the server predicts in one model call when requests wait for the model."""


@dataclass
class Limits:
    """What one request may ask for; beyond it the answer is 413 naming the field."""

    max_utterances: int = 2000
    """Utterances per conversation."""
    max_chars: int = MAX_UTTERANCE_CHARS
    """Characters per utterance text."""
    max_conversations: int = 64
    """Conversations per batch request."""
    max_body_bytes: int = 2_000_000
    """Bytes of a JSON request body."""
    max_upload_bytes: int = 50_000_000
    """Bytes of all uploaded files of one request together."""
    max_live_sessions: int = 8
    """Live conversations (``/v1/live`` WebSockets) open at once; the next handshake answers 503.
    Each holds a few KB of model state and a folder of its uploads."""
    live_idle_seconds: float = 300.0
    """Seconds a live conversation may stay silent before the server closes it."""
    max_queue: int = DEFAULT_MAX_QUEUE
    """Requests admitted to the model at once (running + waiting); more answer 503 at once. An
    admitted request waits for about this many requests' model time. On 2 cores the bundled
    model answers 7-8 twenty-utterance conversations per second; ``merc bench serve --clients
    8`` measured accepted p99 0.83-0.97 s with 4 on an otherwise idle machine (1.0-1.3 s while
    other jobs used the cores), 1.2-1.4 s with 5, 6 or 8, and 0.69 s with 3 at 16 % less
    throughput (smaller batches); with 64 clients, 0.94-1.5 s with 3 or 4. Raise it on more
    cores."""


def _records(payload: Any) -> tuple[str, list]:
    """``(id, utterance records)`` of one conversation payload (object or list)."""
    if isinstance(payload, list):
        return "conversation", payload
    if not isinstance(payload, dict):
        raise RequestError(422, f"a conversation is an object with 'utterances' or a list of "
                           f"utterances, got {type(payload).__name__}", "conversation")
    unknown = sorted(set(payload) - {"id", "dialogue_id", "utterances"})
    if unknown:
        raise RequestError(422, f"unknown field {unknown[0]!r} (allowed: id, utterances)",
                           unknown[0])
    if not isinstance(payload.get("utterances"), list):
        raise RequestError(422, "'utterances' must be a list", "utterances")
    cid = payload.get("id", payload.get("dialogue_id", "conversation"))
    if not isinstance(cid, (str, int)) or isinstance(cid, bool):
        raise RequestError(422, "must be a string or integer", "id")
    return str(cid), payload["utterances"]


class _Ticket:
    """One request's conversations waiting for the model, and then their results."""

    __slots__ = ("convs", "results", "error", "done")

    def __init__(self, convs: list[Conversation]) -> None:
        self.convs = convs
        self.results: list[dict] | None = None
        self.error: BaseException | None = None
        self.done = False


class App:
    """The model, its lock, its bounded queue and the request handling, independent of the web
    framework."""

    def __init__(self, predictor: Predictor, limits: Limits | None = None) -> None:
        self.predictor = predictor
        self.limits = limits or Limits()
        if self.limits.max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {self.limits.max_queue}")
        # The model: one call at a time (tokenizers and the model are not documented as
        # thread-safe); requests waiting for it are batched (predict).
        self._model = threading.Condition()
        self._running = False
        self._pending: list[_Ticket] = []
        # The queue: admitted requests (running + waiting for the lock). A threading lock, not
        # an asyncio one: it is held for a few instructions only, and it works whatever event
        # loop (or thread) calls -- uvicorn has one, a TestClient may run several.
        self._queue_lock = threading.Lock()
        self.queued = 0
        self.seconds_per_call = 0.1   # moving average of one model call, for Retry-After
        self.checkpoint_name = Path(str(predictor.checkpoint)).name
        self._card = self._model_card()
        # Live conversations: whether the model streams at all, and how many are open.
        self.live_problem = _live_problem(predictor)
        self.live_open = 0

    def conversation(self, payload: Any, uploads: dict[str, Path] | None = None,
                     folder: Path | None = None) -> Conversation:
        """Validate one conversation payload; ``audio`` values must name ``uploads``."""
        cid, records = _records(payload)
        lim = self.limits
        if len(records) > lim.max_utterances:
            raise RequestError(413, f"{len(records)} utterances; the limit is "
                               f"{lim.max_utterances} per conversation", "utterances")
        uploads = uploads or {}
        for i, rec in enumerate(records):
            if isinstance(rec, dict):          # else conversation_from_records names the problem
                self._check_record(rec, i, uploads, "with this request")
        renamed = [dict(rec, audio=uploads[rec["audio"]].name)
                   if isinstance(rec, dict) and rec.get("audio") is not None else rec
                   for rec in records]
        try:
            return conversation_from_records(renamed, source="request", conversation_id=cid,
                                             base_dir=folder or Path(tempfile.gettempdir()),
                                             max_chars=lim.max_chars)
        except MercInputError as e:
            raise RequestError(422, str(e), e.field) from None

    def predict(self, convs: list[Conversation]) -> list[dict]:
        """The results of ``convs`` (blocking: call it from a worker thread).

        Requests that arrive while the model is busy are answered together, by one
        ``predict_many`` call over all their conversations (FIFO, up to
        :data:`MAX_BATCH_UTTERANCES`): on 2 cores eight 20-utterance conversations cost 0.6x
        their time one by one, so under load the throughput rises instead of the wait. The
        thread whose turn it is runs the batch; the others sleep until their results are in.
        A result is the one the conversation gets alone, to float rounding (predict_many)."""
        ticket = _Ticket(convs)
        with self._model:
            self._pending.append(ticket)
            while not ticket.done:
                if self._running:
                    self._model.wait()
                    continue
                self._running = True
                batch = self._take_batch()
                self._model.release()
                try:
                    self._run(batch)
                finally:
                    self._model.acquire()
                    self._running = False
                    self._model.notify_all()
        if ticket.error is not None:
            raise ticket.error
        return ticket.results

    def exclusive(self, fn, *args):
        """``fn(*args)`` as one model call (blocking: call it from a worker thread): it waits
        for the running call, like a batch of :meth:`predict`, and nothing runs beside it."""
        with self._model:
            while self._running:
                self._model.wait()
            self._running = True
        try:
            return fn(*args)
        finally:
            with self._model:
                self._running = False
                self._model.notify_all()

    async def call_queued(self, fn, *args):
        """:meth:`exclusive` off the event loop, through the bounded queue (503 when full)."""
        from starlette.concurrency import run_in_threadpool

        with self.admitted():
            return await run_in_threadpool(self.exclusive, fn, *args)

    def open_live(self) -> None:
        """Take one live-session place, or raise the handshake's refusal: 501 when the model
        cannot stream, 503 when ``max_live_sessions`` are open."""
        if self.live_problem is not None:
            raise RequestError(501, f"this server's model cannot predict live: "
                               f"{self.live_problem}", "model.causal")
        with self._queue_lock:
            if self.live_open >= self.limits.max_live_sessions:
                raise RequestError(503, f"{self.live_open} live conversations are open (the "
                                   "limit, merc serve --max-live); retry when one ends", None,
                                   {"Retry-After": "5"})
            self.live_open += 1

    def close_live(self) -> None:
        with self._queue_lock:
            self.live_open -= 1

    def live_record(self, payload: Any, uploads: dict[str, Path], index: int) -> dict:
        """One live utterance validated as an utterance of :meth:`conversation`: its ``audio``
        must name an upload of the session (replaced by the file's name in the session's
        folder); ``index`` names it in errors until it has an id."""
        if not isinstance(payload, dict):
            raise RequestError(422, "expected one utterance object {\"speaker\": ..., "
                               "\"text\": ...}", "utterance")
        self._check_record(payload, index, uploads, "in this session")
        if payload.get("audio") is None:
            return payload
        return dict(payload, audio=uploads[payload["audio"]].name)

    def _check_record(self, rec: dict, index: int, uploads: dict[str, Path], where: str) -> None:
        """The server's own limits on one utterance record: its text length (413), no video,
        and an ``audio`` that is the name of an upload (never resolved as a path); ``where``
        says which uploads count ("with this request")."""
        uid = str(rec.get("id", default_utterance_id(index)))[:80]
        text = rec.get("text")
        if isinstance(text, str) and len(text) > self.limits.max_chars:
            raise RequestError(413, f"utterance {uid}: {len(text)} characters; the limit is "
                               f"{self.limits.max_chars}", "text")
        for kind in ("audio", "video"):
            value = rec.get(kind)
            if value is None:
                continue
            if kind == "video":
                raise RequestError(422, "video is not accepted by this server", "video")
            if not isinstance(value, str) or value not in uploads:
                raise RequestError(422, f"utterance {uid}: {kind} {str(value)[:80]!r} is not "
                                   f"the name of a file uploaded {where} (the server reads no "
                                   "paths)", kind)

    def _take_batch(self) -> list[_Ticket]:
        """The oldest pending requests, up to :data:`MAX_BATCH_UTTERANCES` (at least one)."""
        batch, size = [], 0
        while self._pending:
            n = sum(len(c) for c in self._pending[0].convs)
            if batch and size + n > MAX_BATCH_UTTERANCES:
                break
            batch.append(self._pending.pop(0))
            size += n
        return batch

    def _run(self, batch: list[_Ticket]) -> None:
        """Predict ``batch``, setting every ticket's results or error; never raises."""
        try:
            t0 = time.perf_counter()
            try:
                preds = self.predictor.predict_many([c for t in batch for c in t.convs])
            except Exception as e:
                if len(batch) > 1:
                    # One request's bad conversation must not fail the others: each alone.
                    for t in batch:
                        self._run([t])
                    return
                batch[0].error = (RequestError(422, str(e), e.field)
                                  if isinstance(e, MercInputError) else e)
                return
            per_request = (time.perf_counter() - t0) / len(batch)
            self.seconds_per_call = 0.8 * self.seconds_per_call + 0.2 * per_request
            results = [p.to_dict() for p in preds]
            for r in results:
                # The file name only, as /v1/model gives it: the path would tell every client
                # where (and as whom) the server is installed.
                r["checkpoint"] = self.checkpoint_name
            for t in batch:
                t.results, results = results[:len(t.convs)], results[len(t.convs):]
        finally:
            for t in batch:
                if t.results is None and t.error is None:   # interrupted: answer, never hang
                    t.error = RuntimeError("the model call was interrupted")
                t.done = True

    def refuse_if_full(self) -> None:
        """503 now if the queue is full. Handlers call it first, before reading and validating
        the body: under overload a refusal must cost next to nothing and come at once (the
        place itself is taken later, by :meth:`admitted`, so a slow upload holds none)."""
        queued = self.queued
        if queued >= self.limits.max_queue:
            # Roughly when the queue ahead will have drained; at least the 1 s HTTP allows.
            retry = max(1, math.ceil(queued * self.seconds_per_call))
            raise RequestError(503, f"the server is busy: {queued} requests are queued for "
                               f"the model (the limit, merc serve --max-queue); retry in "
                               f"{retry} s", None, {"Retry-After": str(retry)})

    @contextmanager
    def admitted(self):
        """One place in the model's queue for the ``with`` block, or 503 at once when all
        ``max_queue`` places are taken (a client waiting longer would only time out later)."""
        with self._queue_lock:
            self.refuse_if_full()
            self.queued += 1
        try:
            yield
        finally:
            with self._queue_lock:
                self.queued -= 1

    async def predict_queued(self, convs: list[Conversation]) -> list[dict]:
        """:meth:`predict` off the event loop, through the bounded queue."""
        from starlette.concurrency import run_in_threadpool

        with self.admitted():
            return await run_in_threadpool(self.predict, convs)

    def _model_card(self) -> str | None:
        try:
            from merc.pretrained import list_pretrained

            here = Path(self.predictor.checkpoint).resolve()
            for model in list_pretrained():
                if model.checkpoint.resolve() == here:
                    return model.model_card()
        except (OSError, MercInputError):
            pass
        return None

    def model_info(self) -> dict:
        p = self.predictor
        return {"model": p.model_name, "checkpoint": self.checkpoint_name,
                "labels": p.label_names, "modalities": p.modalities,
                "limits": asdict(self.limits), "model_card": self._card,
                "live": self.live_problem is None, "live_problem": self.live_problem}


def _live_problem(predictor: Predictor) -> str | None:
    """Why ``predictor`` cannot run live (one line), or ``None`` when it can."""
    from merc.predict.live import check_streams

    try:
        check_streams(predictor)
    except MercInputError as e:
        # The checkpoint's file name only, as everywhere in the API (not where it is installed).
        path = str(predictor.checkpoint)
        return str(e).replace(path, Path(path).name)
    return None
