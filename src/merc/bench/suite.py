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
                                      "bi-Mamba x2", "w/o DDM", "w/o CFM", "w/o CRM"),
                           fusion=True, lnorm=True),
    "meld": BenchCorpus("meld", "meld", ablations=("w/o PE", "w/o BLS"), lnorm=True),
    "mosi": BenchCorpus("mosi", "mosi",
                        modality_sets=(("text",), ("audio",), ("video",), ("text", "audio"),
                                       ("text", "video"), ("audio", "video")),
                        ablations=("w/o PE", "w/o BLS", "w/o PFM", "w/o Mamba", "w/o MEC",
                                   "bi-Mamba x2", "w/o DDM", "w/o CFM", "w/o CRM"),
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
