"""``merc serve``: an HTTP API and a small web page over one loaded model (FastAPI + uvicorn).

Endpoints (``/docs`` lists them offline; ``/openapi.json`` is the machine-readable reference):

* ``POST /v1/predict`` -- one conversation in merc's JSON format (``{"id", "utterances"}`` or a
  list of utterances), as an ``application/json`` body; or ``multipart/form-data`` with a
  ``conversation`` field (that JSON) and the wav files as uploads, which utterances name in
  ``audio`` by their upload file name. Returns the ``merc predict --out`` schema
  (:meth:`merc.predict.results.Prediction.to_dict`), with the checkpoint's file name only.
* ``POST /v1/predict/batch`` -- ``{"conversations": [...]}`` (JSON only) -> ``{"results": [...]}``.
* ``POST /v1/timeline`` -- a result of ``/v1/predict`` -> the self-contained HTML timeline of
  ``merc predict --html`` (the page shows it; no model call). Probabilities, confidences and
  fusion weights must be finite numbers in [0, 1], labels among the result's labels.
* ``WS /v1/live`` -- one live conversation: an utterance per frame in, its prediction out at
  once, in time independent of the conversation's length (causal models only; protocol and
  bounds in :mod:`merc.predict.serve.live`).
* ``GET /v1/model`` -- name, labels, modalities, limits, model card, whether it runs live;
  ``GET /healthz`` (with the model queue's length); ``GET /`` -- the page; ``GET /docs`` -- the
  endpoint list.

Safety. The server never reads a path named in a request: media arrive only as uploads, written
to a fresh temporary folder under merc-chosen names, and an ``audio`` value must be exactly the
name of one of the request's uploads (no folders). Limits (:class:`Limits`) answer 413 naming
the field; malformed or invalid input (JSON nested deeper than :data:`MAX_JSON_DEPTH`
included) answers 422 with one line naming the field, never a 500 with a traceback.

Browsers. It binds to 127.0.0.1 by default, and loopback alone does not keep web pages out: any
site the user visits can make the browser POST to ``http://127.0.0.1:8000`` (a ``text/plain``
body needs no CORS preflight), or point its own DNS name at 127.0.0.1 (DNS rebinding). So a
request whose ``Host`` is not one of the server's names (loopback names, the bound host, ``merc
serve --allow-host``) answers 400; one whose ``Origin`` is another site's answers 403 (no CORS
unless ``merc serve --allow-origin``); JSON endpoints take only ``application/json`` (415).
Requests without ``Origin`` (curl, scripts) and the server's own page pass.

Load. The model is loaded once and runs one call at a time (tokenizers and the model are not
documented as thread-safe); requests that wait for it are predicted together in the next call
(:meth:`App.predict`), which raises throughput under load. At most ``Limits.max_queue``
requests are admitted to it at once (the one running and those waiting); past that a request
answers 503 with ``Retry-After`` at once, so the latency of admitted requests stays bounded
(about ``max_queue`` requests' model time) instead of growing with the number of clients.
``/healthz`` and the page never wait for the model.

FastAPI is imported at the top of this module, which only ``merc serve`` (and its tests)
import: merc's other commands never load it (it is the ``serve`` extra).
"""

from __future__ import annotations

import html
import re
import tempfile
from dataclasses import replace
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware

from merc.predict.predictor import Predictor
from merc.predict.results import Prediction
from merc.predict.serve.bodies import (MAX_JSON_DEPTH, RequestError, check_prediction,
                                       declared_length, parse_json, read_body, refusal,
                                       require_json)
from merc.predict.serve.guards import (LOOPBACK_HOSTS, SameOrigin, TrustedHosts, check_host,
                                       check_origin, check_port)
from merc.predict.serve.live import add_live_route
from merc.predict.serve.model import DEFAULT_MAX_QUEUE, App, Limits

__all__ = ["App", "DEFAULT_MAX_QUEUE", "LOOPBACK_HOSTS", "Limits", "MAX_JSON_DEPTH",
           "RequestError", "check_host", "check_origin", "check_port", "check_prediction",
           "create_app", "parse_json", "serve"]

PAGE = Path(__file__).with_name("web") / "index.html"

_SAFE = re.compile(r"[^\w.\-]+")


