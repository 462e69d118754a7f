"""merc serve (issue Q): deep JSON, impossible timelines, cross-origin and DNS-rebinding requests,
the checkpoint path, the port, /docs offline, and the bounded queue in front of the model."""

from __future__ import annotations

import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
from fastapi.testclient import TestClient  # noqa: E402

from merc import Predictor  # noqa: E402
from merc.cli import main  # noqa: E402
from merc.predict.serve import Limits, create_app  # noqa: E402

from helpers import serve_in_thread  # noqa: E402
from test_predict import TALK  # noqa: E402

CONV = {"id": "talk-1", "utterances": [dict(u, id=f"u{i}") for i, u in enumerate(TALK)]}
DEEP = "[" * 100_000 + "]" * 100_000
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def client(predictor) -> TestClient:
    # The Host a browser sends for http://127.0.0.1/ (TestClient's default "testserver" is not
    # one of the server's own names).
    return TestClient(create_app(predictor, Limits(max_body_bytes=300_000)),
                      base_url="http://127.0.0.1", raise_server_exceptions=False)


@pytest.fixture(scope="module")
def result(client) -> dict:
    r = client.post("/v1/predict", json=CONV)
    assert r.status_code == 200, r.text
    return r.json()


def one_line(r, status: int | tuple = (400, 499), field: str | None = "") -> dict:
    """``r`` is a refusal with a one-line ``detail`` (and the given ``field`` unless "")."""
    lo, hi = (status, status) if isinstance(status, int) else status
    assert lo <= r.status_code <= hi, (r.status_code, r.text[:300])
    body = r.json()
    assert isinstance(body["detail"], str) and body["detail"]
    assert "\n" not in body["detail"] and "Traceback" not in r.text
    if field != "":
        assert body["field"] == field, body
    return body


# ------------------------------------------------------------------- (3) deeply nested JSON

@pytest.mark.parametrize("path", ["/v1/predict", "/v1/predict/batch", "/v1/timeline"])
@pytest.mark.parametrize("body", [DEEP, "[" * 600 + "]" * 600,
                                  '{"utterances": ' + '{"a": ' * 40_000 + "1" + "}" * 40_001])
def test_deep_json_is_a_one_line_422(client, path, body):
    detail = one_line(client.post(path, content=body, headers=JSON), 422, "body")["detail"]
    assert "nested" in detail


def test_deep_json_in_a_multipart_conversation_field(client):
    r = client.post("/v1/predict", data={"conversation": DEEP},
                    files={"files": ("a.wav", b"RIFF", "audio/wav")})
    assert "nested" in one_line(r, 422, "body")["detail"]


def test_other_unparseable_bodies_are_422(client):
    # A 5,000-digit integer (Python refuses > 4,300 digits with a ValueError, not a
    # JSONDecodeError) and a lone surrogate (cannot be written back as UTF-8).
    one_line(client.post("/v1/predict", content='{"id": ' + "9" * 5000 + "}", headers=JSON), 422)
    r = client.post("/v1/predict", headers=JSON,
                    content='{"utterances": [{"speaker": "A", "text": "\\ud800"}]}')
    one_line(r, 422, "text")


# --------------------------------------------------------- (6) impossible numbers in a timeline

def _edit(result: dict, **changes) -> dict:
    out = json.loads(json.dumps(result))
    out["utterances"][0].update(changes)
    return out


@pytest.mark.parametrize("change,field", [
    ({"confidence": 5.0}, "confidence"),
    ({"confidence": -0.1}, "confidence"),
    ({"confidence": float("nan")}, "confidence"),
    ({"probs": {"anger": math.inf, "joy": 0.1, "neutral": 0.1}}, "probs"),
    ({"probs": {"anger": 1.5, "joy": 0.1, "neutral": 0.1}}, "probs"),
    ({"probs": {"anger": 0.2, "joy": 0.3, "neutral": 0.5, "fear": 0.0}}, "probs"),
    ({"label": "fear"}, "label"),
    ({"modality_weights": {"text": 3.0}}, "modality_weights"),
])
def test_timeline_refuses_impossible_numbers(client, result, change, field):
    # allow_nan: Python writes NaN / Infinity as the bare words a hostile client would send.
    body = json.dumps(_edit(result, **change), allow_nan=True)
    r = client.post("/v1/timeline", content=body, headers=JSON)
    one_line(r, 422, field)


