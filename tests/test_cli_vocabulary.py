"""One vocabulary on the command line (issue R): --model NAME is a registered model,
--checkpoint a trained one, --text-encoder the text encoder, --data-dir the data folder.

The old spellings (predict/serve/bench predict/bench serve --model, evaluate --encoder, bench
accuracy --features, bench accuracy/efficiency --data) keep working, each after exactly one
warning line; `merc --help` lists every command with its main flags."""

from __future__ import annotations

import json
import shutil

import pytest

from merc.cli import COMMANDS, _parser, main
from merc.cli.args import DeprecatedAlias, synopsis
from merc.pretrained import bundled_checkpoint, example_conversation

MODEL_WARNING = ("warning: --model is deprecated here; use --checkpoint (it names a trained "
                 "model; --model names a registered model in merc train)")


def warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if "is deprecated" in line]


# ------------------------------------------------------------------------ the help table

def help_text(capsys, argv=("--help",)) -> str:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    assert info.value.code == 0
    return capsys.readouterr().out


def test_help_table_lists_every_command_with_its_main_flags(capsys):
    from merc.cli import bench

    text = help_text(capsys)
    table = text[text.index("commands and their main flags"):text.index("vocabulary:")]
    line = {}
    for row in table.splitlines()[1:]:
        words = row.split()
        line[" ".join(words[:2]) if words[0] == "bench" else words[0]] = row
    commands = _parser()._subparsers._group_actions[0].choices
    benches = bench.subparsers(commands["bench"])
    assert set(commands) == set(COMMANDS)
    assert set(line) == (set(commands) - {"bench"}) | {f"bench {b}" for b in benches}
    assert "--checkpoint CKPT|RUN_DIR" in line["predict"] and "--model" not in line["predict"]
    assert "--checkpoint" in line["serve"] and "--model" not in line["serve"]
    assert "(--checkpoint CKPT | --text-encoder ENC_DIR)" in line["evaluate"]
    assert "--model NAME" in line["train"] and "--text-encoder ENC" in line["train"]
    assert "--text-encoder" in line["bench accuracy"] and "--data-dir" in line["bench accuracy"]
    assert "--features" not in table and "--encoder" not in table   # no old spelling
    # The deprecated spellings stay in each command's own --help, marked as such.
    assert "deprecated spelling of --checkpoint" in help_text(capsys, ["predict", "--help"])


def test_help_table_is_rendered_from_the_parsers():
    sp = _parser()._subparsers._group_actions[0].choices["predict"]
    assert synopsis(sp, ("inputs", "--checkpoint", "--quiet")) == \
        "[INPUT ...] [--checkpoint CKPT|RUN_DIR|NAME] [--quiet]"
    with pytest.raises(KeyError, match="--nope"):
        synopsis(sp, ("--nope",))                    # a renamed flag breaks the table loudly
    with pytest.raises(KeyError, match="--model"):
        synopsis(sp, ("--model",))                   # and a deprecated one cannot be listed


# ------------------------------------------------------- deprecated aliases: work, warn once

def test_alias_warns_once_per_invocation_even_when_repeated(capsys):
    args = _parser().parse_args(["predict", "a.jsonl", "--model", "x", "--model", "y"])
    assert args.checkpoint == "y"
    assert warnings(capsys.readouterr().err) == [f"merc predict: {MODEL_WARNING}"]
    args = _parser().parse_args(["predict", "a.jsonl", "--checkpoint", "z"])
    assert args.checkpoint == "z" and capsys.readouterr().err == ""
    assert _parser().parse_args(["predict", "a.jsonl"]).checkpoint is None


