"""Restricted unpickling for the field's feature pickles.

The MERC literature distributes features as pickles (DialogueRNN/DialogueGCN
``IEMOCAP_features.pkl``, MMGCN ``MELD_features_raw1.pkl``, COSMIC ``*_features_roberta.pkl``),
many written by Python 2. ``pickle.load`` on such a file runs whatever callable the file names,
so a downloaded feature file could execute code. :func:`safe_load_pickle` therefore resolves
only an allow-list of globals: container/scalar constructors from ``builtins`` that cannot run
code, ``collections.OrderedDict``/``defaultdict``, and the few numpy entry points that rebuild
arrays, dtypes and scalars. Every other global is refused with a one-line
:class:`~merc.errors.MercInputError` *before* it is imported or called.

The structure checks the field-pickle loaders share live in :mod:`merc.data.pickle_layout`.
"""

from __future__ import annotations

import _compat_pickle
import pickle
import warnings
from pathlib import Path

import numpy as np

from merc.errors import MercInputError

_SAFE_BUILTINS = frozenset({
    # Plain data constructors: called with data arguments they only build a value.
    "dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray",
    "int", "float", "complex", "bool", "slice", "range",
})

_SAFE_GLOBALS = frozenset({
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    # Protocol 0-2 pickles written by Python 3 store ``bytes`` (numpy array buffers included) as
    # ``_codecs.encode(text, "latin1")``; it only encodes a string with a registered codec.
    ("_codecs", "encode"),
    # numpy arrays, dtypes and scalars. numpy 2 renamed ``numpy.core`` to ``numpy._core``; old
    # pickles name the former, new ones the latter (normalised in ``_numpy_module``).
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),  # protocol-5 arrays
})

_NUMPY2 = int(np.__version__.split(".")[0]) >= 2


def _canonical(module: str) -> str:
    """``numpy.core.*`` spelled as numpy 2's ``numpy._core.*`` (the allow-list spelling)."""
    if module == "numpy.core" or module.startswith("numpy.core."):
        return "numpy._core" + module[len("numpy.core"):]
    return module


def _numpy_module(module: str) -> str:
    """Map ``numpy.core.*`` <-> ``numpy._core.*`` to the spelling this numpy provides.

    Importing ``numpy.core`` under numpy 2 goes through a deprecation shim; numpy 1 has no
    ``numpy._core``. Either spelling in a file must load under either numpy.
    """
    module = _canonical(module)
    if not _NUMPY2 and (module == "numpy._core" or module.startswith("numpy._core.")):
        return "numpy.core" + module[len("numpy._core"):]
    return module


def _python3_name(module: str, name: str) -> tuple[str, str]:
    """Translate Python 2 global names (``__builtin__.unicode``) the way ``pickle`` does."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


class SafeUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only builtin containers/scalars and numpy arrays."""

    def __init__(self, file, *, source: str | Path, encoding: str = "latin1") -> None:
        super().__init__(file, encoding=encoding)
        self._source = source

    def find_class(self, module: str, name: str):
        # Decide on the Python 3 name (``__builtin__.unicode`` -> ``builtins.str``) so a Python 2
        # spelling can neither dodge nor be wrongly caught by the allow-list.
        py3_module, py3_name = _python3_name(module, name)
        allowed = ((py3_module == "builtins" and py3_name in _SAFE_BUILTINS)
                   or (_canonical(py3_module), py3_name) in _SAFE_GLOBALS)
        if not allowed:
            raise MercInputError(self._source, f"refusing to unpickle {module}.{name}: only "
                                 "builtins and numpy arrays are allowed", field="pickle")
        return super().find_class(_numpy_module(py3_module), py3_name)


def safe_load_pickle(path: str | Path, encoding: str = "latin1") -> object:
    """Load a pickle allowing only builtin containers/scalars and numpy arrays.

    Args:
        path: The pickle file.
        encoding: How Python 2 ``str`` objects are decoded. ``"latin1"`` (the default, as the
            original repositories load these files) maps bytes 1:1 and is what numpy needs to
            rebuild arrays pickled by Python 2.

    Raises:
        MercInputError: one line naming the file, for a missing file, a refused global, or a
            truncated/corrupt pickle.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        what = "is a directory, not a pickle file" if p.is_dir() else "pickle file not found"
        raise MercInputError(p, what, field="pickle")
    try:
        # Streamed, not read into memory first: RoBERTa feature pickles run to hundreds of MB.
        with open(p, "rb") as f, warnings.catch_warnings():
            if p.stat().st_size == 0:
                raise MercInputError(p, "empty file, not a pickle", field="pickle")
            # Old numpy pickles can trigger numpy deprecation warnings on load; not actionable.
            warnings.simplefilter("ignore", DeprecationWarning)
            return SafeUnpickler(f, source=p, encoding=encoding).load()
    except MercInputError:
        raise
    except OSError as e:
        raise MercInputError(p, f"cannot read pickle: {e.strerror or e}", field="pickle") from None
    except EOFError:
        raise MercInputError(p, "truncated pickle (unexpected end of file)",
                             field="pickle") from None
    except (pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            ImportError, UnicodeError, OverflowError, MemoryError, RecursionError) as e:
        raise MercInputError(p, f"corrupt pickle ({type(e).__name__}: {e})",
                             field="pickle") from None
