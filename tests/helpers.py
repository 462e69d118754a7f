"""Helpers shared by the tests (imported as ``from helpers import ...``; fixtures stay in
``conftest.py``): synthetic corpora with the exact structure of the real formats, wavs, and tiny
random dialogues for model unit tests."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np

LABELS = ["ang", "hap", "neu"]


def shared_data_dir() -> Path:
    """``$MERC_DATA_DIR`` or ``../shared/data`` beside the repository."""
    return Path(os.environ.get("MERC_DATA_DIR",
                               Path(__file__).resolve().parents[2] / "shared" / "data"))


def write_wav(path: Path, freq: float = 220.0, *, seconds: float = 1.0, rate: int = 16000,
              loud: float = 0.3, vibrato_hz: float = 3.0, seed: int = 0) -> Path:
    """A mono 16-bit wav: a sine with a little vibrato and noise, so that openSMILE's pitch and
    jitter functionals are well defined."""
    import wave

    t = np.arange(int(seconds * rate)) / rate
    sig = loud * np.sin(2 * np.pi * freq * t + 2 * np.sin(2 * np.pi * vibrato_hz * t))
    sig += 0.01 * np.random.default_rng(seed).normal(size=len(t))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(sig, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def write_generic_corpus(root: Path, *, n_train: int = 24, n_valid: int = 0, n_test: int = 8,
                         seed: int = 0, signal: float = 2.0, length: int | None = None) -> Path:
    """A generic-format corpus folder: ``conversations.jsonl`` + ``text.npz`` + ``audio.csv``.

    Features carry the label (class mean shifted by ``signal``) plus noise, and the label of an
    utterance depends on its predecessor, so both context-free and contextual models can learn.
    ``length``: every dialogue has this many utterances (default: 3 to 8 at random).
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    text, audio_rows, lines = {}, [], []
    centers_t = rng.normal(size=(len(LABELS), 6))
    centers_a = rng.normal(size=(len(LABELS), 3))
    splits = ["train"] * n_train + ["valid"] * n_valid + ["test"] * n_test
    for d, split in enumerate(splits):
        n = int(rng.integers(3, 9))
        n = length if length is not None else n
        lab = int(rng.integers(len(LABELS)))
        utts = []
        for i in range(n):
            if rng.random() < 0.3:
                lab = int(rng.integers(len(LABELS)))
            uid = f"d{d}_u{i}"
            text[uid] = signal * centers_t[lab] + rng.normal(size=6)
            audio_rows.append([uid, *(signal * centers_a[lab] + rng.normal(size=3))])
            utts.append({"utterance_id": uid, "speaker": "AB"[i % 2], "text": f"utt {d} {i}",
                         "label": LABELS[lab]})
        lines.append(json.dumps({"dialogue_id": f"d{d}", "split": split, "utterances": utts}))
    (root / "conversations.jsonl").write_text("\n".join(lines) + "\n")
    np.savez(root / "text.npz", **text)
    with open(root / "audio.csv", "w") as f:
        f.write("utterance_id,a1,a2,a3\n")
        for row in audio_rows:
            f.write(",".join(str(v) for v in row) + "\n")
    return root


# Tiny random dialogues for model unit tests (test_broad_mamba, test_matav, test_df_erc).
TOY_DIMS = {"text": 12, "audio": 5, "video": 7}
TOY_LABELS = ["a", "b", "c"]


def toy_conversation(n: int, seed: int, cid: str, dims=TOY_DIMS,
                     latent: np.ndarray | None = None, noise: float = 1.0):
    """``n`` utterances of two alternating speakers with random features per modality in
    ``dims`` (or, given ``latent (n, d)``, every modality a noisy copy of that shared latent)."""
    from merc.data.conversation import Conversation

    rng = np.random.default_rng(seed)
    if latent is None:
        feats = {m: rng.normal(size=(n, d)) for m, d in dims.items()}
    else:
        feats = {m: latent + noise * rng.normal(size=latent.shape) for m in dims}
    return Conversation(
        id=cid, split="train", speakers=[["A", "B"][i % 2] for i in range(n)],
        utterances=[f"u{i}" for i in range(n)],
        labels=[TOY_LABELS[i % len(TOY_LABELS)] for i in range(n)],
        features={m: x.astype(np.float32) for m, x in feats.items()})


def toy_batch(convs, modalities=tuple(TOY_DIMS)):
    from merc.data.collate import DialogueDataset, collate_dialogues

    return collate_dialogues(DialogueDataset(convs, TOY_LABELS, sorted(modalities)).items)


def toy_pair(modalities=tuple(TOY_DIMS), seed: int = 0):
    """A padded batch of two dialogues (6 and 3 utterances) over ``modalities``."""
    dims = {m: TOY_DIMS[m] for m in modalities}
    return toy_batch([toy_conversation(6, seed, f"x{seed}", dims),
                      toy_conversation(3, seed + 1, f"y{seed}", dims)], modalities)


@contextlib.contextmanager
def serve_in_thread(app, start_timeout: float = 30.0):
    """A real uvicorn server for ``app`` on a free loopback port, in a daemon thread: yields
    its base URL (``http://127.0.0.1:PORT``) and stops it on exit."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
