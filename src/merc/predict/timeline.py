"""Showing a predicted conversation: terminal table, timeline PNG and a self-contained HTML page.

All three take a :class:`merc.predict.results.Prediction`. Each utterance shows its speaker, its text,
the predicted emotion (coloured), the confidence (probability of that emotion) and, for models
with probability-guided fusion over two or more modalities, the weight of each modality. A
single-modality model's "weight" fuses nothing (it is that modality's classifier confidence), so
the views leave it out; the JSON result keeps it (:mod:`merc.predict.results`).
"""

from __future__ import annotations

import html
import shutil
import textwrap
from pathlib import Path

from merc.predict.results import Prediction

EMOTION_COLOURS = {
    "anger": "#d62728", "ang": "#d62728", "angry": "#d62728",
    "frustration": "#e4572e", "fru": "#e4572e", "frustrated": "#e4572e",
    "disgust": "#6b8e23", "dis": "#6b8e23",
    "fear": "#8c564b", "fea": "#8c564b",
    "sadness": "#1f77b4", "sad": "#1f77b4",
    "joy": "#f2b705", "happiness": "#f2b705", "happy": "#f2b705", "hap": "#f2b705",
    "excited": "#ff9f1c", "exc": "#ff9f1c",
    "surprise": "#9467bd", "sur": "#9467bd",
    "neutral": "#8c8c8c", "neu": "#8c8c8c",
    "boredom": "#7f9c9c", "positive": "#2ca02c", "negative": "#d62728",
}
"""Colour per emotion name; other labels get a palette colour by index."""

_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f", "#bcbd22", "#17becf"]


def emotion_colour(label: str, labels: list[str]) -> str:
    key = label.lower()
    if key in EMOTION_COLOURS:
        return EMOTION_COLOURS[key]
    return _PALETTE[labels.index(label) % len(_PALETTE)] if label in labels else "#7f7f7f"


def shows_weights(pred: Prediction) -> bool:
    """Whether the views show fusion weights: a model with them, over more than one modality."""
    return len(pred.modalities) > 1 and any(u.modality_weights for u in pred.utterances)


def _weights_text(weights: dict[str, float] | None) -> str:
    if not weights:
        return "-"
    return " ".join(f"{m[0].upper()}{w:.2f}" for m, w in weights.items())


def format_table(pred: Prediction, width: int | None = None) -> str:
    """A plain-text table, one row per utterance, fitted to ``width`` (default: the terminal).

    The text column is shortened with ``…`` to fit; the JSON/HTML outputs keep the full text.
    """
    width = width or shutil.get_terminal_size((110, 20)).columns
    has_w = shows_weights(pred)
    spk_w = min(14, max([7] + [len(u.speaker) for u in pred.utterances]))
    emo_w = max([7] + [len(lab) for lab in pred.labels])
    w_w = max(len(_weights_text(u.modality_weights)) for u in pred.utterances) if has_w else 0
    head = f"{'#':>3}  {'speaker':<{spk_w}}  {'emotion':<{emo_w}}  conf  "
    head += f"{'weights':<{w_w}}  " if has_w else ""
    text_w = max(20, width - len(head) - 5)
    lines = [head + "text", "-" * min(width, len(head) + text_w)]
    for i, u in enumerate(pred.utterances):
        text = " ".join(u.text.split())
        if len(text) > text_w:
            text = text[:text_w - 1] + "…"
        row = (f"{i:>3}  {u.speaker[:spk_w]:<{spk_w}}  {u.label:<{emo_w}}  "
               f"{u.confidence:4.2f}  ")
        row += f"{_weights_text(u.modality_weights):<{w_w}}  " if has_w else ""
        lines.append(row + text)
    legend = f"model {pred.model} ({'+'.join(pred.modalities)}); conf = probability of the " \
             "predicted emotion"
    if has_w:
        legend += "; weights = PFM fusion weight per modality (T text, A audio, V video)"
    return "\n".join(lines + [legend])


