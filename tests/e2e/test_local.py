"""The whole pipeline on the `local` backend, as a user runs it, on the bundled sample.

Also: bad input and bad configuration through the CLI give a one-paragraph error naming
the file, a non-zero exit, and leave earlier runs untouched.
"""
import gzip
import json
import shutil
import socket
import subprocess
import sys
import tarfile
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "fixtures" / "mnist-sample"
# the session's default run is built once, on the pytest-xdist worker of this group
pytestmark = pytest.mark.xdist_group("default_run")


def harness(*args, cwd=ROOT, timeout=300):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def local(uri: str) -> Path:
    return Path(urlparse(uri).path)


@pytest.fixture(scope="module")
def good_run(default_run):
    """The session's default run (tests/e2e/conftest.py)."""
    return default_run


STEPS = ["prepare", "etl", "train", "evaluate", "gate", "model", "endpoint-config",
         "endpoint", "infer"]


@pytest.mark.slow
def test_local_run_end_to_end(good_run):
    runs, run_id, proc = good_run
    run_dir = runs / run_id
    out = proc.stdout
    assert "DATA SOURCE" in out and "bundled" in out.lower()
    assert run_id in out and "metrics.accuracy" in out and "http://127.0.0.1:" in out

    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "SUCCEEDED" and record["workflow"] == "mnist"
    assert [s["name"] for s in record["steps"]] == STEPS
    assert [s["status"] for s in record["steps"]] == ["SUCCEEDED"] * len(STEPS)

    summary = json.loads((run_dir / "summary.json").read_text())
    facts = {s["name"]: s["facts"] for s in summary["steps"]}
    accuracy = summary["metrics"]["metrics.accuracy"]
    assert accuracy >= 0.95
    assert summary["metrics"]["endpoint accuracy"] == accuracy
    assert facts["prepare"]["examples"] == "train 4000, validation 500, test 500"

    # the model artifact is what SageMaker would produce and TF Serving would load
    with tarfile.open(local(facts["train"]["model"])) as tar:
        names = tar.getnames()
    assert any(n.endswith("saved_model.pb") and n.split("/")[-2].isdigit() for n in names)
    # the evaluation processing job wrote evaluation.json where the gate read it
    evaluation_dir = local(facts["evaluate"]["evaluation"])
    evaluation = json.loads((evaluation_dir / "evaluation.json").read_text())
    matrix = evaluation["confusion_matrix"]
    assert sum(map(sum, matrix)) == 500
    assert sum(matrix[i][i] for i in range(10)) / 500 == pytest.approx(accuracy)
    assert (evaluation_dir / "confusion_matrix.png").exists()
    gate_input = json.loads((run_dir / "steps/gate/input.json").read_text())
    assert local(gate_input["Uri"]) == evaluation_dir / "evaluation.json"

    # the training request's metric regexes found the script's metric lines
    assert {"train:loss", "validation:accuracy", "test:accuracy"} <= set(facts["train"])
    assert (run_dir / "graph.mmd").exists()

    # the endpoint was stopped at the end of the run: its port no longer answers
    port = urlparse(summary["endpoint_url"]).port
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
def test_runs_and_show_list_the_run(good_run):
    runs, run_id, _ = good_run
    listed = harness("runs", "--runs-dir", str(runs))
    assert listed.returncode == 0 and run_id in listed.stdout and "SUCCEEDED" in listed.stdout
    shown = harness("show", run_id, "--runs-dir", str(runs), "--step", "train")
    assert shown.returncode == 0 and "TrainingJobName" in shown.stdout


def _bad_copy(tmp_path, mutate) -> Path:
    data = tmp_path / "data"
    shutil.copytree(SAMPLE, data)
    mutate(data)
    return data