def test_timeline_confidence_must_be_the_label_probability(client, result):
    u = result["utterances"][0]
    other = next(lab for lab in result["labels"] if lab != u["label"])
    r = client.post("/v1/timeline", json=_edit(result, confidence=u["probs"][other]
                                                 if u["probs"][other] != u["confidence"]
                                                 else 0.0))
    one_line(r, 422, "confidence")
    # Rounded to 4 decimals (as a spreadsheet might): still the same numbers.
    rounded = _edit(result, confidence=round(u["confidence"], 4),
                    probs={k: round(v, 4) for k, v in u["probs"].items()})
    assert client.post("/v1/timeline", json=rounded).status_code == 200


# ------------------------------------------------------------- (7) origins, hosts, body types

def test_a_cross_origin_simple_request_is_refused(client):
    # What any web page can make a browser send without a preflight.
    r = client.post("/v1/predict", content=json.dumps(CONV),
                    headers={"content-type": "text/plain", "origin": "http://evil.example"})
    assert "evil.example" in one_line(r, 403, "Origin")["detail"]
    for path in ("/v1/predict", "/v1/predict/batch", "/v1/timeline", "/v1/model"):
        r = client.post(path, json=CONV, headers={"origin": "http://evil.example"})
        one_line(r, 403, "Origin")
    for odd in ("null", "http://[::1", "http://127.0.0.1:x", "127.0.0.1"):
        one_line(client.post("/v1/predict", json=CONV, headers={"origin": odd}), 403, "Origin")
    r = client.post("/v1/predict", data={"conversation": json.dumps(CONV)},
                    headers={"origin": "http://evil.example"})
    one_line(r, 403, "Origin")
    assert "access-control-allow-origin" not in r.headers


def test_same_origin_and_originless_requests_pass(client):
    # A browser on the server's own page sends its origin; curl and scripts send none.
    for origin in ("http://127.0.0.1", None):
        headers = {"origin": origin} if origin else {}
        assert client.post("/v1/predict", json=CONV, headers=headers).status_code == 200
    r = client.post("/v1/predict", json=CONV,
                    headers={"host": "localhost:8000", "origin": "http://localhost:8000"})
    assert r.status_code == 200
    r = client.post("/v1/predict", json=CONV,
                    headers={"host": "localhost:8000", "origin": "http://127.0.0.1:8000"})
    one_line(r, 403, "Origin")


@pytest.mark.parametrize("kind", ["text/plain", "application/x-www-form-urlencoded", None,
                                  "application/jsonx", "text/json"])
def test_json_endpoints_take_only_application_json(client, kind):
    headers = {"content-type": kind} if kind else {}
    for path, body in (("/v1/predict", CONV), ("/v1/predict/batch", {"conversations": [CONV]}),
                       ("/v1/timeline", {"x": 1})):
        r = client.post(path, content=json.dumps(body), headers=headers)
        one_line(r, 415, "Content-Type")
    r = client.post("/v1/predict", content=json.dumps(CONV),
                    headers={"content-type": "application/json; charset=utf-8"})
    assert r.status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example",
                                  "localhost.", "0.0.0.0:8000"])
def test_foreign_host_headers_are_refused(client, host):
    for method, path in (("get", "/healthz"), ("get", "/"), ("post", "/v1/predict")):
        kw = {"json": CONV} if method == "post" else {}
        r = getattr(client, method)(path, headers={"host": host}, **kw)
        one_line(r, 400, "Host")


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost", "LOCALHOST:1", "[::1]:8000"])
def test_loopback_host_headers_pass(client, host):
    assert client.get("/healthz", headers={"host": host}).status_code == 200


