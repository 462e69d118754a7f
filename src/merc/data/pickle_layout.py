"""Structure checks shared by the field-pickle loaders (dialoguernn/mmgcn/cosmic_pickle).

Those files share one layout: a top-level list of fields, most of them dicts keyed by dialogue id
holding per-utterance lists, plus split lists of dialogue ids. These helpers check arity, split
lists, key presence, per-dialogue lengths, feature matrices and label indices, so every loader
reports a problem the same way: file, dialogue, utterance and field.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from merc.data.conversation import Conversation, Corpus
from merc.errors import MercInputError
# --------------------------------------------------------------------------------------------

_SEQUENCE_TYPES = (list, tuple, np.ndarray)


def unpack_fields(path: Path, obj: object, names: Sequence[str], what: str) -> dict[str, object]:
    """Check that ``obj`` is a list/tuple of ``len(names)`` items; return them by name.

    ``what`` names the format in the error (e.g. ``"DialogueRNN IEMOCAP_features.pkl"``).
    """
    if not isinstance(obj, (list, tuple)):
        raise MercInputError(path, f"expected a {len(names)}-item list/tuple ({what}: "
                             f"{', '.join(names)}), got {type(obj).__name__}", field="pickle")
    if len(obj) != len(names):
        raise MercInputError(path, f"expected {len(names)} items ({what}: {', '.join(names)}), "
                             f"got {len(obj)}", field="pickle")
    return dict(zip(names, obj))


def require_dict(path: Path, fields: Mapping[str, object], name: str) -> Mapping:
    """The field ``name`` must be a dict keyed by dialogue id."""
    value = fields[name]
    if not isinstance(value, Mapping):
        raise MercInputError(path, f"expected a dict keyed by dialogue id, got "
                             f"{type(value).__name__}", field=name)
    return value


def id_list(path: Path, fields: Mapping[str, object], name: str) -> list:
    """A split list of dialogue ids, in file order.

    Lists/tuples/1-d arrays keep their order; sets (unordered in the file) are sorted by their
    string form so that the corpus order never depends on hash randomisation.
    """
    value = fields[name]
    if isinstance(value, np.ndarray) and value.ndim == 1:
        value = value.tolist()
    if isinstance(value, (set, frozenset, list, tuple)):
        seen: set = set()
        for vid in value:
            if not isinstance(vid, (str, int, np.integer)) or isinstance(vid, bool):
                raise MercInputError(path, f"dialogue id {vid!r} is a {type(vid).__name__}, "
                                     "expected str or int", field=name)
            if vid in seen:
                raise MercInputError(path, "listed twice in the split list", dialogue=vid,
                                     field=name)
            seen.add(vid)
        return sorted(value, key=str) if isinstance(value, (set, frozenset)) else list(value)
    raise MercInputError(path, f"expected a list of dialogue ids, got {type(value).__name__}",
                         field=name)


def assign_splits(path: Path,
                  split_lists: Sequence[tuple[str, str, list]]) -> list[tuple[object, str]]:
    """Combine ``(split, field, ids)`` triples into ``(dialogue id, split)`` in order.

    A dialogue listed in two split lists is an error (it would leak between train and test).
    """
    where: dict[str, str] = {}
    out: list[tuple[object, str]] = []
    for split, field, ids in split_lists:
        for vid in ids:
            key = str(vid)
            if key in where:
                raise MercInputError(path, f"listed in both {where[key]} and {field}",
                                     dialogue=vid, field=field)
            where[key] = field
            out.append((vid, split))
    return out


def entry(path: Path, mapping: Mapping, field: str, vid: object, n: int | None = None) -> object:
    """``mapping[vid]``; a missing key, or a length other than ``n`` (if given), is an error."""
    try:
        value = mapping[vid]
    except (KeyError, TypeError):
        raise MercInputError(path, "dialogue id is in a split list but missing from this dict",
                             dialogue=vid, field=field) from None
    if n is not None:
        if not isinstance(value, _SEQUENCE_TYPES):
            raise MercInputError(path, f"expected a per-utterance list, got "
                                 f"{type(value).__name__}", dialogue=vid, field=field)
        if len(value) != n:
            count = f"{len(value)} entr{'y' if len(value) == 1 else 'ies'}"
            raise MercInputError(path, f"{count} for {n} utterances (length differs from the "
                                 "labels)", dialogue=vid, field=field)
    return value


def dialogue_length(path: Path, labels: Mapping, field: str, vid: object) -> int:
    """Number of utterances of ``vid``, taken from its label list (every other field must agree)."""
    value = entry(path, labels, field, vid)
    if not isinstance(value, _SEQUENCE_TYPES) or (isinstance(value, np.ndarray)
                                                   and value.ndim != 1):
        raise MercInputError(path, f"expected a list of label indices, got "
                             f"{type(value).__name__}", dialogue=vid, field=field)
    if len(value) == 0:
        raise MercInputError(path, "empty dialogue (no labels)", dialogue=vid, field=field)
    return len(value)


def label_names_of(path: Path, value: Sequence, names: Sequence[str], vid: object,
                   field: str) -> list[str]:
    """Map integer label indices to names; a non-integer or out-of-range index is an error."""
    out = []
    for i, lab in enumerate(value):
        idx = _as_index(lab)
        if idx is None:
            raise MercInputError(path, f"label {lab!r} is not an integer class index",
                                 dialogue=vid, utterance=f"#{i}", field=field)
        if not 0 <= idx < len(names):
            raise MercInputError(path, f"unknown label index {idx}; expected 0..{len(names) - 1} "
                                 f"({', '.join(names)})", dialogue=vid, utterance=f"#{i}",
                                 field=field)
        out.append(names[idx])
    return out


def _as_index(value: object) -> int | None:
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    # torch.LongTensor (how the original repos consume labels) accepts integral floats too.
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    return None


def strings_of(path: Path, value: Sequence, vid: object, field: str) -> list[str]:
    """Per-utterance strings (transcripts, utterance ids); anything else is an error."""
    out = []
    for i, s in enumerate(value):
        if isinstance(s, np.str_):
            s = str(s)
        if not isinstance(s, str):
            raise MercInputError(path, f"expected a string, got {type(s).__name__}",
                                 dialogue=vid, utterance=f"#{i}", field=field)
        out.append(s)
    return out


def speakers_of(path: Path, value: Sequence, vid: object, field: str) -> list[str]:
    """Speaker per utterance: a name (IEMOCAP ``"M"``/``"F"``) or a one-hot party vector (MELD).

    One-hot vectors become ``"speaker<k>"`` with ``k`` the index of the 1; a vector that is not
    exactly one-hot is an error rather than an argmax guess.
    """
    out = []
    for i, s in enumerate(value):
        if isinstance(s, np.str_):
            s = str(s)
        if isinstance(s, str):
            if not s:
                raise MercInputError(path, "empty speaker name", dialogue=vid,
                                     utterance=f"#{i}", field=field)
            out.append(s)
            continue
        try:
            vec = np.asarray(s, dtype=np.float64)
        except (TypeError, ValueError):
            vec = None
        if vec is None or vec.ndim != 1 or vec.size == 0:
            raise MercInputError(path, f"expected a speaker name or one-hot vector, got "
                                 f"{type(s).__name__}", dialogue=vid, utterance=f"#{i}",
                                 field=field)
        ones = np.flatnonzero(vec == 1.0)
        if len(ones) != 1 or np.count_nonzero(vec) != 1:
            raise MercInputError(path, f"speaker vector {vec.tolist()} is not one-hot",
                                 dialogue=vid, utterance=f"#{i}", field=field)
        out.append(f"speaker{int(ones[0])}")
    return out


def feature_matrix(path: Path, value: object, vid: object, field: str, n: int) -> np.ndarray:
    """A float32 ``(n, d)`` matrix from a 2-d array or a list of 1-d per-utterance vectors.

    Errors name the utterance for a wrong row shape, a non-numeric row, or a NaN/inf value.
    """
    if isinstance(value, np.ndarray) and value.ndim == 2 and value.dtype.kind in "biuf":
        rows = value
    elif isinstance(value, _SEQUENCE_TYPES):
        if len(value) != n:
            raise MercInputError(path, f"{len(value)} feature rows for {n} utterances (length "
                                 "differs from the labels)", dialogue=vid, field=field)
        rows = []
        dim = None
        for i, row in enumerate(value):
            try:
                r = np.asarray(row)
                if r.dtype == object:  # e.g. a row kept as an object array of floats
                    r = r.astype(np.float64)
            except (TypeError, ValueError):
                r = None
            if r is None or r.dtype.kind not in "biuf" or r.ndim != 1:
                what = ("non-numeric" if r is None or r.dtype.kind not in "biuf"
                        else f"{r.ndim}-d")
                raise MercInputError(path, f"expected a 1-d numeric feature vector, got a "
                                     f"{what} {type(row).__name__}", dialogue=vid,
                                     utterance=f"#{i}", field=field)
            if dim is None:
                dim = r.shape[0]
            elif r.shape[0] != dim:
                raise MercInputError(path, f"feature vector of length {r.shape[0]}, expected "
                                     f"{dim} like utterance #0", dialogue=vid,
                                     utterance=f"#{i}", field=field)
            rows.append(r)
        rows = np.stack(rows) if rows else np.zeros((0, 0))
    else:
        raise MercInputError(path, f"expected a (utterances, dim) feature array, got "
                             f"{type(value).__name__}", dialogue=vid, field=field)
    if rows.shape[0] != n:
        raise MercInputError(path, f"{rows.shape[0]} feature rows for {n} utterances (length "
                             "differs from the labels)", dialogue=vid, field=field)
    if rows.shape[1] == 0:
        raise MercInputError(path, "zero-dimensional features", dialogue=vid, field=field)
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(rows, dtype=np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        i = int(np.argwhere(bad)[0][0])
        raise MercInputError(path, "non-finite value (NaN/inf, or too large for float32)",
                             dialogue=vid, utterance=f"#{i}", field=field)
    return out


class DimCheck:
    """Remembers each field's feature dimension and reports the first dialogue that differs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._dims: dict[str, tuple[int, object]] = {}

    def __call__(self, field: str, vid: object, matrix: np.ndarray) -> np.ndarray:
        d = int(matrix.shape[1])
        first = self._dims.setdefault(field, (d, vid))
        if first[0] != d:
            raise MercInputError(self.path, f"feature dim {d} differs from {first[0]} in "
                                 f"dialogue {first[1]}", dialogue=vid, field=field)
        return matrix


