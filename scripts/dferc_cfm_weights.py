"""What DF-ERC's contribution-aware fusion (CFM) learned: its modality weights on a split.

For every ``seed_*/best.ckpt`` of a ``merc train --model df-erc`` run, the weights
``ModelOutput.modality_weights`` of the labelled utterances of ``--split`` (default: valid),
their spread, and whether each modality's own classifier (CFM's per-modality heads) is right.
Prints one JSON line per seed and writes them all to ``--out``::

    python scripts/dferc_cfm_weights.py RUN_DIR --out cfm_weights.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from merc.training.prepare import make_loader
from merc.checkpoint import load_checkpoint
from merc.training.evaluate import prepare_for_checkpoint


@torch.no_grad()
def seed_weights(checkpoint: Path, split: str) -> dict:
    loaded = load_checkpoint(checkpoint)
    model = loaded.model.eval()
    prepared = prepare_for_checkpoint(loaded, progress=False)
    weights: dict[str, list[torch.Tensor]] = {m: [] for m in model.modalities}
    right: dict[str, list[torch.Tensor]] = {m: [] for m in model.modalities}
    for batch in make_loader(prepared, split, 16):
        out = model(batch)
        keep = model.labelled(batch)
        h = model.encode(batch)
        s, c = model.disentangle(batch, h)
        logits, _ = model.confidence(model.modality_vectors(h, s, c))
        for m in model.modalities:
            weights[m].append(out.modality_weights[m][keep])
            right[m].append((logits[m].argmax(-1) == batch.labels)[keep])
    result = {}
    for m in model.modalities:
        w = torch.cat(weights[m]).numpy()
        ok = torch.cat(right[m]).numpy()
        result[m] = {"weight_mean": float(w.mean()), "weight_std": float(w.std()),
                     "weight_p5": float(np.percentile(w, 5)),
                     "weight_p95": float(np.percentile(w, 95)),
                     "head_accuracy": float(ok.mean()),
                     "weight_when_head_right": float(w[ok].mean()) if ok.any() else None,
                     "weight_when_head_wrong": float(w[~ok].mean()) if (~ok).any() else None}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a merc train --model df-erc run folder")
    ap.add_argument("--split", default="valid", choices=("train", "valid", "test"))
    ap.add_argument("--out", type=Path, help="write the per-seed results as JSON")
    args = ap.parse_args()
    results = {}
    for ckpt in sorted(args.run.glob("seed_*/best.ckpt")):
        results[ckpt.parent.name] = seed_weights(ckpt, args.split)
        print(ckpt.parent.name, json.dumps(results[ckpt.parent.name]))
    if not results:
        raise SystemExit(f"{args.run}: no seed_*/best.ckpt")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