def test_allowed_origins_and_hosts(predictor):
    app = create_app(predictor, allow_origins=["http://localhost:3000"],
                     allow_hosts=["merc.lan"])
    c = TestClient(app, base_url="http://merc.lan:8000", raise_server_exceptions=False)
    r = c.post("/v1/predict", json=CONV, headers={"origin": "http://localhost:3000"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
    pre = c.options("/v1/predict", headers={"origin": "http://localhost:3000",
                                            "access-control-request-method": "POST",
                                            "access-control-request-headers": "content-type"})
    assert pre.status_code == 200
    one_line(c.post("/v1/predict", json=CONV, headers={"origin": "http://localhost:3001"}),
             403, "Origin")
    assert c.get("/healthz").status_code == 200                       # Host merc.lan:8000
    one_line(c.get("/healthz", headers={"host": "evil.example"}), 400, "Host")


def test_cli_allow_origin_and_allow_host_reach_the_server(monkeypatch):
    import merc.predict.serve

    calls = []
    monkeypatch.setattr(merc.predict.serve, "serve", lambda checkpoint, **kw: calls.append(kw))
    assert main(["serve", "--allow-origin", "http://localhost:3000", "--allow-origin",
                 "https://app.example:8443", "--allow-host", "merc.lan", "--max-queue", "5"]) == 0
    kw = calls[0]
    assert kw["allow_origins"] == ["http://localhost:3000", "https://app.example:8443"]
    assert kw["allow_hosts"] == ["merc.lan"] and kw["max_queue"] == 5


def test_the_help_states_the_real_default_queue(capsys):
    from merc.predict.serve import DEFAULT_MAX_QUEUE

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert f"default {DEFAULT_MAX_QUEUE}:" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("argv,what", [
    (["--allow-origin", "*"], "--allow-origin"),
    (["--allow-origin", "evil.example"], "--allow-origin"),
    (["--allow-origin", "http://a.example/path"], "--allow-origin"),
    (["--allow-origin", "http://[::1"], "--allow-origin"),
    (["--max-queue", "0"], "--max-queue"),
    (["--allow-host", "a b"], "--allow-host"),
])
def test_cli_refuses_bad_flags_in_one_line(monkeypatch, capsys, argv, what):
    import merc.predict.serve

    monkeypatch.setattr(merc.predict.serve, "serve", lambda *a, **k: pytest.fail("served"))
    assert main(["serve", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and what in err and "Traceback" not in err


# -------------------------------------------------------------------- (8) no install path

def test_results_name_the_checkpoint_not_its_path(client, result, predictor):
    assert result["checkpoint"] == "text.ckpt" == client.get("/v1/model").json()["checkpoint"]
    assert str(predictor.checkpoint.parent) not in json.dumps(result)
    batch = client.post("/v1/predict/batch", json={"conversations": [CONV]}).json()
    assert batch["results"][0]["checkpoint"] == "text.ckpt"


# --------------------------------------------------------------------------- (4) the port

@pytest.mark.parametrize("port", ["99999", "65536", "-1", "0"])
def test_a_port_outside_1_65535_is_one_line_exit_2(monkeypatch, capsys, predictor, port):
    import uvicorn

    import merc.predict.serve

    # Never load the bundled model or bind anything here.
    monkeypatch.setattr(merc.predict.serve.Predictor, "from_checkpoint",
                        classmethod(lambda cls, *a, **k: predictor))
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    assert main(["serve", "--port", port]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--port" in err and "1..65535" in err


# ------------------------------------------------------------------------- (10) /docs offline

def test_docs_are_served_without_a_cdn(client):
    for path in ("/docs", "/redoc"):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "cdn" not in r.text and "https://" not in r.text
        assert 'href="/openapi.json"' in r.text and "/v1/predict" in r.text


# ------------------------------------------------------------------------ the bounded queue

class SlowPredictor:
    """The real tiny predictor behind a gate: each model call waits until the test opens it."""

    def __init__(self, real: Predictor) -> None:
        self.real, self.gate, self.calls = real, threading.Event(), 0
        self.checkpoint, self.model_name = real.checkpoint, real.model_name
        self.label_names, self.modalities = real.label_names, real.modalities

    def predict_many(self, convs, **kw):
        self.calls += 1
        assert self.gate.wait(30)
        return self.real.predict_many(convs, **kw)


@pytest.fixture
def slow_server(predictor):

    slow = SlowPredictor(predictor)
    app = create_app(slow, Limits(max_queue=3))
    with serve_in_thread(app, start_timeout=20) as url:
        try:
            yield url, slow
        finally:
            slow.gate.set()          # release the held requests before the server stops


def test_past_the_queue_bound_503_at_once_and_healthz_stays_fast(slow_server):
    import httpx

    url, slow = slow_server
    with ThreadPoolExecutor(48) as pool:
        # 48 requests against a model that does not answer: 3 are admitted (one at the model,
        # two waiting), every other one is refused at once.
        futures = [pool.submit(_timed_post, url, CONV) for _ in range(48)]
        refused = []
        deadline = time.monotonic() + 20
        while len(refused) < 45 and time.monotonic() < deadline:
            refused = [f.result() for f in futures if f.done()]
            time.sleep(0.05)
        assert len(refused) == 45, f"{len(refused)} answered while the model is busy"
        for status, seconds, headers, body in refused:
            assert status == 503 and seconds < 5
            assert int(headers["retry-after"]) >= 1
            assert "\n" not in body["detail"] and "queue" in body["detail"]
        t0 = time.perf_counter()
        health = httpx.get(url + "/healthz", timeout=5)
        assert health.status_code == 200 and time.perf_counter() - t0 < 1.0
        assert health.json()["queue"] == 3 and health.json()["max_queue"] == 3
        slow.gate.set()
        admitted = [f.result() for f in futures if f.result()[0] != 503]
    assert [a[0] for a in admitted] == [200, 200, 200]
    assert httpx.get(url + "/healthz", timeout=5).json()["queue"] == 0


def test_the_page_s_own_requests_pass_on_a_real_server(slow_server):
    """What Chromium sends from the server's page (tests/test_browser.py runs the real one):
    Host 127.0.0.1:PORT, and on POSTs Origin http://127.0.0.1:PORT; the same under localhost."""
    import httpx

    url, slow = slow_server
    slow.gate.set()
    port = url.rsplit(":", 1)[1]
    for name in ("127.0.0.1", "localhost"):
        base = f"http://{name}:{port}"
        same = {"origin": base, "sec-fetch-site": "same-origin", "host": f"{name}:{port}"}
        assert httpx.get(url + "/", headers={"host": f"{name}:{port}"}).status_code == 200
        r = httpx.post(url + "/v1/predict", json=CONV, headers=same, timeout=30)
        assert r.status_code == 200, r.text
        assert httpx.post(url + "/v1/timeline", json=r.json(), headers=same).status_code == 200
        r = httpx.post(url + "/v1/predict", data={"conversation": json.dumps(CONV)},
                       files={"files": ("unused.wav", b"RIFF", "audio/wav")}, headers=same,
                       timeout=30)
        assert r.status_code == 200, r.text
    r = httpx.post(url + "/v1/predict", json=CONV,
                   headers={"origin": "http://evil.example", "sec-fetch-site": "cross-site"})
    assert r.status_code == 403
    r = httpx.get(url + "/healthz", headers={"host": f"evil.example:{port}"})
    assert r.status_code == 400 and r.json()["field"] == "Host"


def _timed_post(url: str, body: dict):
    import httpx

    t0 = time.perf_counter()
    r = httpx.post(url + "/v1/predict", json=body, timeout=60)
    return r.status_code, time.perf_counter() - t0, r.headers, r.json()
