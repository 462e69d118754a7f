"""Request bodies and refusals of ``merc serve``: the one-line error answer, JSON parsing
that refuses deep nesting and non-text, Content-Type and size checks, and the validation of a
prediction posted to ``/v1/timeline``."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from merc.data.validate import DuplicateKey, loads_json
from merc.predict.results import Prediction

MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays/objects accepted in a request body (merc's payloads nest 4 levels;
the same bound as config YAML). Deeper input is refused before anything recurses into it."""


class RequestError(Exception):
    """An answer other than 200: ``status`` and a one-line ``detail`` naming the field."""

    def __init__(self, status: int, detail: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.field, self.headers = status, detail, field, headers


def one_line(text: object, limit: int = 500) -> str:
    """``text`` on one line (messages quote client input, which may hold newlines), cut."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit] + "..."


def refusal(status: int, detail: str, field: str | None,
             headers: dict[str, str] | None = None) -> JSONResponse:
    """merc's error answer: ``{"detail": one line, "field": name or null}``."""
    return JSONResponse({"detail": one_line(detail), "field": field}, status_code=status,
                        headers=headers)


# ----------------------------------------------------------------------------- request bodies

_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_json(body: bytes | str, limit: int) -> Any:
    """A JSON request body, refused (413/422, one line) when too large, malformed, nested
    deeper than :data:`MAX_JSON_DEPTH` or holding text that is not Unicode."""
    size = len(body)
    if size > limit:
        raise RequestError(413, f"request body of {size} bytes; the limit is {limit}", "body")
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        value = loads_json(text)   # duplicate keys refused, as in `merc predict`'s reader
    except RecursionError:
        # The C parser recurses once per level: 100,000 "[" exhaust the stack long before the
        # depth check below could run. Caught here, it is the client's input, not a crash.
        raise RequestError(422, f"JSON nested deeper than {MAX_JSON_DEPTH} levels",
                           "body") from None
    except UnicodeDecodeError:
        raise RequestError(422, "malformed JSON: the body is not UTF-8 text", "body") from None
    except DuplicateKey as e:
        raise RequestError(422, str(e), e.key) from None
    except json.JSONDecodeError as e:
        raise RequestError(422, f"malformed JSON at line {e.lineno}, column {e.colno} "
                           f"({e.msg})", "body") from None
    except ValueError:
        # The only other ValueError json raises: an integer over Python's 4,300-digit limit.
        raise RequestError(422, "malformed JSON: a number too long to read", "body") from None
    _check_tree(value)
    return value


def _check_tree(value: Any) -> None:
    """Refuse nesting deeper than :data:`MAX_JSON_DEPTH` (later code -- validation messages
    quoting a value, the response encoder -- recurses) and lone UTF-16 surrogates (``"\\ud800"``
    is valid JSON but not text: it cannot be encoded into the UTF-8 answer). Iterative, so it
    cannot itself run out of stack."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "body")]
    while stack:
        item, depth, field = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise RequestError(422, "text holding a lone UTF-16 surrogate (\\ud800-\\udfff "
                                   "escapes must come in pairs)", field)
            continue
        if not isinstance(item, (dict, list)):
            continue
        if depth > MAX_JSON_DEPTH:
            raise RequestError(422, f"JSON nested deeper than {MAX_JSON_DEPTH} levels", "body")
        if isinstance(item, dict):
            for key, sub in item.items():
                stack.append((key, depth, "body"))
                stack.append((sub, depth + 1, key))
        else:
            stack.extend((sub, depth + 1, field) for sub in item)


def require_json(request: Request, *, multipart_too: bool = False) -> str:
    """The request's media type, refused (415) unless JSON (or multipart where allowed).

    Browsers send ``text/plain``, form-encoded and multipart bodies to any origin without a
    CORS preflight; requiring ``application/json`` for JSON endpoints means a foreign page
    cannot post to them even where the Origin check does not apply (old browsers, plugins)."""
    given = request.headers.get("content-type", "")
    media = given.split(";", 1)[0].strip().lower()
    if media == "application/json" or (multipart_too and media == "multipart/form-data"):
        return media
    wanted = "application/json or multipart/form-data" if multipart_too else "application/json"
    raise RequestError(415, f"Content-Type {given[:80]!r} is not accepted here; send "
                       f"{wanted}", "Content-Type")


def declared_length(request: Request) -> int:
    value = request.headers.get("content-length") or "0"
    try:
        return int(value)
    except ValueError:
        raise RequestError(400, f"Content-Length {value[:40]!r} is not a number",
                           "Content-Length") from None


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit`` bytes."""
    declared = declared_length(request)
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


def check_prediction(pred: Prediction) -> None:
    """Refuse (422, naming the field) a prediction no model could have made: the timeline draws
    ``probs``, ``confidence`` and fusion weights as bars, so ``5.0``, ``NaN`` or ``Infinity``
    would render as nonsense (a 500 % bar) under merc's name."""
    labels = set(pred.labels)
    if not labels:
        raise RequestError(422, "'labels' is empty", "labels")

    def probability(value: float) -> bool:
        return math.isfinite(value) and 0.0 <= value <= 1.0

    for u in pred.utterances:
        where = f"utterance {u.id[:80]!r}"
        if u.label not in labels:
            raise RequestError(422, f"{where}: label {u.label[:80]!r} is not one of the "
                               "result's labels", "label")
        for name, p in u.probs.items():
            if name not in labels:
                raise RequestError(422, f"{where}: probs names {name[:80]!r}, not one of the "
                                   "result's labels", "probs")
            if not probability(p):
                raise RequestError(422, f"{where}: probs[{name[:80]!r}] = {p} is not a "
                                   "probability in [0, 1]", "probs")
        if not probability(u.confidence):
            raise RequestError(422, f"{where}: confidence {u.confidence} is not a probability "
                               "in [0, 1]", "confidence")
        if u.label not in u.probs:
            raise RequestError(422, f"{where}: probs has no value for its label "
                               f"{u.label[:80]!r}", "probs")
        # 1e-3: a result rounded to 3 or more decimals (a spreadsheet, jq) still matches.
        if abs(u.confidence - u.probs[u.label]) > 1e-3:
            raise RequestError(422, f"{where}: confidence {u.confidence} is not probs"
                               f"[{u.label[:80]!r}] = {u.probs[u.label]}", "confidence")
        for name, w in (u.modality_weights or {}).items():
            if not probability(w):
                raise RequestError(422, f"{where}: modality_weights[{name[:80]!r}] = {w} is "
                                   "not a weight in [0, 1]", "modality_weights")