@pytest.mark.parametrize("argv, dest, value, old, new", [
    (["serve", "--model", "runs/x", "--port", "8001"], "checkpoint", "runs/x", "--model",
     "--checkpoint"),
    (["bench", "predict", "--model", "m.ckpt"], "checkpoint", "m.ckpt", "--model",
     "--checkpoint"),
    (["bench", "serve", "--model", "m.ckpt"], "checkpoint", "m.ckpt", "--model", "--checkpoint"),
    (["evaluate", "--encoder", "ENC"], "encoder", "ENC", "--encoder", "--text-encoder"),
    (["bench", "accuracy", "--features", "frozen"], "features", "frozen", "--features",
     "--text-encoder"),
    (["bench", "accuracy", "--data", "D"], "data_dir", "D", "--data", "--data-dir"),
    (["bench", "efficiency", "--data", "D"], "data_dir", "D", "--data", "--data-dir"),
])
def test_every_old_spelling_parses_into_the_new_dest_with_one_warning(capsys, argv, dest, value,
                                                                      old, new):
    args = _parser().parse_args(argv)
    assert getattr(args, dest) == value
    (line,) = warnings(capsys.readouterr().err)
    assert line.startswith(f"merc {' '.join(a for a in argv[:2] if not a.startswith('-'))}: "
                           f"warning: {old} is deprecated")
    assert f"use {new}" in line
    new_argv = [new if a == old else a for a in argv]
    assert getattr(_parser().parse_args(new_argv), dest) == value
    assert capsys.readouterr().err == ""


def test_aliases_are_one_action_class():
    """The warning lives in one place: every old spelling is a DeprecatedAlias."""
    found = set()
    parsers = [_parser()]
    while parsers:
        p = parsers.pop()
        for a in p._actions:
            if isinstance(a, DeprecatedAlias):
                found.add((p.prog, *a.option_strings))
            if a.choices and isinstance(a.choices, dict):
                parsers += a.choices.values()
    assert found == {("merc predict", "--model"), ("merc serve", "--model"),
                     ("merc evaluate", "--encoder"), ("merc bench accuracy", "--data"),
                     ("merc bench accuracy", "--features"), ("merc bench efficiency", "--data"),
                     ("merc bench predict", "--model"), ("merc bench serve", "--model")}


# ------------------------------------------------- old README command lines still run

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """``runs/x/seed_0/best.ckpt``: the bundled model where `merc train` would put one."""
    seed = tmp_path_factory.mktemp("runs") / "x" / "seed_0"
    seed.mkdir(parents=True)
    shutil.copy(bundled_checkpoint(), seed / "best.ckpt")
    encoder = bundled_checkpoint().with_name("encoder")   # its text encoder, beside it
    if encoder.is_dir():
        (seed / encoder.name).symlink_to(encoder, target_is_directory=True)
    return seed.parent


