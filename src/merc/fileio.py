"""Atomic result files: a reader (or a re-run after a kill) never sees half a file.

Every result merc writes -- ``summary.json``, ``metrics.json``, ``config.yaml``, checkpoints,
prediction JSON -- goes through :func:`atomic_write_bytes`: the bytes go to a temporary file in
the destination's own folder (same file system, so the rename cannot degrade to a copy), are
flushed to disk, and only then :func:`os.replace` puts the file in place in one step. A run
killed at any moment leaves either the previous complete file or the new complete one, plus at
worst a stray ``.NAME.*.tmp`` that nothing reads.

JSON is written with ``allow_nan=False``: ``NaN``/``Infinity`` are not JSON, and a result that
holds one is a failure to report, not a number to hand to the next tool.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; results are ordinary files, readable like any other.
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a signal mid-write too: never leave the temporary file behind
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_text(obj: Any, *, what: str, **kwargs: Any) -> str:
    """``json.dumps(obj, allow_nan=False)``; a NaN/inf raises ``ValueError`` naming ``what``."""
    try:
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError as e:
        if "Out of range float" not in str(e):
            raise
        raise ValueError(f"{what}: a value is NaN or infinite ({e}); not written") from None


def write_json(path: str | Path, obj: Any, **kwargs: Any) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically; refuses NaN/inf (``ValueError`` naming
    ``path``) instead of writing invalid JSON."""
    kwargs.setdefault("indent", 2)
    return atomic_write_text(path, json_text(obj, what=str(path), **kwargs) + "\n")


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, remembered per (path, size, mtime) for this process."""
    import hashlib

    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]
