"""What data a run or an evaluation looked at: the ``data`` block of ``summary.json``, of each
``metrics.json`` and of the checkpoint's stored metadata, and the checks ``merc evaluate`` and
``merc compare`` make with it.

A split's fingerprint hashes its dialogue ids, utterance ids, speakers, texts and labels -- not
its features, not its split name: the same dialogues give the same fingerprint whichever split
they sit in, which is how a corpus whose train and test splits were swapped is recognised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from merc.data.conversation import split_fingerprint  # noqa: F401  (part of this module's API)
from merc.errors import MercInputError

SPLITS = ("train", "valid", "test")


def data_block(corpus: Any) -> dict[str, Any]:
    """``{"corpus", "valid_split", "splits": {split: {"dialogues", "utterances",
    "fingerprint"}}, "train_and_valid_fingerprint"}`` for a
    :class:`merc.data.conversation.Corpus`, after its validation split was carved (a seeded one
    is recorded as used)."""
    splits = {}
    for s in SPLITS:
        convs = corpus.split(s)
        splits[s] = {"dialogues": len(convs), "utterances": sum(len(c) for c in convs),
                     "fingerprint": split_fingerprint(convs)}
    # A validation split carved from train at training time returns to train when the corpus is
    # read with other splits; the union is what such a corpus' train (or swapped test) holds.
    both = split_fingerprint(corpus.split("train") + corpus.split("valid"))
    return {"corpus": corpus.name, "valid_split": corpus.valid_split, "splits": splits,
            "train_and_valid_fingerprint": both}


def _describe(entry: dict) -> str:
    return (f"{entry['dialogues']} dialogues/{entry['utterances']} utterances, "
            f"fingerprint {entry['fingerprint']}")


def check_evaluation_data(stored: dict | None, current: dict, split: str,
                          source: object) -> str | None:
    """Compare the data ``merc evaluate`` was given with what the checkpoint was trained on.

    Returns:
        ``None`` when split ``split`` is the one recorded at training time, else one line to
        show the user (the data differ, or the checkpoint predates the record).

    Raises:
        MercInputError: ``split`` (not ``train``) holds exactly the checkpoint's training
            dialogues: its score would be a training score under another name.
    """
    if not stored or "splits" not in stored:
        return ("note: this checkpoint predates data fingerprints; cannot check that the "
                f"{split} split is the one it was evaluated on at training time")
    here = current["splits"][split]
    trained_on = {stored["splits"]["train"]["fingerprint"],
                  stored.get("train_and_valid_fingerprint")}
    if split != "train" and here["fingerprint"] in trained_on:
        raise MercInputError(source, f"the {split} split given holds the checkpoint's training "
                             f"dialogues (fingerprint {here['fingerprint']}); were the splits "
                             "swapped? refusing to report a training score as "
                             f"{split}", field="data")
    then = stored["splits"][split]
    if here["fingerprint"] != then["fingerprint"] or stored["corpus"] != current["corpus"]:
        return (f"warning: the {split} split differs from the one recorded at training time: "
                f"here {current['corpus']} {_describe(here)}; at training "
                f"{stored['corpus']} {_describe(then)}")
    return None


def check_comparable(a: dict, b: dict, names: Sequence[str]) -> str | None:
    """Refuse to compare two ``summary.json`` of different corpora.

    Returns:
        ``None`` when both record the same corpus and test-split fingerprint, else a note that
        the fingerprint could not be checked (a run written before the ``data`` block).

    Raises:
        ValueError: different corpus names, or different test-split fingerprints.
    """
    if a.get("corpus") != b.get("corpus"):
        raise ValueError(f"the runs are on different corpora ({names[0]}: {a.get('corpus')}, "
                         f"{names[1]}: {b.get('corpus')}); refusing to compare them")
    da, db = a.get("data"), b.get("data")
    if not (da and db):
        old = [n for n, d in zip(names, (da, db)) if not d]
        return (f"note: {', '.join(old)} predate{'s' if len(old) == 1 else ''} data "
                "fingerprints; same corpus name, but the test-split fingerprint could not be "
                "checked")
    ta, tb = da["splits"]["test"], db["splits"]["test"]
    if ta["fingerprint"] != tb["fingerprint"]:
        raise ValueError(f"the runs' test splits differ ({names[0]}: {_describe(ta)}; "
                         f"{names[1]}: {_describe(tb)}); refusing to compare them")
    return None