def test_predict_checkpoint_and_the_old_model_flag_give_the_same_result(run_dir, tmp_path,
                                                                        capsys):
    ckpt = run_dir / "seed_0" / "best.ckpt"
    new, old = tmp_path / "new.json", tmp_path / "old.json"
    assert main(["predict", str(example_conversation()), "--checkpoint", str(ckpt), "--out",
                 str(new), "--quiet"]) == 0
    assert warnings(capsys.readouterr().err) == []
    # The README's `merc predict talk.jsonl --model runs/x/seed_0/best.ckpt`.
    assert main(["predict", str(example_conversation()), "--model", str(ckpt), "--out",
                 str(old), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert warnings(err) == [f"merc predict: {MODEL_WARNING}"]
    a, b = json.loads(new.read_text()), json.loads(old.read_text())
    assert a == b and a["checkpoint"] == str(ckpt)


def test_serve_reads_the_checkpoint_from_either_spelling(monkeypatch, capsys):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    import merc.predict.serve

    calls = []
    monkeypatch.setattr(merc.predict.serve, "serve",
                        lambda checkpoint, **kw: calls.append((checkpoint, kw)))
    assert main(["serve", "--model", "runs/x", "--port", "8001"]) == 0
    assert main(["serve", "--checkpoint", "runs/y"]) == 0
    assert calls == [("runs/x", {"host": "127.0.0.1", "port": 8001, "device": "cpu"}),
                     ("runs/y", {"host": "127.0.0.1", "port": 8000, "device": "cpu"})]
    assert warnings(capsys.readouterr().err) == [f"merc serve: {MODEL_WARNING}"]


def test_bench_predict_and_serve_read_the_checkpoint(monkeypatch, capsys):
    import merc.bench.predict_speed as predict_speed
    import merc.bench.serve_load as serve_load

    seen = []
    monkeypatch.setattr(predict_speed, "run_predict_bench",
                        lambda out, **kw: seen.append(("predict", kw["checkpoint"])))
    monkeypatch.setattr(predict_speed, "run_throughput_bench",
                        lambda out, **kw: seen.append(("throughput", kw["checkpoint"])))
    monkeypatch.setattr(serve_load, "run_serve_bench",
                        lambda out, **kw: seen.append(("serve", kw["checkpoint"])))
    assert main(["bench", "predict", "--model", "a.ckpt"]) == 0
    assert main(["bench", "predict", "--checkpoint", "b.ckpt", "--conversations", "3"]) == 0
    assert main(["bench", "serve", "--model", "c.ckpt"]) == 0
    assert seen == [("predict", "a.ckpt"), ("throughput", "b.ckpt"), ("serve", "c.ckpt")]
    assert len(warnings(capsys.readouterr().err)) == 2       # one per invocation with --model


def test_predict_ray_reads_the_checkpoint(monkeypatch, tmp_path, capsys):
    import merc.predict.ray as ray

    talk = tmp_path / "talk.jsonl"
    talk.write_text(json.dumps({"speaker": "A", "text": "hi"}) + "\n")
    seen = {}

    def fake(files, out_dir, **kw):
        seen.update(kw)
        return {"conversations": 1, "errors": 0, "out_dir": str(out_dir)}

    monkeypatch.setattr(ray, "predict_with_ray", fake)
    assert main(["predict", str(talk), "--backend", "ray", "--out-dir", str(tmp_path / "o"),
                 "--model", "m.ckpt", "--quiet"]) == 0
    assert seen["checkpoint"] == "m.ckpt"
    assert len(warnings(capsys.readouterr().err)) == 1


def test_evaluate_old_encoder_flag_still_runs(monkeypatch, capsys):
    import merc.finetune.run as run

    metrics = {"data": {"matches_training": True, "corpus": "toy", "dialogues": 1,
                        "utterances": 2, "fingerprint": "f"},
               "wf1": 50.0, "acc": 50.0, "macro_f1": 40.0, "n": 2,
               "per_class_f1": {"a": 50.0}, "support": {"a": 2}}
    calls = []
    monkeypatch.setattr(run, "evaluate_joint",
                        lambda enc, split, data_dir: calls.append((enc, split)) or metrics)
    assert main(["evaluate", "--encoder", "ENC"]) == 0           # the README's spelling
    assert main(["evaluate", "--text-encoder", "ENC", "--split", "valid"]) == 0
    assert calls == [("ENC", "test"), ("ENC", "valid")]
    captured = capsys.readouterr()
    assert "test: W-F1 50.00" in captured.out
    assert warnings(captured.err) == ["merc evaluate: warning: --encoder is deprecated; use "
                                      "--text-encoder"]
    # Both spellings name the same option: giving both is refused like any two of the group.
    with pytest.raises(SystemExit):
        main(["evaluate", "--checkpoint", "c", "--text-encoder", "ENC"])



def test_bench_accuracy_old_data_and_features_flags_still_run(toy_bench, capsys):
    """The README's `merc bench accuracy --data DIR --features frozen --dry-run`."""
    old = ["bench", "accuracy", "--data", str(toy_bench), "--features", "frozen", "--models",
           "mlp", "--tables", "main", "--dry-run"]
    assert main(old) == 0
    captured = capsys.readouterr()
    assert warnings(captured.err) == [
        "merc bench accuracy: warning: --data is deprecated; use --data-dir",
        "merc bench accuracy: warning: --features is deprecated; use --text-encoder"]
    new = ["bench", "accuracy", "--data-dir", str(toy_bench), "--text-encoder", "frozen",
           "--models", "mlp", "--tables", "main", "--dry-run"]
    assert main(new) == 0
    again = capsys.readouterr()
    assert again.out == captured.out and warnings(again.err) == []
    assert "toy mlp full (text+audio)  [main]" in again.out
