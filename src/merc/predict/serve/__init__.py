"""``merc serve``: an HTTP API and a small web page over one loaded model (FastAPI + uvicorn).

Endpoints (the OpenAPI page FastAPI generates at ``/docs`` is the reference):

* ``POST /v1/predict`` -- one conversation in merc's JSON format (``{"id", "utterances"}`` or a
  list of utterances), as a JSON body; or ``multipart/form-data`` with a ``conversation`` field
  (that JSON) and the wav files as uploads, which utterances name in ``audio`` by their upload
  file name. Returns the ``merc predict --out`` schema
  (:meth:`merc.predict.results.Prediction.to_dict`).
* ``POST /v1/predict/batch`` -- ``{"conversations": [...]}`` (JSON only) -> ``{"results": [...]}``.
* ``POST /v1/timeline`` -- a result of ``/v1/predict`` -> the self-contained HTML timeline of
  ``merc predict --html`` (the page shows it; no model call).
* ``GET /v1/model`` -- name, labels, modalities, model card; ``GET /healthz``; ``GET /`` -- the page.

Safety. The server never reads a path named in a request: media arrive only as uploads, written
to a fresh temporary folder under merc-chosen names, and an ``audio`` value must be exactly the
name of one of the request's uploads (no folders). Limits (:class:`Limits`) answer 413 naming
the field; malformed or invalid input answers 422 with one line naming the field, never a 500
with a traceback. It binds to 127.0.0.1 by default. The model is loaded once; requests share it
under a lock (tokenizers and the model are not documented as thread-safe), so concurrent
requests queue for the model rather than corrupt each other.

FastAPI is imported at the top of this module, which only ``merc serve`` (and its tests)
import: merc's other commands never load it (it is the ``serve`` extra).
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse

from merc.data.conversation import Conversation
from merc.data.conversation_file import conversation_from_records
from merc.errors import MercInputError
from merc.predict.predictor import Predictor
from merc.predict.results import Prediction

PAGE = Path(__file__).with_name("web") / "index.html"


@dataclass
class Limits:
    """What one request may ask for; beyond it the answer is 413 naming the field."""

    max_utterances: int = 2000
    """Utterances per conversation."""
    max_chars: int = 5000
    """Characters per utterance text."""
    max_conversations: int = 64
    """Conversations per batch request."""
    max_body_bytes: int = 2_000_000
    """Bytes of a JSON request body."""
    max_upload_bytes: int = 50_000_000
    """Bytes of all uploaded files of one request together."""


class RequestError(Exception):
    """An answer other than 200: ``status`` and a one-line ``detail`` naming the field."""

    def __init__(self, status: int, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.field = status, detail, field


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


class App:
    """The model, its lock and the request handling, independent of the web framework."""

    def __init__(self, predictor: Predictor, limits: Limits | None = None) -> None:
        self.predictor = predictor
        self.limits = limits or Limits()
        self.lock = threading.Lock()

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
            if not isinstance(rec, dict):
                continue                       # conversation_from_records names the problem
            text = rec.get("text")
            if isinstance(text, str) and len(text) > lim.max_chars:
                raise RequestError(413, f"utterance {rec.get('id', f'#{i}')}: {len(text)} "
                                   f"characters; the limit is {lim.max_chars}", "text")
            for kind in ("audio", "video"):
                value = rec.get(kind)
                if value is None:
                    continue
                if kind == "video":
                    raise RequestError(422, "video is not accepted by this server", "video")
                if not isinstance(value, str) or value not in uploads:
                    # Never resolved as a path: only the names of this request's uploads count.
                    raise RequestError(422, f"utterance {rec.get('id', f'#{i}')}: {kind} "
                                       f"{str(value)[:80]!r} is not the name of a file uploaded "
                                       "with this request (the server reads no paths)", kind)
        renamed = [dict(rec, audio=uploads[rec["audio"]].name)
                   if isinstance(rec, dict) and rec.get("audio") is not None else rec
                   for rec in records]
        try:
            return conversation_from_records(renamed, source="request", conversation_id=cid,
                                             base_dir=folder or Path(tempfile.gettempdir()))
        except MercInputError as e:
            raise RequestError(422, str(e), e.field) from None

    def predict(self, convs: list[Conversation]) -> list[dict]:
        with self.lock:
            try:
                return [p.to_dict() for p in self.predictor.predict_many(convs)]
            except MercInputError as e:
                raise RequestError(422, str(e), e.field) from None

    def model_info(self) -> dict:
        p = self.predictor
        card = None
        try:
            from merc.pretrained import bundled_checkpoint

            if p.checkpoint.resolve() == bundled_checkpoint().resolve():
                card = (bundled_checkpoint().parent / "MODEL_CARD.md").read_text()
        except (OSError, MercInputError):
            card = None
        return {"model": p.model_name, "checkpoint": p.checkpoint.name, "labels": p.label_names,
                "modalities": p.modalities, "limits": asdict(self.limits), "model_card": card}


def parse_json(body: bytes, limit: int) -> Any:
    if len(body) > limit:
        raise RequestError(413, f"request body of {len(body)} bytes; the limit is {limit}",
                           "body")
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        where = f" at line {e.lineno}, column {e.colno}" if hasattr(e, "lineno") else ""
        raise RequestError(422, f"malformed JSON{where}", "body") from None


_SAFE = re.compile(r"[^\w.\-]+")


def create_app(predictor: Predictor, limits: Limits | None = None):
    """The FastAPI application over ``predictor``."""
    core = App(predictor, limits)
    lim = core.limits
    api = FastAPI(title="merc", version=_version(),
                  description="Emotion recognition in conversation: one label per utterance.")

    @api.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError):
        return JSONResponse({"detail": exc.detail, "field": exc.field}, status_code=exc.status)

    @api.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(x) for x in first.get("loc", ())[1:]) or None
        return JSONResponse({"detail": first.get("msg", "invalid request"), "field": field},
                            status_code=422)

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):   # never a traceback to a client
        return JSONResponse({"detail": f"internal error ({type(exc).__name__})", "field": None},
                            status_code=500)

    @api.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @api.get("/v1/model")
    def model():
        return core.model_info()

    @api.post("/v1/predict")
    async def predict(request: Request):
        kind = request.headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            return JSONResponse(await _multipart(request))
        payload = parse_json(await _body(request, lim.max_body_bytes), lim.max_body_bytes)
        conv = core.conversation(payload)
        return JSONResponse((await _in_thread(core.predict, [conv]))[0])

    @api.post("/v1/predict/batch")
    async def predict_batch(request: Request):
        payload = parse_json(await _body(request, lim.max_body_bytes), lim.max_body_bytes)
        if not isinstance(payload, dict) or not isinstance(payload.get("conversations"), list):
            raise RequestError(422, "expected {\"conversations\": [...]}", "conversations")
        items = payload["conversations"]
        if len(items) > lim.max_conversations:
            raise RequestError(413, f"{len(items)} conversations; the limit is "
                               f"{lim.max_conversations} per request", "conversations")
        if not items:
            raise RequestError(422, "no conversation given", "conversations")
        convs = [core.conversation(c) for c in items]
        ids = [c.id for c in convs]
        if len(set(ids)) != len(ids):
            raise RequestError(422, "conversation ids must be unique within a batch", "id")
        return JSONResponse({"results": await _in_thread(core.predict, convs)})

    @api.post("/v1/timeline", response_class=HTMLResponse)
    async def timeline(request: Request):
        from merc.predict.timeline import timeline_html

        payload = parse_json(await _body(request, lim.max_body_bytes), lim.max_body_bytes)
        try:
            pred = Prediction.from_dict(payload)
        except ValueError as e:
            raise RequestError(422, str(e), "body") from None
        return HTMLResponse(timeline_html(pred, title=f"merc: {pred.id}"))

    @api.get("/", response_class=HTMLResponse)
    def page():
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    async def _multipart(request: Request) -> dict:
        from starlette.datastructures import UploadFile

        declared = int(request.headers.get("content-length") or 0)
        if declared > lim.max_upload_bytes + lim.max_body_bytes:
            raise RequestError(413, f"request of {declared} bytes; uploads may total "
                               f"{lim.max_upload_bytes}", "files")
        form = await request.form(max_files=1000, max_fields=10)
        text = form.get("conversation")
        if not isinstance(text, str):
            raise RequestError(422, "multipart requests need a 'conversation' field holding "
                               "the conversation's JSON", "conversation")
        payload = parse_json(text.encode("utf-8"), lim.max_body_bytes)
        with tempfile.TemporaryDirectory(prefix="merc-serve-") as tmp:
            folder = Path(tmp)
            uploads: dict[str, Path] = {}
            total = 0
            for key, value in form.multi_items():
                if not isinstance(value, UploadFile):
                    continue
                name = value.filename or key
                data = await value.read()
                total += len(data)
                if total > lim.max_upload_bytes:
                    raise RequestError(413, f"uploads exceed {lim.max_upload_bytes} bytes",
                                       "files")
                # merc chooses the name on disk; the client's name is only a key.
                path = folder / f"{len(uploads):04d}_{_SAFE.sub('_', name)[-60:]}"
                path.write_bytes(data)
                uploads[name] = path
            conv = core.conversation(payload, uploads, folder)
            return (await _in_thread(core.predict, [conv]))[0]

    return api


async def _body(request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit`` bytes."""
    declared = int(request.headers.get("content-length") or 0)
    if declared > limit:
        raise RequestError(413, f"request body of {declared} bytes; the limit is {limit}",
                           "body")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body over {limit} bytes", "body")
        chunks.append(chunk)
    return b"".join(chunks)


async def _in_thread(fn, *args):
    """Run the (blocking, CPU-bound) model call off the event loop."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)


def _version() -> str:
    from merc._version import __version__

    return __version__


def serve(checkpoint: str | None = None, *, host: str = "127.0.0.1", port: int = 8000,
          limits: Limits | None = None, device: str = "cpu") -> None:
    """Load the model once and serve until interrupted (uvicorn)."""
    import uvicorn

    predictor = Predictor.from_checkpoint(checkpoint, device=device)
    uvicorn.run(create_app(predictor, limits), host=host, port=port, log_level="info")
