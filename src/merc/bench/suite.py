"""What the benchmarks share: the reference model, the bench corpora and their tables.

Kept apart from :mod:`merc.bench.accuracy` (which runs the suites) and :mod:`merc.bench.report`
(which writes their tables) so that both read it without importing each other. Each model's
ablation variants are declared with its registration (``register_model(..., variants=...)``);
a bench corpus lists which of those variant names apply to it.
"""

from __future__ import annotations

from dataclasses import dataclass

REFERENCE_MODEL = "broad-mamba"
"""The model every other model is compared with: ``significance.md`` of the accuracy bench,
the inference-time ratios of the efficiency bench, the t-SNE figure."""

FULL = "full"
"""Variant name of a model in its default configuration."""

READING_TABLES = {"paper": "paper", "causal": "causal"}
"""Table -> the variant it sets beside each model's default (``full``), on every bench corpus and
for every model that registers that variant: ``paper`` (the paper's literal model: what merc's
reading adds) and ``causal`` (past context only: the price of predicting live)."""


@dataclass(frozen=True)
class BenchCorpus:
    """A corpus as the bench uses it."""

    kind: str
    """Loader name (``data.corpus``)."""
    subdir: str
    """Folder under the bench's data folder (``--data``)."""
    modalities: tuple[str, ...] | None = None
    """Modalities of the main table (default: the corpus' registered default modalities)."""
    modality_sets: tuple[tuple[str, ...], ...] = ()
    """Modality subsets for Table 4 (the corpus default is always included); empty = none."""
    ablations: tuple[str, ...] = ()
    """Names of model variants (``register_model(..., variants=...)``) that apply here as
    ablations (PFM/fusion ablations need more than one modality)."""
    fusion: bool = False
    """Whether to run the Fig. 5 fusion comparison here."""
    lnorm: bool = False
    """Whether to run "w/o L_norm" for the Fig. 6 loss curves here."""
    overrides: tuple[str, ...] = ()
    """Dotted config overrides for every run on this corpus (e.g. in tests)."""


BENCH_CORPORA: dict[str, BenchCorpus] = {
    "iemocap": BenchCorpus("iemocap", "iemocap", modality_sets=(("text",), ("audio",)),
                           ablations=("w/o PE", "w/o BLS", "w/o PFM", "w/o Mamba", "w/o MEC",
                                      "paper (causal x1)", "w/o DDM", "w/o CFM", "w/o CRM"),
                           fusion=True, lnorm=True),
    "meld": BenchCorpus("meld", "meld", ablations=("w/o PE", "w/o BLS"), lnorm=True),
    "mosi": BenchCorpus("mosi", "mosi",
                        modality_sets=(("text",), ("audio",), ("video",), ("text", "audio"),
                                       ("text", "video"), ("audio", "video")),
                        ablations=("w/o PE", "w/o BLS", "w/o PFM", "w/o Mamba", "w/o MEC",
                                   "paper (causal x1)", "w/o DDM", "w/o CFM", "w/o CRM"),
                        fusion=True),
}
"""The corpora of the suites and which tables each contributes to."""


def default_modalities(corpus: BenchCorpus) -> tuple[str, ...]:
    """The main table's modalities on ``corpus``: its own, else the corpus registry's default."""
    from merc.data.corpora import get_corpus

    if corpus.modalities:
        return tuple(corpus.modalities)
    mods = get_corpus(corpus.kind).modalities
    if not mods:
        raise ValueError(f"bench corpus {corpus.kind!r} needs default modalities")
    return tuple(mods)


FROZEN = "frozen"
"""Feature source of a corpus' default text features: the bundled frozen all-MiniLM-L6-v2
(MOSI: its shipped text vectors). The accuracy bench's only source unless ``--text-encoder`` adds
fine-tuned encoder folders."""

CORPUS_PLACEHOLDER = "{corpus}"
"""In a ``--text-encoder NAME=ENC_DIR`` folder: replaced by each bench corpus' name."""


@dataclass(frozen=True)
class FeatureSource:
    """One value of the accuracy bench's features axis."""

    name: str
    """Shown in the tables' features column and in run folder names."""
    encoder: str | None = None
    """Encoder folder used as ``data.text`` (may hold :data:`CORPUS_PLACEHOLDER`); ``None`` =
    the corpus' default text features (:data:`FROZEN`)."""

    def folder(self, corpus: str) -> str | None:
        """The encoder folder for ``corpus`` (``None`` for the frozen default)."""
        return None if self.encoder is None else self.encoder.replace(CORPUS_PLACEHOLDER, corpus)


def parse_features(items: list[str] | tuple[str, ...]) -> list[FeatureSource]:
    """``["frozen", "ft=encoders/{corpus}", "runs/enc-meld"]`` -> feature sources.

    ``NAME=ENC_DIR`` names a source; a bare ``ENC_DIR`` is named after its last folder.

    Raises:
        ValueError: one line naming ``--text-encoder``: an empty list, a bad or repeated name.
    """
    import re
    from pathlib import PurePath

    sources: list[FeatureSource] = []
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep:
            name, folder = ("" if item == FROZEN else PurePath(item).name), item
        if item == FROZEN:
            source = FeatureSource(FROZEN)
        elif not folder or not name:
            raise ValueError(f"--text-encoder {item!r}: expected frozen, NAME=ENC_DIR or ENC_DIR "
                             f"(ENC_DIR may contain {CORPUS_PLACEHOLDER})")
        elif CORPUS_PLACEHOLDER in name:
            raise ValueError(f"--text-encoder {item!r}: name this source, e.g. ft={item}")
        elif name == FROZEN or not re.fullmatch(r"[A-Za-z0-9._-]+", name):
            raise ValueError(f"--text-encoder {item!r}: a source name is letters, digits, '.', '_' "
                             f"or '-' and not {FROZEN!r} (the default text features)")
        else:
            source = FeatureSource(name, folder)
        if any(s.name == source.name for s in sources):
            raise ValueError(f"--text-encoder: {source.name!r} is given twice")
        sources.append(source)
    if not sources:
        raise ValueError("--text-encoder: expected at least one source (e.g. frozen)")
    return sources


def encoder_finetunes(folder: str | None) -> int | None:
    """How many encoder fine-tunes stand behind features from ``folder``: ``1 + K`` for a merc
    encoder folder cross-fitted on K folds (``merc_encoder.json`` -> ``training.cross_fit.folds``),
    1 without cross-fitting; ``None`` for anything that is not a merc encoder folder."""
    from merc.text.record import EncoderRecord, is_encoder_folder

    if not is_encoder_folder(folder):
        return None
    cross_fit = EncoderRecord.load(folder).training.get("cross_fit") or {}
    return 1 + int(cross_fit.get("folds", 0))
