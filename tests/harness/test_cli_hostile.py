"""A table of careless and hostile command lines: each one gets a clear message and an
exit code, never a Python traceback, and nothing is written outside the runs folder."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main

TESTS = Path(__file__).resolve().parent.parent
FAKES = f"{TESTS / 'executor_fakes.py'}:build"


@pytest.fixture
def place(tmp_path, monkeypatch):
    """A scratch folder with hostile files in it, as the working directory."""
    (tmp_path / "latin1.yaml").write_bytes(b"\xff\xfe train: 3")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "broken.yaml").write_text("train: {epochs: [\n")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    np.save(tmp_path / "strings.npy", np.array(["a", "b"]))
    (tmp_path / "pickled.npy").write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr': '|O', "
                                           b"'fortran_order': False, 'shape': (1,), }"
                                           + b" " * 60 + b"\n" + b"\x80\x04N.")
    runs = tmp_path / "runs"
    bad = runs / "20260101-000000-bad1"
    bad.mkdir(parents=True)
    (bad / "record.json").write_text("{not json")
    partial = runs / "20260101-000000-bad2"
    partial.mkdir()
    (partial / "record.json").write_text(json.dumps({"run_id": "20260101-000000-bad2"}))
    odd = runs / "20260101-000000-bad3"
    odd.mkdir()
    (odd / "record.json").write_text(json.dumps({"run_id": "x", "backend": "local",
                                                  "steps": [{"oops": 1}]}))
    monkeypatch.chdir(tmp_path)
    sys.path.insert(0, str(TESTS))
    yield tmp_path
    sys.path.remove(str(TESTS))


HOSTILE = [
    # (argv, exit code, words the message must contain)
    (["run", "--set", "train={"], 2, "not valid YAML"),
    (["run", "--set", "noequals"], 2, "section.field=value"),
    (["run", "--set", "=3"], 2, "section.field=value"),
    (["run", "--set", "evaluate..threshold=1"], 2, "section.field"),
    (["run", "--set", "evaluate.threshold=abc"], 2, "evaluate.threshold"),
    (["run", "--set", "data=3", "--set", "data.source=x"], 2, "not a section"),
    (["run", "--config", "latin1.yaml"], 2, "not UTF-8"),
    (["run", "--config", "list.yaml", "--set", "train.job_name=x"], 2, "mapping of sections"),
    (["run", "--config", "broken.yaml"], 2, "not valid YAML"),
    (["run", "--config", "missing.yaml"], 2, "cannot read"),
    (["run", "--config", "."], 2, "cannot read"),
    (["run", "--set", "train.job_name=../../../escape"], 2, "train.job_name"),
    (["run", "--set", "etl.job_name=../x"], 2, "etl.job_name"),
    (["run", "--set", "deploy.model_name=" + "m" * 80], 2, "model_name"),
    (["run", "--set", "train.hyperparameters.epochs=-1"], 2, "--epochs"),
    (["run", "--set", "train.hyperparameters.batch_size=many"], 2, "--batch_size"),
    (["run", "--set", "train.instance_count=0"], 2, "instance_count"),
    (["run", "--set", "deploy.port=70000"], 2, "deploy.port"),
    (["run", "--backend", "mars"], 2, "backend"),
    (["run", "--pipeline", "nowhere.py:build"], 2, "nowhere.py"),
    (["run", "--pipeline", "harness.no_such_module:build"], 2, "no_such_module"),
    (["run", "--pipeline", "not-a-pipeline"], 2, "package.module:attr"),
    (["run", "--from", "train"], 1, "--resume"),
    (["run", "--resume", "20990101-000000-none"], 1, "no run with id"),
    (["run", "--resume", "../../etc"], 1, "not a run id"),
    (["run", "--pipeline", FAKES, "--runs-dir", "/proc/no/such"], 1, "cannot create"),
    (["show", "../../etc/passwd"], 1, "not a run id"),
    (["show", "/etc"], 1, "not a run id"),
    (["show", "20990101-000000-none"], 1, "no run with id"),
    (["show", "20260101-000000-bad1"], 1, "not valid JSON"),
    (["show", "20260101-000000-bad2"], 1, "backend"),
    (["show", "20260101-000000-bad3"], 1, "steps"),
    (["graph", "--svg", "/proc/no/such/graph.svg"], 1, "graph.svg"),
    (["predict", "corrupt.png", "--url", "http://127.0.0.1:9"], 1, "corrupt.png"),
    (["predict", "strings.npy", "--url", "http://127.0.0.1:9"], 1, "strings.npy"),
    (["predict", "pickled.npy", "--url", "http://127.0.0.1:9"], 1, "pickled.npy"),
    (["predict", "missing.idx", "--url", "http://127.0.0.1:9"], 1, "missing.idx"),
    (["serve", "20990101-000000-none"], 1, "20990101-000000-none"),
    (["serve", "no/such/model.tar.gz"], 1, "model.tar.gz"),
    (["serve", "20260101-000000-bad1"], 1, "deployed no model"),
    (["monitor", "20990101-000000-none"], 1, "no run and no endpoint named"),
    (["monitor", "../../etc"], 1, "no run and no endpoint named"),
    (["monitor", "20260101-000000-bad1"], 1, "created no endpoint config"),
    (["monitor", "20260101-000000-bad1", "--last", "-5"], 2, "--last"),
    (["monitor", "20260101-000000-bad1", "--last", "5", "--since", "x"], 2, "--last"),
]


@pytest.mark.parametrize("argv, code, words", HOSTILE, ids=[" ".join(h[0])[:60] for h in HOSTILE])
def test_a_mistake_gets_a_message_and_an_exit_code_not_a_traceback(place, capsys, argv, code,
                                                                  words):
    before = {p for p in place.parent.iterdir()}
    runs_before = sorted(p.name for p in (place / "runs").iterdir())
    if "--runs-dir" not in argv:  # never the project's own runs folder
        argv = [*argv, "--runs-dir", str(place / "runs")]
    assert main(argv) == code
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text and "Internal error" not in text, text
    assert words in text, text
    assert {p for p in place.parent.iterdir()} == before  # nothing written next to it
    # checked before the first step: no run was started
    assert sorted(p.name for p in (place / "runs").iterdir()) == runs_before
    assert not (place / "runs" / "harness-errors.log").exists()


def test_runs_lists_the_readable_runs_and_names_the_unreadable_ones(place, capsys):
    assert main(["runs", "--runs-dir", str(place / "runs")]) == 0
    text = capsys.readouterr().out
    assert "Traceback" not in text
    for bad in ("bad1", "bad2", "bad3"):
        assert f"20260101-000000-{bad}" in text
    assert text.count("UNREADABLE") == 3


def test_an_internal_error_says_so_and_logs_its_traceback_to_a_file(place, capsys,
                                                                    monkeypatch):
    import harness.cli as cli

    def broken(args, console):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "cmd_runs", broken)
    parser = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda: _with(parser(), "runs", broken))
    assert main(["runs", "--runs-dir", str(place / "runs")]) == 70
    text = capsys.readouterr().out
    assert "Traceback" not in text and "ZeroDivisionError: a bug" in text
    log = place / "runs" / "harness-errors.log"
    assert log.exists() and "Traceback" in log.read_text()
    assert str(log) in text.replace("\n", "")


def _with(parser, command, func):
    for action in parser._subparsers._group_actions:
        action.choices[command].set_defaults(func=func)
    return parser


@pytest.mark.parametrize("flags, field", [(["--port", "70000"], "port"),
                                          (["--poll-seconds", "-1"], "version_poll_seconds"),
                                          (["--capture-percent", "101"], "capture_percent")])
def test_serve_refuses_options_that_would_misbehave(place, capsys, model_dir, flags, field):
    assert main(["serve", str(model_dir), *flags, "--runs-dir", str(place / "runs")]) == 2
    text = capsys.readouterr().out
    assert "Traceback" not in text and field in text, text
