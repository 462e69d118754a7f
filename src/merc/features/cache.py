"""On-disk cache of per-utterance feature matrices.

An entry is one ``(n, d)`` float32 matrix (one row per input, in input order) computed by one
extractor with fixed settings over one exact, ordered list of inputs. Its key is a SHA-256 over
the extractor name, its settings and a hash of the inputs, so any change to a text, an audio
file (size or mtime), the input order or a setting gives a different key and the matrix is
recomputed; identical inputs always map to the same entry.

Layout under the cache root: ``<key>.npy`` (the matrix) and ``<key>.json`` (a sidecar with the
extractor, settings, ``n``, ``dim``, creation time and merc version, for humans and for checks).
Both are written atomically (temporary file in the same directory, then :func:`os.replace`), and
the sidecar last, so a reader that sees a sidecar also sees a complete matrix. A corrupt or
inconsistent entry is logged and recomputed, never fatal.

This module only needs numpy: checking the cache must not pay for importing torch or openSMILE.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from merc.fileio import atomic_write

log = logging.getLogger(__name__)

CACHE_ENV = "MERC_CACHE_DIR"
"""Environment variable overriding the default cache root."""


def default_cache_dir() -> Path:
    """``$MERC_CACHE_DIR`` if set, else ``~/.cache/merc/features``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/merc/features").expanduser()


def hash_texts(texts: Sequence[str]) -> str:
    """SHA-256 of an ordered list of strings.

    Each string is length-prefixed so that e.g. ``["ab", "c"]`` and ``["a", "bc"]`` differ.
    """
    h = hashlib.sha256(b"texts\0")
    h.update(len(texts).to_bytes(8, "little"))
    for t in texts:
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def hash_files(paths: Sequence[str | os.PathLike]) -> str:
    """SHA-256 of an ordered list of files identified by absolute path, size and mtime.

    Size + mtime (nanoseconds) instead of the file contents keeps a cache check over thousands
    of wavs to a few milliseconds; rewriting a file updates its mtime and so misses the cache.

    Raises:
        OSError: a path cannot be stat'ed (the caller turns it into a named input error).
    """
    h = hashlib.sha256(b"files\0")
    h.update(len(paths).to_bytes(8, "little"))
    for p in paths:
        st = os.stat(p)
        # Absolute path: the same relative name under another working directory is another file.
        b = os.path.abspath(os.fspath(p)).encode("utf-8", "surrogateescape")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
        h.update(st.st_size.to_bytes(8, "little"))
        h.update(st.st_mtime_ns.to_bytes(16, "little", signed=True))
    return h.hexdigest()


