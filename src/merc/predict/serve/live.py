"""``/v1/live``: one live conversation per WebSocket, one prediction per utterance as it arrives.

Protocol (JSON text frames; every answer is one JSON object):

* the client connects to ``/v1/live`` (``?id=NAME`` names the conversation in the results);
* it sends an utterance ``{"speaker": ..., "text": ..., "id"?: ..., "audio"?: NAME}`` and gets
  ``{"type": "prediction", "index": i, ...}`` (the fields of one utterance of ``/v1/predict``'s
  result, :meth:`~merc.predict.results.UtterancePrediction.to_dict`);
* a wav for a later utterance travels as ``{"type": "upload", "name": NAME}`` followed by one
  binary frame with the file's bytes; the server answers ``{"type": "uploaded", "name": NAME,
  "bytes": n}``, and an utterance's ``audio`` must be the name of an upload of *this* session
  (the server reads no paths);
* a bad frame gets ``{"type": "error", "status": 422|413|503, "detail": one line, "field"}``
  and leaves the session as it was; the connection stays open.

Bounds (:class:`~merc.predict.serve.model.Limits`): at most ``max_live_sessions`` sessions at
once (the handshake past that is refused with 503), ``max_utterances`` utterances per session
(then an error and the close), ``live_idle_seconds`` without a frame (then the close),
``max_body_bytes`` per text frame, ``max_upload_bytes`` of uploads per session, ``max_chars``
per text. Each utterance is one model call in the server's queue, shared with ``/v1/predict``
(a full queue answers that utterance with a 503 error, the session stays). The ``Host`` and
``Origin`` rules of the rest of the API apply to the handshake (:mod:`~merc.predict.serve.
guards`): a browser always sends ``Origin`` on a WebSocket, and no CORS protects one, so a page
of another site is refused.

Close codes: 1000 normal (the client left), 1001 idle, 1008 a bound was reached, 1011 the
server failed. The handshake of a server whose model cannot stream answers 501.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
from pathlib import Path
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from merc.errors import MercInputError
from merc.predict.serve.bodies import RequestError, one_line, parse_json, refusal
from merc.predict.serve.model import App

_SAFE = re.compile(r"[^\w.\-]+")
MAX_UPLOAD_NAME = 200
"""Longest upload name a client may give (it is a key only; merc names the file on disk)."""


class _Close(Exception):
    """End the session with this close code and one-line reason (after an error frame)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def add_live_route(api, core: App) -> None:
    """Register ``/v1/live`` on the FastAPI app ``api`` over the server's :class:`App`."""

    @api.websocket("/v1/live")
    async def live(websocket: WebSocket):
        """One live conversation: utterances in, one prediction each out (module docstring)."""
        try:
            core.open_live()
        except RequestError as e:     # an HTTP answer to the handshake, in the API's shape
            await refusal(e.status, e.detail, e.field, e.headers)(
                websocket.scope, websocket.receive, websocket.send)
            return
        try:
            await websocket.accept()
            cid = websocket.query_params.get("id", "live")[:200] or "live"
            with tempfile.TemporaryDirectory(prefix="merc-live-") as tmp:
                await _converse(websocket, core, cid, Path(tmp))
        finally:
            core.close_live()


async def _converse(ws: WebSocket, core: App, cid: str, folder: Path) -> None:
    """The session's loop: frames in, one answer per frame out, until a close."""
    from starlette.concurrency import run_in_threadpool

    lim = core.limits
    uploads: dict[str, Path] = {}
    uploaded = 0
    try:
        session = await run_in_threadpool(core.predictor.session, cid, base_dir=folder,
                                          source="request", max_chars=lim.max_chars)
        while True:
            message = await _receive(ws, lim.live_idle_seconds)
            if message is None:
                return
            try:
                if message.get("bytes") is not None:
                    raise RequestError(422, "a binary frame must follow {\"type\": \"upload\", "
                                       "\"name\": ...}", "upload")
                payload = parse_json(message.get("text") or "", lim.max_body_bytes)
                if isinstance(payload, dict) and payload.get("type") == "upload":
                    name = _upload_name(payload)
                    data = await _receive(ws, lim.live_idle_seconds)
                    if data is None:
                        return
                    blob = data.get("bytes")
                    if blob is None:
                        raise RequestError(422, f"expected the bytes of {name!r} as one binary "
                                           "frame", "upload")
                    if uploaded + len(blob) > lim.max_upload_bytes:
                        raise RequestError(413, f"uploads of this session exceed "
                                           f"{lim.max_upload_bytes} bytes", "files")
                    uploaded += len(blob)
                    path = folder / f"{len(uploads):04d}_{_SAFE.sub('_', name)[-60:]}"
                    path.write_bytes(blob)
                    uploads[name] = path
                    await ws.send_json({"type": "uploaded", "name": name, "bytes": len(blob)})
                    continue
                if session.count >= lim.max_utterances:
                    raise _Close(1008, f"the session reached {lim.max_utterances} utterances "
                                 "(the limit per conversation); open a new one")
                record = core.live_record(payload, uploads, session.count)
                result = await core.call_queued(session.add, record)
                await ws.send_json({"type": "prediction", "index": session.count - 1,
                                    **result.to_dict()})
            except RequestError as e:
                await ws.send_json(_error(e.status, e.detail, e.field))
            except MercInputError as e:
                await ws.send_json(_error(422, str(e), e.field))
    except _Close as e:
        await _close_quietly(ws, e.code, e.reason, 413 if e.code == 1008 else 408)
    except WebSocketDisconnect:
        return
    except Exception as e:  # noqa: BLE001 - never a traceback to a client; the server stays up
        # The session's state may be half-updated: it ends here, the server goes on.
        await _close_quietly(ws, 1011, f"internal error ({type(e).__name__})", 500)


async def _receive(ws: WebSocket, idle: float) -> dict[str, Any] | None:
    """The next frame (``{"text"}`` or ``{"bytes"}``), ``None`` when the client left; after
    ``idle`` seconds without one, the session is closed (1001)."""
    try:
        message = await asyncio.wait_for(ws.receive(), timeout=idle)
    except asyncio.TimeoutError:
        raise _Close(1001, f"no frame for {idle:g} s (merc serve --live-idle)") from None
    if message["type"] == "websocket.disconnect":
        return None
    return message


def _upload_name(payload: dict) -> str:
    unknown = sorted(set(payload) - {"type", "name"})
    if unknown:
        raise RequestError(422, f"unknown field {unknown[0]!r} (an upload is "
                           "{\"type\": \"upload\", \"name\": ...})", unknown[0])
    name = payload.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_UPLOAD_NAME:
        raise RequestError(422, f"an upload needs a 'name' of 1..{MAX_UPLOAD_NAME} characters",
                           "name")
    return name


def _error(status: int, detail: str, field: str | None) -> dict:
    return {"type": "error", "status": status, "detail": one_line(str(detail)),
            "field": field}


async def _close_quietly(ws: WebSocket, code: int, reason: str, status: int) -> None:
    """An error frame, then the close; nothing if the client is gone already."""
    try:
        await ws.send_text(json.dumps(_error(status, reason, None)))
        await ws.close(code, reason[:120])     # a close reason is at most 123 bytes
    except Exception:  # noqa: BLE001 - the client may be gone already
        pass
