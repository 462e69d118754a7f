"""``merc bench video``: speed of the ``fer2013`` video extractor, and the videos it uses.

Writes ``videos`` short clips of a real face photograph (scikit-image's bundled
``astronaut()``), moved and scaled across frames, with stretches of frames without a face
(:func:`write_face_video`), then extracts their features with
:class:`~merc.features.video.FaceExpressionExtractor` (cache bypassed) and reports frames
analysed per second and the share of the time spent decoding, detecting faces and running the
CNN, to ``video_speed.csv`` and ``video_speed.md``.

:func:`write_face_video` is also what the tests use to build their videos, and
:func:`write_video_corpus` the README's runnable video example.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def face_photo() -> np.ndarray:
    """Grey ``(210, 195)`` uint8 crop of scikit-image's ``astronaut()`` around her face (the
    face box is about ``(50, 50, 95, 95)`` in it)."""
    from skimage import data

    rgb = data.astronaut()[16:226, 127:322].astype(np.float64)
    return (rgb @ np.array([0.299, 0.587, 0.114])).round().clip(0, 255).astype(np.uint8)


def write_face_video(path: str | Path, faces: Sequence[bool], *, fps: int = 10,
                     size: tuple[int, int] = (320, 240), codec: str = "mpeg4",
                     seed: int = 0) -> Path:
    """Write a video of ``len(faces)`` frames at ``fps``: frame ``k`` shows the face photo
    (moved and scaled from frame to frame) when ``faces[k]``, else only the textured background.

    Args:
        path: Output file (``.mp4``).
        faces: Per frame, whether the face is shown.
        size: ``(width, height)``; even numbers (yuv420p).
    """
    import av
    import cv2

    w, h = size
    rng = np.random.default_rng(seed)
    background = (110 + 20 * rng.standard_normal((h, w))).clip(0, 255).astype(np.uint8)
    background = cv2.GaussianBlur(background, (0, 0), 3)
    photo = face_photo()
    n = len(faces)
    with av.open(os.fspath(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for k, show in enumerate(faces):
            frame = background.copy()
            if show:
                phase = k / max(n - 1, 1)
                scale = min(w, h) / photo.shape[0] * (0.7 + 0.25 * phase)  # grows
                ph, pw = int(photo.shape[0] * scale), int(photo.shape[1] * scale)
                img = cv2.resize(photo, (pw, ph), interpolation=cv2.INTER_AREA)
                x = int((w - pw) * (0.2 + 0.6 * phase))                  # moves right
                y = int((h - ph) * (0.5 + 0.3 * np.sin(2 * np.pi * phase)))
                frame[y:y + ph, x:x + pw] = img
            rgb = np.repeat(frame[:, :, None], 3, axis=2)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return Path(path)


def _tone_wav(path: Path, freq: float, seed: int) -> Path:
    """Half a second of a 16 kHz mono 16-bit sine with vibrato and a little noise (so openSMILE's
    pitch and jitter functionals are defined): the demo corpus' stand-in for speech."""
    import wave

    t = np.arange(8000) / 16000
    sig = 0.3 * np.sin(2 * np.pi * freq * t + 2 * np.sin(2 * np.pi * 3.0 * t))
    sig += 0.01 * np.random.default_rng(seed).normal(size=len(t))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(sig, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def write_video_corpus(folder: str | Path, *, dialogues: int = 8) -> Path:
    """A tiny labelled T+A+V corpus in merc's jsonl format, for the README's video example and
    the tests (synthetic: it shows the plumbing, not accuracy).

    Writes ``folder/conversations.jsonl`` (``dialogues`` dialogues of 3 utterances, labels
    ``joy``/``neutral``; 5/8 train, 2/8 valid, the rest test), ``folder/media/`` (three clips of
    :func:`write_face_video`: ``call.mp4`` 2 s with a face in its first second only, cut with
    ``start``/``end``; ``mixed.mp4`` with a face in 6 of 10 frames; ``empty.mp4`` without a
    face; three wavs) and ``folder/talk.jsonl``, an unlabelled conversation for ``merc
    predict``. Joyful utterances show the (smiling) face; neutral ones show none.
    """
    root = Path(folder)
    media = root / "media"
    media.mkdir(parents=True, exist_ok=True)
    write_face_video(media / "call.mp4", [True] * 10 + [False] * 10, seed=2)
    write_face_video(media / "mixed.mp4", [True] * 6 + [False] * 4)
    write_face_video(media / "empty.mp4", [False] * 10, seed=1)
    for i, f in enumerate((180, 260, 340)):
        _tone_wav(media / f"{i}.wav", f, seed=i)
    lines = []
    for d in range(dialogues):
        utts = []
        for i in range(3):
            joy = (d + i) % 2 == 0
            utt = {"utterance_id": f"d{d}u{i}", "speaker": "AB"[i % 2],
                   "text": "what a lovely day" if joy else "the meeting is at noon",
                   "label": "joy" if joy else "neutral", "audio": f"media/{i}.wav"}
            if joy and i != 2:
                utt.update(video="media/call.mp4", start=0.0, end=1.0)
            else:
                utt["video"] = "media/mixed.mp4" if joy else "media/empty.mp4"
            utts.append(utt)
        split = "train" if d < dialogues * 5 // 8 else "valid" if d < dialogues * 7 // 8 \
            else "test"
        lines.append(json.dumps({"dialogue_id": f"d{d}", "split": split, "utterances": utts}))
    (root / "conversations.jsonl").write_text("\n".join(lines) + "\n")
    talk = [{"speaker": "Ana", "text": "I love it!", "audio": "media/0.wav",
             "video": "media/call.mp4", "start": 0.0, "end": 1.0},
            {"speaker": "Ben", "text": "ok.", "audio": "media/1.wav",
             "video": "media/call.mp4", "start": 1.0, "end": 2.0},
            {"speaker": "Ana", "text": "see you", "video": "media/empty.mp4"}]
    (root / "talk.jsonl").write_text("".join(json.dumps(u) + "\n" for u in talk))
    return root


def run_video_bench(out_dir: str | Path = "results", *, videos: int = 4, seconds: float = 5.0,
                    video_fps: int = 25, fps: float = 5.0, size: tuple[int, int] = (640, 480),
                    echo=print) -> dict:
    """Extract ``fer2013`` features from ``videos`` generated clips and report the speed.

    Each clip is ``seconds`` long at ``video_fps`` and ``size``, its face shown in the first 80%
    of the frames; the extractor analyses ``fps`` frames per second of video. Every frame is
    decoded (the decoder cannot skip), so ``decode`` covers all of them.

    Returns:
        The row written to ``video_speed.csv`` (frames/s, shares, settings, machine).
    """
    import tempfile

    import torch

    from merc.features.video import FaceExpressionExtractor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_frames = int(round(seconds * video_fps))
    with tempfile.TemporaryDirectory() as tmp:
        paths = [write_face_video(Path(tmp) / f"clip{i}.mp4",
                                  [k < 0.8 * n_frames for k in range(n_frames)], fps=video_fps,
                                  size=size, seed=i) for i in range(videos)]
        ex = FaceExpressionExtractor(fps=fps, isolate=False)  # time the pipeline, not a worker start
        t0 = time.perf_counter()
        ex._load()
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        feats = ex.extract([str(p) for p in paths], progress=False)
        total = time.perf_counter() - t0
    t = ex.timings
    parts = t["decode"] + t["detect"] + t["cnn"]
    row = {
        "videos": videos, "seconds_each": seconds, "video_fps": video_fps,
        "size": f"{size[0]}x{size[1]}", "analysed_fps": fps, "frames_decoded": videos * n_frames,
        "frames_analysed": t["frames"], "wall_s": round(total, 3), "model_load_s": round(load_s, 3),
        "analysed_frames_per_s": round(t["frames"] / total, 2),
        "video_seconds_per_s": round(videos * seconds / total, 2),
        "decode_share": round(t["decode"] / parts, 3), "detect_share": round(t["detect"] / parts, 3),
        "cnn_share": round(t["cnn"] / parts, 3),
        "utterances_with_face": int(np.isfinite(feats).all(axis=1).sum()),
        "cpu_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }
    with open(out / "video_speed.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    md = [
        "# merc bench video: fer2013 extraction speed", "",
        f"{videos} generated clips of {seconds:g} s at {video_fps} fps, {size[0]}x{size[1]}, "
        f"face in 80% of the frames; {fps:g} frames analysed per second of video; "
        f"{row['cpus']} CPUs, torch threads {row['cpu_threads']}.", "",
        "| frames analysed | wall s | analysed frames/s | video s per s | decode | detection "
        "| CNN |", "|---|---|---|---|---|---|---|",
        f"| {t['frames']} | {total:.2f} | {row['analysed_frames_per_s']} | "
        f"{row['video_seconds_per_s']} | {100 * row['decode_share']:.0f}% | "
        f"{100 * row['detect_share']:.0f}% | {100 * row['cnn_share']:.0f}% |", "",
        f"Model load (h5py -> PyTorch, cascade): {load_s:.2f} s, once per process.", ""]
    (out / "video_speed.md").write_text("\n".join(md))
    echo("\n".join(md))
    return row