def render_png(pred: Prediction, path: str | Path, *, wrap: int = 70, dpi: int = 130) -> Path:
    """Draw the conversation as a vertical timeline PNG.

    One row per utterance: the speaker on the left, the full text wrapped to ``wrap`` characters
    in a box coloured by the predicted emotion, and on the right the emotion, a confidence bar
    and the modality weights.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch, Patch

    rows = [textwrap.wrap(" ".join(u.text.split()), wrap) or [""] for u in pred.utterances]
    heights = [0.28 + 0.2 * len(r) for r in rows]                   # inches per utterance
    total = sum(heights) + 1.2
    fig = plt.figure(figsize=(11, total))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, 11)
    ax.set_ylim(total, 0)
    ax.axis("off")
    ax.text(0.2, 0.35, f"Predicted emotions — {pred.model} ({'+'.join(pred.modalities)})",
            fontsize=12, weight="bold", va="center")
    speakers = list(dict.fromkeys(u.speaker for u in pred.utterances))
    ax.text(7.95, 0.62, "emotion, confidence", fontsize=7.5, color="#777777", va="center")
    has_w = shows_weights(pred)
    if has_w:
        ax.text(9.65, 0.62, "fusion weight", fontsize=7.5, color="#777777", va="center")
    y = 0.75
    ax.plot([1.55, 1.55], [y, total - 0.3], color="#cccccc", lw=1.5, zorder=0)
    for u, lines, h in zip(pred.utterances, rows, heights):
        colour = emotion_colour(u.label, pred.labels)
        mid = y + h / 2
        ax.text(1.35, mid, u.speaker, ha="right", va="center", fontsize=9, weight="bold",
                color=_PALETTE[speakers.index(u.speaker) % len(_PALETTE)])
        ax.plot(1.55, mid, "o", color=colour, ms=6)
        box = FancyBboxPatch((1.75, y + 0.06), 6.0, h - 0.12, boxstyle="round,pad=0.02",
                             fc=colour, ec=colour, alpha=0.18, lw=1)
        ax.add_patch(box)
        ax.text(1.85, mid, "\n".join(lines), va="center", fontsize=8.5, linespacing=1.25)
        ax.text(7.95, mid - 0.08, u.label, va="center", fontsize=9, weight="bold", color=colour)
        ax.add_patch(plt.Rectangle((7.95, mid + 0.04), 1.2, 0.08, fc="#eeeeee", ec="none"))
        ax.add_patch(plt.Rectangle((7.95, mid + 0.04), 1.2 * u.confidence, 0.08, fc=colour,
                                   ec="none"))
        ax.text(9.2, mid + 0.08, f"{u.confidence:.0%}", va="center", fontsize=7.5)
        if has_w and u.modality_weights:
            ax.text(9.65, mid, "\n".join(f"{m} {w:.2f}" for m, w in u.modality_weights.items()),
                    va="center", fontsize=7, color="#555555")
        y += h
    used = list(dict.fromkeys(u.label for u in pred.utterances))
    handles = [Patch(color=emotion_colour(lab, pred.labels), label=lab) for lab in used]
    ax.legend(handles=handles, loc="upper right", ncol=min(len(handles), 7), fontsize=8,
              frameon=False, bbox_to_anchor=(0.99, 1 - 0.1 / total))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:60rem;color:#222;background:#fafafa}
h1{font-size:1.3rem}.meta{color:#666;font-size:.85rem;margin-bottom:1.2rem}
.legend span{display:inline-block;margin:0 .6rem .3rem 0;font-size:.8rem}
.legend i{display:inline-block;width:.8rem;height:.8rem;border-radius:50%;margin-right:.25rem;
vertical-align:-.1rem}
.timeline{border-left:3px solid #ddd;margin-left:7.5rem;padding-left:1rem}
.utt{position:relative;margin:.55rem 0;padding:.5rem .75rem;border-radius:.5rem;
background:#fff;border:1px solid #e3e3e3;border-left:6px solid var(--c)}
.utt:before{content:"";position:absolute;left:-1.55rem;top:.9rem;width:.7rem;height:.7rem;
border-radius:50%;background:var(--c)}
.spk{position:absolute;left:-9rem;width:7rem;text-align:right;top:.55rem;font-weight:600;
font-size:.85rem;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.text{font-size:.95rem;line-height:1.35}
.info{margin-top:.35rem;font-size:.78rem;color:#555;display:flex;gap:1rem;flex-wrap:wrap;
align-items:center}
.emo{font-weight:700;color:var(--c)}
.bar{display:inline-block;width:5rem;height:.45rem;background:#eee;border-radius:.2rem;
vertical-align:middle;margin-right:.3rem}
.bar b{display:block;height:100%;border-radius:.2rem;background:var(--c)}
.w b{background:#888}
details{font-size:.75rem;color:#666}
"""


def render_html(pred: Prediction, path: str | Path, title: str = "merc prediction") -> Path:
    """Write a self-contained HTML timeline (inline CSS, no scripts, no external files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(timeline_html(pred, title), encoding="utf-8")
    return path


def timeline_html(pred: Prediction, title: str = "merc prediction") -> str:
    """The HTML page of :func:`render_html` as a string (every value escaped)."""
    esc = html.escape
    used = list(dict.fromkeys(u.label for u in pred.utterances))
    legend = "".join(f'<span><i style="background:{emotion_colour(lab, pred.labels)}"></i>'
                     f"{esc(lab)}</span>" for lab in used)
    items = []
    has_w = shows_weights(pred)
    for u in pred.utterances:
        colour = emotion_colour(u.label, pred.labels)
        weights = ""
        if has_w and u.modality_weights:
            weights = "".join(
                f'<span class="w">{esc(m)} <span class="bar"><b style="width:{100 * w:.0f}%">'
                f"</b></span>{w:.2f}</span>" for m, w in u.modality_weights.items())
        probs = ", ".join(f"{esc(k)} {v:.2f}" for k, v in
                          sorted(u.probs.items(), key=lambda kv: -kv[1]))
        items.append(
            f'<div class="utt" style="--c:{colour}" id="u-{esc(u.id)}">'
            f'<div class="spk" title="{esc(u.speaker)}">{esc(u.speaker)}</div>'
            f'<div class="text">{esc(u.text)}</div>'
            f'<div class="info"><span class="emo">{esc(u.label)}</span>'
            f'<span><span class="bar"><b style="width:{100 * u.confidence:.0f}%"></b></span>'
            f"{u.confidence:.0%} confidence</span>{weights}"
            f"<details><summary>all probabilities</summary>{probs}</details></div></div>")
    weights_note = (" Bars next to a modality show its probability-guided fusion weight."
                    if has_w else "")
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{esc(title)}</h1><div class=\"meta\">Model <b>{esc(pred.model)}</b> "
            f"({esc('+'.join(pred.modalities))}) from {esc(Path(pred.checkpoint).name)}; "
            f"{len(pred.utterances)} utterances. Colour = predicted emotion; confidence = its "
            f"probability.{weights_note}</div><div class=\"legend\">{legend}</div>"
            f'<div class="timeline">{"".join(items)}</div></body></html>\n')
    return page
