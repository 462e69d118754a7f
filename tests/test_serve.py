"""merc serve (issue J): every endpoint, every limit, malformed input, uploads, path refusal."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
from fastapi.testclient import TestClient  # noqa: E402

from merc import Predictor  # noqa: E402
from merc.features.spec import FeatureSpec  # noqa: E402
from merc.predict.serve import Limits, create_app  # noqa: E402

from test_predict import TALK, make_checkpoint, write_tone  # noqa: E402

CONV = {"id": "talk-1", "utterances": [dict(u, id=f"u{i}") for i, u in enumerate(TALK)]}


@pytest.fixture(scope="module")
def client(predictor) -> TestClient:
    # max_queue 8: the 8 concurrent clients of test_concurrent_requests_... are all admitted.
    limits = Limits(max_utterances=5, max_chars=200, max_conversations=3, max_body_bytes=20_000,
                    max_upload_bytes=200_000, max_queue=8)
    # Host 127.0.0.1, as a browser on this machine sends it (the server refuses other names,
    # TestClient's default "testserver" included: see test_serve_security.py).
    return TestClient(create_app(predictor, limits), base_url="http://127.0.0.1",
                      raise_server_exceptions=False)


def test_health_model_page(client):
    assert client.get("/healthz").json() == {"status": "ok", "queue": 0, "max_queue": 8}
    info = client.get("/v1/model").json()
    assert info["labels"] == ["anger", "joy", "neutral"] and info["modalities"] == ["text"]
    assert info["checkpoint"] == "text.ckpt"              # a name, never the server's path
    page = client.get("/")
    assert page.status_code == 200 and 'id="predict"' in page.text
    assert "http" not in page.text.split("<script>")[1]   # no CDN, nothing fetched from outside
    assert client.get("/openapi.json").json()["paths"].keys() >= {
        "/v1/predict", "/v1/predict/batch", "/v1/model", "/healthz", "/v1/timeline"}


def test_predict_matches_the_library_and_batch_and_timeline(client, predictor):
    r = client.post("/v1/predict", json=CONV)
    assert r.status_code == 200
    result = r.json()
    assert result["id"] == "talk-1" and [u["id"] for u in result["utterances"]] == ["u0", "u1", "u2"]
    local = predictor.predict(CONV["utterances"]).to_dict()
    for a, b in zip(result["utterances"], local["utterances"]):
        assert a["label"] == b["label"] and a["probs"] == pytest.approx(b["probs"], abs=1e-6)
    batch = client.post("/v1/predict/batch",
                        json={"conversations": [CONV, dict(CONV, id="talk-2")]}).json()
    assert [x["id"] for x in batch["results"]] == ["talk-1", "talk-2"]
    html = client.post("/v1/timeline", json=result)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "&lt;b&gt;Really&lt;/b&gt;" in html.text and "<b>Really</b>" not in html.text
    assert client.post("/v1/timeline", json={"nope": 1}).status_code == 422


@pytest.mark.parametrize("payload,field", [
    ({"utterances": [{"speaker": "A", "text": "hi"}] * 6}, "utterances"),
    ({"utterances": [{"speaker": "A", "text": "x" * 201}]}, "text"),
])
def test_limits_answer_413_naming_the_field(client, payload, field):
    r = client.post("/v1/predict", json=payload)
    assert r.status_code == 413 and r.json()["field"] == field


def test_batch_and_body_limits(client):
    r = client.post("/v1/predict/batch", json={"conversations": [CONV] * 4})
    assert r.status_code == 413 and r.json()["field"] == "conversations"
    big = {"utterances": [{"speaker": "A", "text": "y" * 150}] * 5, "id": "z" * 20_000}
    r = client.post("/v1/predict", json=big)
    assert r.status_code == 413 and r.json()["field"] == "body"


@pytest.mark.parametrize("body,field", [
    (b"{not json", "body"),
    (b"\xff\xfe", "body"),
    (json.dumps({"utterances": [{"speeker": "A", "text": "x"}]}).encode(), "speeker"),
    (json.dumps({"utterances": "hello"}).encode(), "utterances"),
    (json.dumps(42).encode(), "conversation"),
    (json.dumps({"utterances": [{"speaker": "A", "text": 3}]}).encode(), "text"),
])
def test_malformed_input_is_422_in_one_line(client, body, field):
    r = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    detail = r.json()
    assert detail["field"] == field and "\n" not in detail["detail"]
    assert "Traceback" not in r.text


def test_paths_in_requests_are_never_read(client, tmp_path, monkeypatch):
    secret = tmp_path / "secret.wav"
    write_tone(secret, 300)
    opened = []
    real_open = Path.open
    monkeypatch.setattr(Path, "open", lambda self, *a, **k: opened.append(self) or
                        real_open(self, *a, **k))
    for value in (str(secret), "../../etc/passwd", "secret.wav"):
        conv = {"utterances": [{"speaker": "A", "text": "hi", "audio": value}]}
        r = client.post("/v1/predict", json=conv)
        assert r.status_code == 422 and r.json()["field"] == "audio"
        assert "reads no paths" in r.json()["detail"]
        # In a multipart request, only the names of its own uploads count.
        r = client.post("/v1/predict", data={"conversation": json.dumps(conv)},
                        files={"files": ("other.wav", b"RIFF....", "audio/wav")})
        assert r.status_code == 422 and r.json()["field"] == "audio"
    assert secret not in opened


@pytest.fixture(scope="module")
def audio_client(tmp_path_factory) -> TestClient:
    ckpt = make_checkpoint(tmp_path_factory.mktemp("ckpt") / "audio.ckpt",
                           FeatureSpec(text=None, audio="eGeMAPSv02"), {"audio": 88})
    return TestClient(create_app(Predictor.from_checkpoint(ckpt),
                                 Limits(max_upload_bytes=100_000)),
                      base_url="http://127.0.0.1", raise_server_exceptions=False)


def test_wav_uploads_reach_the_audio_model(audio_client, tmp_path):
    a, b = write_tone(tmp_path / "a.wav", 220), write_tone(tmp_path / "b.wav", 440)
    conv = {"id": "call", "utterances": [{"speaker": "A", "text": "", "audio": "a.wav"},
                                         {"speaker": "B", "text": "", "audio": "b.wav"}]}
    files = [("files", ("a.wav", a.read_bytes(), "audio/wav")),
             ("files", ("b.wav", b.read_bytes(), "audio/wav"))]
    r = audio_client.post("/v1/predict", data={"conversation": json.dumps(conv)}, files=files)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["modalities"] == ["audio"] and len(out["utterances"]) == 2
    assert out["utterances"][0]["probs"] != out["utterances"][1]["probs"]
    # Uploads beyond the limit: 413 naming the files.
    big = [("files", ("a.wav", b"0" * 120_000, "audio/wav"))]
    r = audio_client.post("/v1/predict", data={"conversation": json.dumps(conv)}, files=big)
    assert r.status_code == 413 and r.json()["field"] == "files"
    r = audio_client.post("/v1/predict", data={"nothing": "here"}, files=files)
    assert r.status_code == 422 and r.json()["field"] == "conversation"


def test_concurrent_requests_share_the_model_safely(client):
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: client.post("/v1/predict", json=CONV), range(16)))
    assert all(r.status_code == 200 for r in results)
    first = results[0].json()["utterances"]
    # Requests that waited together were predicted in one batch: the same labels, the same
    # probabilities to float rounding.
    for r in results:
        for a, b in zip(r.json()["utterances"], first):
            assert a["label"] == b["label"] and a["probs"] == pytest.approx(b["probs"], abs=1e-6)


def test_load_bench_runs_a_real_server_and_stops_by_itself(tmp_path):
    from merc.bench.serve_load import run_serve_bench

    # Three clients against a queue of one: 503s are counted apart from errors, and the
    # latencies are those of the accepted requests.
    row = run_serve_bench(tmp_path, clients=3, seconds=2.5, utterances=4, max_queue=1,
                          echo=lambda s: None)
    assert row["requests"] > 0 and row["errors"] == 0 and row["rejected_503"] > 0
    assert row["max_queue"] == 1
    assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    csv = (tmp_path / "serve_load.csv").read_text().splitlines()
    assert dict(zip(csv[0].split(","), csv[1].split(",")))["rejected_503"] == str(
        row["rejected_503"])
    assert "| 503 |" in (tmp_path / "serve_load.md").read_text()
