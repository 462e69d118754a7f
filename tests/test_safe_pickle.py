"""The restricted unpickler: safe values load, code-running globals are refused before running."""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import subprocess

import numpy as np
import pytest

from merc.data.safe_pickle import safe_load_pickle
from merc.errors import MercInputError


def _dump(tmp_path, obj, name="x.pkl", protocol=2):
    p = tmp_path / name
    with open(p, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return p


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_builtins_and_numpy_round_trip(tmp_path, protocol):
    dd = collections.defaultdict(list)
    dd["a"].append(1)
    obj = {
        "containers": [(1, 2), {3, 4}, frozenset({5}), {"k": [None, True, False]}],
        "scalars": [1, 2**70, 1.5, 3 + 4j, "té", b"\x00\xff", bytearray(b"ab"), slice(1, 5, 2),
                    range(3)],
        "ordered": collections.OrderedDict(b=1, a=2),
        "default": dd,
        "float32": np.arange(6, dtype=np.float32).reshape(2, 3),
        "float64_f_order": np.asfortranarray(np.ones((3, 2))),
        "int64": np.array([1, -2], dtype=np.int64),
        "strings": np.array(["a", "bc"]),
        "objects": np.array([1, "x", None], dtype=object),
        "np_scalars": [np.float32(1.25), np.int64(7), np.bool_(True)],
    }
    out = safe_load_pickle(_dump(tmp_path, obj, protocol=protocol))
    assert out["containers"] == obj["containers"]
    assert out["scalars"] == obj["scalars"]
    assert out["ordered"] == obj["ordered"] and isinstance(out["ordered"], collections.OrderedDict)
    assert out["default"]["a"] == [1] and out["default"].default_factory is list
    for key in ("float32", "float64_f_order", "int64", "strings", "objects"):
        np.testing.assert_array_equal(out[key], obj[key])
        assert out[key].dtype == obj[key].dtype
    assert out["np_scalars"] == obj["np_scalars"]
    assert type(out["np_scalars"][0]) is np.float32


def test_python2_strings_decode_as_latin1(tmp_path):
    # A Python 2 ``str`` is SHORT_BINSTRING ('U'); Python 3 never writes it, so craft it.
    p = tmp_path / "py2.pkl"
    p.write_bytes(b"\x80\x02]q\x00(U\x04caf\xe9q\x01"
                  b"c__builtin__\nset\nq\x02]q\x03K\x01a\x85Rq\x04e.")
    assert safe_load_pickle(p) == ["caf\xe9", {1}]


class _Python2Pickler(pickle._Pickler):
    """Writes ``bytes`` as Python 2 ``str`` opcodes (SHORT_BINSTRING/BINSTRING), as a Python 2
    pickle of a numpy array stores its buffer, instead of Python 3's ``_codecs.encode`` call."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def test_python2_numpy_array_pickle(tmp_path):
    arrays = {"Ses01F_impro01": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
              "big": np.arange(300, dtype=np.float64)}
    buf = io.BytesIO()
    _Python2Pickler(buf, protocol=2).dump([arrays, ["M", "F"]])
    data = buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"_codecs" not in data and b"numpy.core.multiarray" in data
    p = tmp_path / "py2_numpy.pkl"
    p.write_bytes(data)
    out, speakers = safe_load_pickle(p)
    assert speakers == ["M", "F"]
    for key, arr in arrays.items():
        np.testing.assert_array_equal(out[key], arr)
        assert out[key].dtype == arr.dtype


def test_old_numpy_core_spelling_loads(tmp_path):
    # numpy < 2 (and Python 2) pickles name ``numpy.core.multiarray``; numpy 2 ``numpy._core``.
    arr = np.arange(4, dtype=np.float32)
    data = pickle.dumps(arr, protocol=2)
    assert b"numpy._core.multiarray" in data
    p = tmp_path / "old.pkl"
    p.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    np.testing.assert_array_equal(safe_load_pickle(p), arr)


class _SystemPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))


class _PopenPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (subprocess.Popen, (["touch", str(self.marker)],))


class _EvalPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("payload", [_SystemPayload, _PopenPayload, _EvalPayload])
@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_code_executing_payload_is_refused_and_does_not_run(tmp_path, payload, protocol):
    marker = tmp_path / "pwned.txt"
    # Nested inside ordinary data, as a poisoned feature file would hide it.
    p = _dump(tmp_path, {"videoText": [np.zeros(2), payload(marker)]}, protocol=protocol)
    with pytest.raises(MercInputError) as err:
        safe_load_pickle(p)
    text = _one_line(err)
    assert str(p) in text and "refusing to unpickle" in text and "field 'pickle'" in text
    assert "only builtins and numpy arrays are allowed" in text
    assert not marker.exists()


@pytest.mark.parametrize("module,name", [
    ("builtins", "eval"), ("builtins", "exec"), ("builtins", "getattr"),
    ("builtins", "__import__"), ("builtins", "open"), ("builtins", "object"),
    ("__builtin__", "eval"), ("__builtin__", "apply"), ("os", "system"), ("posix", "system"),
    ("subprocess", "Popen"), ("numpy", "load"), ("numpy.lib.npyio", "load"),
    ("numpy.core.multiarray", "frombuffer_evil"), ("copyreg", "_reconstructor"),
    ("copy_reg", "_reconstructor"), ("collections", "namedtuple"), ("_codecs", "decode"),
])
def test_disallowed_globals(tmp_path, module, name):
    p = tmp_path / "g.pkl"
    # GLOBAL then a no-argument reduce; refusal must come at GLOBAL, before any call.
    p.write_bytes(b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n)R.")
    with pytest.raises(MercInputError) as err:
        safe_load_pickle(p)
    assert f"refusing to unpickle {module}.{name}" in _one_line(err)


def test_missing_file(tmp_path):
    p = tmp_path / "nope.pkl"
    with pytest.raises(MercInputError) as err:
        safe_load_pickle(p)
    text = _one_line(err)
    assert str(p) in text and "not found" in text


def test_directory_and_empty_file(tmp_path):
    with pytest.raises(MercInputError, match="directory"):
        safe_load_pickle(tmp_path)
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    with pytest.raises(MercInputError, match="empty file"):
        safe_load_pickle(empty)


@pytest.mark.parametrize("cut", [1, 10, 0.5, -1])
def test_truncated_pickle(tmp_path, cut):
    data = pickle.dumps([{"a": np.ones((4, 3), dtype=np.float32)}, list(range(50))], protocol=2)
    n = int(len(data) * cut) if isinstance(cut, float) else (cut if cut > 0 else len(data) + cut)
    p = tmp_path / "cut.pkl"
    p.write_bytes(data[:n])
    with pytest.raises(MercInputError) as err:
        safe_load_pickle(p)
    text = _one_line(err)
    assert str(p) in text and ("truncated" in text or "corrupt" in text)


def test_garbage_bytes(tmp_path):
    p = tmp_path / "garbage.pkl"
    p.write_bytes(b"this is not a pickle\n\x00\x01")
    with pytest.raises(MercInputError) as err:
        safe_load_pickle(p)
    assert str(p) in _one_line(err)