def create_app(predictor: Predictor, limits: Limits | None = None, *,
               allow_origins: list[str] | tuple[str, ...] = (),
               allow_hosts: list[str] | tuple[str, ...] = ()):
    """The FastAPI application over ``predictor``.

    ``allow_hosts``: ``Host`` names accepted besides :data:`LOOPBACK_HOSTS` (``merc serve``
    adds the host it binds). ``allow_origins``: web origins (``http://localhost:3000``) whose
    pages may call the API (CORS); by default only the server's own page may.
    """
    core = App(predictor, limits)
    lim = core.limits
    origins = [check_origin(o) for o in allow_origins]
    hosts = list(dict.fromkeys([*LOOPBACK_HOSTS, *(check_host(h) for h in allow_hosts)]))
    # No Swagger UI / ReDoc: both load their scripts from a CDN, so /docs would be blank on an
    # offline machine. /docs is a plain page instead, rendered here from the same schema.
    api = FastAPI(title="merc", version=_version(), docs_url=None, redoc_url=None,
                  description="Emotion recognition in conversation: one label per utterance.")
    # Starlette runs the last added middleware first: Host, then Origin, then CORS.
    if origins:
        api.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
                           allow_headers=["content-type"])
    api.add_middleware(SameOrigin, allow_origins=origins)
    api.add_middleware(TrustedHosts, allowed_hosts=hosts)

    @api.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError):
        return refusal(exc.status, exc.detail, exc.field, exc.headers)

    @api.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        # Starlette's own refusals (404, 405, a malformed multipart body: 400), in merc's shape.
        return refusal(exc.status_code, exc.detail, None, exc.headers)

    @api.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(x) for x in first.get("loc", ())[1:]) or None
        return refusal(422, first.get("msg", "invalid request"), field)

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):   # never a traceback to a client
        return refusal(500, f"internal error ({type(exc).__name__})", None)

    # The GET endpoints are async: answered on the event loop at once, never behind worker
    # threads that wait for the model (a load balancer's health check must not time out).
    @api.get("/healthz")
    async def healthz():
        """Liveness, and the model queue: requests admitted now and the limit."""
        return {"status": "ok", "queue": core.queued, "max_queue": lim.max_queue}

    @api.get("/v1/model")
    async def model():
        """The model: name, checkpoint file name, labels, modalities, limits, model card."""
        return core.model_info()

    @api.post("/v1/predict")
    async def predict(request: Request):
        """One conversation (application/json, or multipart/form-data with wav uploads) ->
        its prediction."""
        kind = require_json(request, multipart_too=True)
        core.refuse_if_full()
        if kind == "multipart/form-data":
            return JSONResponse(await _multipart(request))
        payload = parse_json(await read_body(request, lim.max_body_bytes), lim.max_body_bytes)
        conv = core.conversation(payload)
        return JSONResponse((await core.predict_queued([conv]))[0])

    @api.post("/v1/predict/batch")
    async def predict_batch(request: Request):
        """{"conversations": [...]} (application/json) -> {"results": [...]}."""
        require_json(request)
        core.refuse_if_full()
        payload = parse_json(await read_body(request, lim.max_body_bytes), lim.max_body_bytes)
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
        return JSONResponse({"results": await core.predict_queued(convs)})

    @api.post("/v1/timeline", response_class=HTMLResponse)
    async def timeline(request: Request):
        """A /v1/predict result (application/json) -> its HTML timeline."""
        from starlette.concurrency import run_in_threadpool

        from merc.predict.timeline import timeline_html

        require_json(request)
        payload = parse_json(await read_body(request, lim.max_body_bytes), lim.max_body_bytes)
        try:
            pred = Prediction.from_dict(payload)
        except ValueError as e:
            raise RequestError(422, str(e), "body") from None
        check_prediction(pred)
        # Off the event loop: a 2 MB result takes a while to render, and /healthz must not wait.
        page = await run_in_threadpool(timeline_html, pred, f"merc: {pred.id}")
        return HTMLResponse(page)

    page_html = PAGE.read_text(encoding="utf-8")

    add_live_route(api, core)

    @api.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(page_html)

    @api.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    @api.get("/redoc", response_class=HTMLResponse, include_in_schema=False)
    async def docs():
        return HTMLResponse(_docs_page(api.openapi()))

    async def _multipart(request: Request) -> dict:
        from starlette.datastructures import UploadFile

        declared = declared_length(request)
        if declared > lim.max_upload_bytes + lim.max_body_bytes:
            raise RequestError(413, f"request of {declared} bytes; uploads may total "
                               f"{lim.max_upload_bytes}", "files")
        form = await request.form(max_files=1000, max_fields=10)
        text = form.get("conversation")
        if not isinstance(text, str):
            raise RequestError(422, "multipart requests need a 'conversation' field holding "
                               "the conversation's JSON", "conversation")
        payload = parse_json(text, lim.max_body_bytes)
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
            return (await core.predict_queued([conv]))[0]

    return api