def cache_key(extractor: str, settings: dict, inputs_hash: str) -> str:
    """SHA-256 hex key of (extractor name, its settings, the inputs' hash).

    ``settings`` must be JSON-serialisable; keys are sorted so dict order does not matter.
    """
    payload = json.dumps({"extractor": extractor, "settings": settings, "inputs": inputs_hash},
                         sort_keys=True, ensure_ascii=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


class FeatureCache:
    """Directory of cached ``(n, d)`` float32 feature matrices.

    Args:
        root: Cache directory; ``None`` means :func:`default_cache_dir`. Created on first write.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.root)!r})"

    def paths(self, key: str) -> tuple[Path, Path]:
        """``(<root>/<key>.npy, <root>/<key>.json)``."""
        return self.root / f"{key}.npy", self.root / f"{key}.json"

    def load(self, key: str, n: int | None = None) -> np.ndarray | None:
        """The cached matrix for ``key``, or ``None`` on a miss.

        A present but unreadable or inconsistent entry (truncated file, wrong dtype, row count
        different from ``n`` or from its sidecar) is logged as a warning, removed and reported
        as a miss so that the caller recomputes it.

        Returns:
            float32 array ``(n, d)`` or ``None``.
        """
        npy, meta_path = self.paths(key)
        if not meta_path.exists():
            # The sidecar is written last: without it the entry is absent or half-written.
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            arr = np.load(npy, allow_pickle=False)
            problem = None
            if arr.dtype != np.float32 or arr.ndim != 2:
                problem = f"dtype {arr.dtype} / shape {arr.shape}, expected 2-d float32"
            elif arr.shape != (meta.get("n"), meta.get("dim")):
                problem = f"shape {arr.shape} disagrees with sidecar n={meta.get('n')}, " \
                          f"dim={meta.get('dim')}"
            elif n is not None and arr.shape[0] != n:
                problem = f"{arr.shape[0]} rows for {n} inputs"
            else:
                # Rows an extractor could not compute (openSMILE on a too-short wav) are stored
                # as NaN on purpose and counted in the sidecar; any other non-finite row is
                # damage, and would otherwise train a NaN model.
                bad = int((~np.isfinite(arr)).any(axis=1).sum())
                if bad != int(meta.get("nonfinite_rows", 0)):
                    problem = (f"{bad} rows with NaN/inf, sidecar records "
                               f"{int(meta.get('nonfinite_rows', 0))}")
        except (OSError, ValueError, EOFError, AttributeError, TypeError) as e:
            # json.JSONDecodeError is a ValueError; np.load raises ValueError/EOFError/OSError on
            # truncated or foreign files; AttributeError when the sidecar is not a JSON object.
            problem = f"{type(e).__name__}: {e}"
        if problem is not None:
            log.warning("feature cache entry %s is corrupt (%s); recomputing", npy, problem)
            self._remove(key)
            return None
        return arr

    def save(self, key: str, array: np.ndarray, meta: dict | None = None) -> None:
        """Store ``array`` (converted to float32 ``(n, d)``) under ``key``, atomically.

        ``meta`` (extractor, settings, ...) is written to the JSON sidecar together with ``n``,
        ``dim``, the creation time and the merc version.
        """
        from merc._version import __version__

        arr = np.ascontiguousarray(array, dtype=np.float32)
        if arr.ndim != 2:
            raise ValueError(f"feature cache stores 2-d (n, d) arrays, got shape {arr.shape}")
        self.root.mkdir(parents=True, exist_ok=True)
        npy, meta_path = self.paths(key)
        sidecar = dict(meta or {})
        sidecar.update(n=int(arr.shape[0]), dim=int(arr.shape[1]),
                       nonfinite_rows=int((~np.isfinite(arr)).any(axis=1).sum()),
                       created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), merc_version=__version__)
        atomic_write(npy, lambda f: np.save(f, arr, allow_pickle=False))
        atomic_write(meta_path, lambda f: f.write(
            json.dumps(sidecar, indent=2, sort_keys=True, default=str).encode("utf-8")))

    def get_or_compute(self, extractor: str, settings: dict, inputs_hash: str, n: int,
                       compute: Callable[[], np.ndarray]) -> np.ndarray:
        """Return the cached matrix for these inputs, computing and storing it on a miss.

        Args:
            extractor: Extractor name, e.g. ``"sentence-transformers"``.
            settings: JSON-serialisable extractor settings that change the output.
            inputs_hash: :func:`hash_texts` / :func:`hash_files` of the exact ordered inputs.
            n: Number of inputs (rows expected).
            compute: Called only on a miss; returns an ``(n, d)`` array.

        Returns:
            float32 array ``(n, d)``.
        """
        key = cache_key(extractor, settings, inputs_hash)
        arr = self.load(key, n=n)
        if arr is not None:
            log.info("feature cache hit %s (%s, %d x %d)", key[:12], extractor, *arr.shape)
            return arr
        arr = np.ascontiguousarray(compute(), dtype=np.float32)
        if arr.ndim != 2 or arr.shape[0] != n:
            raise ValueError(f"{extractor} returned shape {arr.shape} for {n} inputs")
        try:
            self.save(key, arr, {"extractor": extractor, "settings": settings,
                                 "inputs_sha256": inputs_hash})
        except OSError as e:
            # A read-only or full cache dir must not throw away minutes of extraction.
            log.warning("could not write feature cache %s (%s); continuing uncached", self.root, e)
        return arr

    def _remove(self, key: str) -> None:
        # Sidecar first so that a concurrent reader never sees a sidecar without its matrix.
        npy, meta_path = self.paths(key)
        for p in (meta_path, npy):
            try:
                p.unlink()
            except OSError:
                pass