def warn_unlisted(path: Path, keys: object, listed: Sequence[tuple[object, str]],
                  field: str) -> None:
    """Warn (never silently drop) when ``field`` holds dialogues that no split list names."""
    if not isinstance(keys, Mapping):
        return
    named = {str(vid) for vid, _ in listed}
    extra = [k for k in keys if str(k) not in named]
    if extra:
        sample = ", ".join(str(k) for k in sorted(extra, key=str)[:3])
        warnings.warn(f"{path}: {len(extra)} dialogue(s) in {field!r} are in no split list and "
                      f"were not loaded (e.g. {sample})", stacklevel=3)


FeatureReader = Callable[[object, int], np.ndarray]
"""``(dialogue id, n utterances) -> float32 (n, d)``: reads one modality of one dialogue."""


def field_feature(path: Path, fields: Mapping[str, object], field: str,
                  dims: DimCheck) -> FeatureReader:
    """Reader for a plain ``{dialogue id: (n, d) features}`` dict field (``videoAudio``...)."""
    mapping = require_dict(path, fields, field)

    def read(vid: object, n: int) -> np.ndarray:
        return dims(field, vid, feature_matrix(path, entry(path, mapping, field, vid), vid,
                                               field, n))
    return read


def build_corpus(
    path: Path,
    fields: Mapping[str, object],
    *,
    name: str,
    label_field: str,
    label_names: Sequence[str],
    speaker_field: str,
    sentence_field: str | None,
    split_fields: Sequence[tuple[str, str]],
    features: Mapping[str, FeatureReader] | None = None,
    id_field: str | None = None,
) -> Corpus:
    """Build and validate a :class:`Corpus` from the dict-per-field layout of the field pickles.

    Args:
        fields: The unpacked top-level items by name (see :func:`unpack_fields`).
        label_field: Dict ``{dialogue id: [label index, ...]}``; fixes each dialogue's length.
        label_names: The label map (index ``i`` -> ``label_names[i]``).
        speaker_field: Dict of per-utterance speaker names or one-hot vectors.
        sentence_field: Dict of per-utterance transcripts (``None``: empty strings).
        split_fields: ``(split, field)`` pairs in the order dialogues are emitted, e.g.
            ``[("train", "trainVid"), ("test", "testVid")]``.
        features: Modality name -> reader (see :func:`field_feature`).
        id_field: Optional dict of per-utterance ids (``videoIDs``).
    """
    labels = require_dict(path, fields, label_field)
    speakers = require_dict(path, fields, speaker_field)
    sentences = require_dict(path, fields, sentence_field) if sentence_field else None
    utt_ids = require_dict(path, fields, id_field) if id_field else None
    listed = assign_splits(path, [(split, f, id_list(path, fields, f))
                                  for split, f in split_fields])
    conversations = []
    for vid, split in listed:
        n = dialogue_length(path, labels, label_field, vid)
        conv_labels = label_names_of(path, labels[vid], label_names, vid, label_field)
        conv_speakers = speakers_of(path, entry(path, speakers, speaker_field, vid, n), vid,
                                    speaker_field)
        texts = (strings_of(path, entry(path, sentences, sentence_field, vid, n), vid,
                            sentence_field) if sentences is not None else [""] * n)
        ids = None
        if utt_ids is not None:
            ids = [str(u) if isinstance(u, (int, np.integer)) else u
                   for u in entry(path, utt_ids, id_field, vid, n)]
            ids = strings_of(path, ids, vid, id_field)
        feats = {m: read(vid, n) for m, read in (features or {}).items()}
        conversations.append(Conversation(id=str(vid), split=split, speakers=conv_speakers,
                                          utterances=texts, labels=conv_labels,
                                          utterance_ids=ids, features=feats))
    warn_unlisted(path, labels, listed, label_field)
    has_valid = any(split == "valid" for _, split in listed)
    corpus = Corpus(name=name, conversations=conversations, label_names=list(label_names),
                    source=str(path),
                    valid_split="official" if has_valid else "none in file")
    return corpus.validate()