def _docs_page(schema: dict) -> str:
    """A self-contained page listing the endpoints (no script, nothing fetched)."""
    esc = html.escape
    rows = []
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            text = (op.get("description") or op.get("summary") or "").strip()
            rows.append(f"<tr><td><code>{esc(method.upper())}</code></td><td><code>{esc(path)}"
                        f"</code></td><td>{esc(text)}</td></tr>")
    # WebSockets are not in OpenAPI: /v1/live is listed by hand.
    rows.append("<tr><td><code>WS</code></td><td><code>/v1/live</code></td><td>One live "
                "conversation: one utterance per JSON frame in, its prediction out at once "
                "(causal models; /v1/model says whether this one streams).</td></tr>")
    info = schema.get("info", {})
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>merc API"
            "</title><style>body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:auto;"
            "padding:1em}td{padding:.3em .6em;vertical-align:top;border-top:1px solid #ddd}"
            "</style></head><body>"
            f"<h1>{esc(info.get('title', 'merc'))} {esc(str(info.get('version', '')))} API</h1>"
            f"<p>{esc(info.get('description', ''))}</p>"
            "<p>The full reference, machine-readable: <a href=\"/openapi.json\">/openapi.json"
            "</a> (open it in any OpenAPI viewer). Swagger UI is not served: it loads from a "
            "CDN, and this server works offline.</p>"
            f"<table>{''.join(rows)}</table></body></html>")


def _version() -> str:
    from merc._version import __version__

    return __version__


def serve(checkpoint: str | None = None, *, host: str = "127.0.0.1", port: int = 8000,
          limits: Limits | None = None, device: str = "cpu",
          allow_origins: list[str] | tuple[str, ...] = (),
          allow_hosts: list[str] | tuple[str, ...] = (), max_queue: int | None = None,
          max_live: int | None = None, live_idle: float | None = None) -> None:
    """Load the model once and serve until interrupted (uvicorn).

    ``host`` is also accepted as a ``Host`` name unless it is a wildcard address (0.0.0.0,
    ::); ``max_queue``, ``max_live`` and ``live_idle`` override ``limits.max_queue``,
    ``limits.max_live_sessions`` and ``limits.live_idle_seconds``.
    """
    import uvicorn

    check_port(port)                       # before the model load, not after it
    limits = limits or Limits()
    if max_queue is not None:
        if max_queue < 1:
            raise ValueError(f"max_queue {max_queue}: must be >= 1")
        limits = replace(limits, max_queue=max_queue)
    if max_live is not None:
        if max_live < 1:
            raise ValueError(f"max_live {max_live}: must be >= 1")
        limits = replace(limits, max_live_sessions=max_live)
    if live_idle is not None:
        if not live_idle > 0:
            raise ValueError(f"live_idle {live_idle}: must be > 0 seconds")
        limits = replace(limits, live_idle_seconds=live_idle)
    bound = [] if host.strip("[]") in ("0.0.0.0", "::", "") else [host]
    hosts = [check_host(h) for h in (*bound, *allow_hosts)]
    origins = [check_origin(o) for o in allow_origins]
    predictor = Predictor.from_checkpoint(checkpoint, device=device)
    uvicorn.run(create_app(predictor, limits, allow_origins=origins, allow_hosts=hosts),
                host=host, port=port, log_level="info",
                # A live session's wav arrives as one WebSocket frame.
                ws_max_size=max(limits.max_upload_bytes, limits.max_body_bytes))