def _truncate(data):
    p = data / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(p.read_bytes())
    p.write_bytes(gzip.compress(raw[: len(raw) // 2]))


def _wrong_magic(data):
    p = data / "train-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(p.read_bytes()))
    raw[2] = 0x42
    p.write_bytes(gzip.compress(bytes(raw)))


def _label_out_of_range(data):
    p = data / "train-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(p.read_bytes()))
    raw[8 + 17] = 200
    p.write_bytes(gzip.compress(bytes(raw)))


@pytest.mark.parametrize("mutate,file_name,words", [
    (_truncate, "train-images-idx3-ubyte.gz", "truncated"),
    (_wrong_magic, "train-labels-idx1-ubyte.gz", "magic"),
    (_label_out_of_range, "train-labels-idx1-ubyte.gz", "label"),
])
def test_bad_data_fails_clearly_and_keeps_earlier_runs(tmp_path, mutate, file_name, words):
    runs = tmp_path / "runs"
    earlier = runs / "20260101-000000-0000"
    earlier.mkdir(parents=True)
    (earlier / "record.json").write_text('{"keep": true}')
    data = _bad_copy(tmp_path, mutate)
    proc = harness("run", "--data", str(data), "--runs-dir", str(runs))
    assert proc.returncode == 1
    text = " ".join(proc.stdout.split())
    assert file_name in text and words in text.lower()
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "--resume" in text and "--from prepare" in text
    assert (earlier / "record.json").read_text() == '{"keep": true}'
    (new,) = [p for p in runs.iterdir() if p != earlier and p.name != ".cache"]
    record = json.loads((new / "record.json").read_text())
    assert record["status"] == "FAILED" and record["failed_step"] == "prepare"
    assert not (new / "data" / "raw").exists()


def test_bad_config_value_exits_2_naming_the_field(tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("deploy:\n  port: 99999\n")
    proc = harness("run", "--config", str(cfg), "--runs-dir", str(tmp_path / "runs"))
    assert proc.returncode == 2
    text = " ".join(proc.stdout.split())
    assert str(cfg) in text and "deploy.port" in text and "65535" in text
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_resume_with_impossible_gate_deploys_nothing_and_keeps_the_earlier_run(good_run):
    runs, run_id, _ = good_run
    before = {p: p.stat().st_mtime_ns for p in (runs / run_id).rglob("*")}
    proc = harness("run", "--runs-dir", str(runs), "--resume", run_id, "--from", "evaluate",
                   "--set", "evaluate.metric=macro_recall", "--set", "evaluate.threshold=1.0")
    assert proc.returncode == 1
    text = " ".join(proc.stdout.split())
    assert "metrics.macro_recall = 0.9" in text and "does not meet the gate" in text
    assert "(required >= 1.0)" in text and "--from train" in text
    (new,) = [p for p in runs.iterdir() if p.name not in (run_id, ".cache")]
    record = json.loads((new / "record.json").read_text())
    assert record["resumed_from"] == run_id and record["failed_step"] == "gate"
    assert [s["status"] for s in record["steps"]] == \
        ["REUSED"] * 3 + ["SUCCEEDED", "FAILED"] + ["PENDING"] * 4
    assert not (new / "steps" / "model").exists()
    # the reused steps' data is in the new run (linked), the earlier run is untouched
    assert (new / "data" / "processed" / "test").is_dir()
    assert (new / "evaluation" / "evaluation.json").exists()
    assert {p: p.stat().st_mtime_ns for p in (runs / run_id).rglob("*")} == before


def test_local_path_never_imports_boto3():
    code = ("import sys, harness.cli, harness.executor\n"
            "from harness.backends import backend_for, load\n"
            "from harness.config import load_config\n"
            "from harness.workflow import load_workflow\n"
            "cfg = load_config()\n"
            "wf = load_workflow(cfg.pipeline, cfg)\n"
            "backend_for('local')\n"
            "[load(s.local_runner) for s in wf.steps]\n"
            "wf.definition()\n"
            "print('boto3' in sys.modules, 'botocore' in sys.modules, 'moto' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "False"]


def _serve(runs: Path, run_id: str) -> tuple[subprocess.Popen, str]:
    """``harness serve RUN`` on a free port; its URL from the line it prints."""
    import re

    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "serve", run_id,
                             "--runs-dir", str(runs), "--port", "0"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        found = re.search(r"at (http://127\.0\.0\.1:\d+)", line)
        if found:
            return proc, found.group(1)
    raise AssertionError(f"harness serve ended: {proc.wait()}")


@pytest.mark.slow
def test_monitor_sees_no_drift_in_the_runs_traffic_and_drift_in_inverted_digits(good_run):
    import datetime as dt
    import signal
    import urllib.request

    from harness.idx import read_idx

    runs, run_id, _ = good_run
    run_dir = runs / run_id
    # the run's own traffic (the infer step sent the test split): nothing drifted
    clean = harness("monitor", run_id, "--runs-dir", str(runs))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "drift: none detected" in clean.stdout and "500 images" in clean.stdout
    (first,) = (run_dir / "monitoring").iterdir()
    assert json.loads((first / "constraint_violations.json").read_text()) == {"violations": []}
    used = json.loads((first / "baseline" / "constraints.json").read_text())
    assert used["monitoring_config"]["distribution_constraints"]["significance_level"] == 0.05

    # the run's model served again: its traffic is captured where its endpoint's was
    since = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    server, url = _serve(runs, run_id)
    try:
        digits = read_idx(SAMPLE / "train-images-idx3-ubyte.gz")[:300].reshape(300, -1)
        inverted = 1.0 - digits.astype("float32") / 255.0
        for batch in (inverted[:150], inverted[150:]):
            body = json.dumps({"instances": batch.round(4).tolist()}).encode()
            request = urllib.request.Request(f"{url}/v1/models/mnist:predict", data=body,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=60) as response:
                assert len(json.load(response)["predictions"]) == 150
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    drifted = harness("monitor", run_id, "--runs-dir", str(runs), "--since", since)
    assert drifted.returncode == 0, drifted.stdout + drifted.stderr
    assert "300 images" in drifted.stdout and "drifted features" in drifted.stdout
    latest = max((run_dir / "monitoring").iterdir())
    violations = json.loads((latest / "constraint_violations.json").read_text())["violations"]
    names = {v["feature_name"] for v in violations}
    assert {"mean_intensity", "ink_mass"} <= names, names
    assert all(v["constraint_check_type"] == "baseline_drift_check" for v in violations)
    assert (latest / "drift.png").stat().st_size > 10_000


@pytest.mark.slow
def test_a_rerun_reuses_what_did_not_change_and_an_edited_glue_script_reruns_the_etl(
        good_run, tmp_path):
    """The step cache on the real pipeline (after the other tests of this run folder):
    nothing changed -> prepare, ETL, training and evaluation reused, the endpoint served
    again with the same accuracy; one byte more in the Glue script -> the ETL runs again,
    and what it writes being the same, training stays reused."""
    runs, run_id, first = good_run

    def newest() -> str:
        return max(p.name for p in runs.iterdir() if not p.name.startswith("."))

    def statuses(rid: str) -> dict[str, str]:
        record = json.loads((runs / rid / "record.json").read_text())
        return {s["name"]: s["status"] for s in record["steps"]}

    def accuracy(rid: str) -> float:
        return json.loads((runs / rid / "summary.json").read_text())["metrics"][
            "endpoint accuracy"]

    again = harness("run", "--data", "fixture", "--runs-dir", str(runs))
    assert again.returncode == 0, again.stdout[-3000:]
    rerun = newest()
    done = statuses(rerun)
    assert [done[s] for s in ("prepare", "etl", "train", "evaluate")] == ["REUSED"] * 4
    assert done["endpoint"] == done["infer"] == "SUCCEEDED"
    assert "cached from" in again.stdout
    assert accuracy(rerun) == accuracy(run_id)

    script = tmp_path / "mnist_etl.py"
    script.write_text((ROOT / "glue_etl" / "mnist_etl.py").read_text() + "\n# edited\n")
    edited = harness("run", "--data", "fixture", "--runs-dir", str(runs),
                     "--set", f"etl.script={script}")
    assert edited.returncode == 0, edited.stdout[-3000:]
    done = statuses(newest())
    assert (done["prepare"], done["etl"]) == ("REUSED", "SUCCEEDED"), done
    assert (done["train"], done["evaluate"]) == ("REUSED", "REUSED"), done
