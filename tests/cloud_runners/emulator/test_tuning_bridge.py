"""The tuning bridge: an emulated ``sagemaker:createHyperParameterTuningJob.sync`` runs its
trials for real with the local tuner, on the emulated S3, and leaves each trial's
``model.tar.gz`` where SageMaker puts it.

The trials run a tiny pure-Python training script (no TensorFlow): its validation accuracy
is ``accuracy(learning_rate)`` below, which peaks at a learning rate of 0.01, so each trial
takes well under a second and the best trial is known from its hyperparameters."""
from __future__ import annotations

import json
import math
import tarfile
import threading
import time
from pathlib import Path

import psutil
import pytest
from emulator_support import failures, run_to_end

from cloud_runners import aws
from cloud_runners.emulator import tuning_bridge
from cloud_runners.emulator.server import EmbeddedEmulator
from cloud_runners.emulator.tuning_bridge import TuningBridge
from harness.archives import pack_source_dir
from harness.config import load_config
from harness.placeholders import resolve, run_path
from harness.steps.training import TrainingStep
from harness.steps.tuning import ContinuousParameter, TuningStep
from harness.workflow import Workflow

pytestmark = [pytest.mark.filterwarnings("ignore:Tried to parse AWS.{2}S3.{2}BucketPolicy")]

BUCKET = "emu-bucket"
BASE = f"s3://{BUCKET}/mlharness/runs/r1"
ROLE = "arn:aws:iam::123456789012:role/mlharness-sagemaker"
METRIC = {"Name": "validation:accuracy", "Regex": r"val_accuracy=([0-9.eE+-]+)"}

SCRIPT = """\
import argparse, json, math, os, time
from pathlib import Path

p = argparse.ArgumentParser()
p.add_argument("--learning_rate", type=float, required=True)
p.add_argument("--epochs", type=int, default=2)
p.add_argument("--seconds_per_epoch", type=float, default=0.0)
p.add_argument("--crash", default="no")
p.add_argument("--model_dir")
p.add_argument("--_tuning_objective_metric", required=True)
args = p.parse_args()
assert any(Path(os.environ["SM_CHANNEL_TRAIN"]).iterdir()), "the train channel is empty"
for epoch in range(1, args.epochs + 1):
    if args.crash == "yes":
        raise RuntimeError(f"diverged at learning rate {args.learning_rate}")
    value = (0.95 - 0.1 * (math.log10(args.learning_rate) + 2) ** 2) * (1 - 0.5 ** epoch)
    print(f"epoch={epoch}/{args.epochs} val_accuracy={value:.6f}", flush=True)
    time.sleep(args.seconds_per_epoch)
Path(os.environ["SM_MODEL_DIR"], "model.json").write_text(
    json.dumps({"learning_rate": args.learning_rate}))
"""


def accuracy(learning_rate: float, epochs: int = 2) -> float:
    return (0.95 - 0.1 * (math.log10(learning_rate) + 2) ** 2) * (1 - 0.5 ** epochs)


class Images:
    """Image names without a lookup (the bridges do not use them)."""

    def image(self, framework, version, scope, instance_type, py_version=None):
        return f"img/{framework}-{scope}:{version}"


def tiny_tuning(tmp: Path, *, max_jobs: int = 3, parallel: int = 2, train_uri=None,
                **hyperparameters) -> TuningStep:
    """A tuning step over the tiny script (its one channel: ``train_uri``)."""
    src = tmp / "src"
    src.mkdir(exist_ok=True)
    (src / "train.py").write_text(SCRIPT)
    training = TrainingStep(
        "train", job_name="tiny-tune", source_dir=src, entry_point="train.py",
        output_path=run_path("training"),
        inputs={"train": train_uri or run_path("data", "train")},
        hyperparameters={"epochs": 2, **hyperparameters},
        metric_definitions=[METRIC], image_uri="emulated-training:latest")
    return TuningStep("tune", training=training, job_name="tiny-tune",
                      objective_metric=METRIC["Name"],
                      parameter_ranges={"learning_rate": ContinuousParameter(
                          1e-4, 1.0, "Logarithmic")},
                      strategy="Random", max_jobs=max_jobs, max_parallel_jobs=parallel,
                      random_seed=3)


def staged_request(emu, tmp: Path, step: TuningStep, run_id: str = "r1") -> dict:
    """The step's request of run ``run_id`` in BASE, its code package and one file of the
    train channel in the emulated S3."""
    from harness.steps.base import BuildContext

    s3 = emu.client("s3")
    try:
        s3.create_bucket(Bucket=BUCKET)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    (code,) = step.code()
    archive = pack_source_dir(code.source, tmp / "sourcedir.tar.gz")
    aws.upload_file(s3, archive, f"{BASE}/code/{code.target}")
    (tmp / "train.csv").write_text("1,2\n")
    aws.upload_file(s3, tmp / "train.csv", f"{BASE}/data/train/train.csv")
    ctx = BuildContext("emulator", Images(), role=ROLE)
    return resolve(step.request(ctx), {"RunId": run_id, "BaseUri": BASE, "CodeUri": f"{BASE}/code"}, "tune")


def definition(request: dict) -> dict:
    return {"StartAt": "Tune", "States": {"Tune": {
        "Type": "Task",
        "Resource": "arn:aws:states:::sagemaker:createHyperParameterTuningJob.sync",
        "Parameters": request, "ResultSelector": {
            "HyperParameterTuningJobName.$": "$.HyperParameterTuningJobName",
            "HyperParameterTuningJobStatus.$": "$.HyperParameterTuningJobStatus",
            "BestTrainingJob.$": "$.BestTrainingJob",
            "TrainingJobStatusCounters.$": "$.TrainingJobStatusCounters"},
        "ResultPath": "$.Tune", "End": True}}}


def watch(emu, name: str, timeout_s: float = 120, live: list | None = None) -> list[str]:
    """The tuning job's statuses as a poller sees them, from a thread until it ends;
    ``live`` gets (completed trials counted, trials listed) while it is InProgress."""
    sm = emu.client("sagemaker")
    seen: list[str] = []

    def poll() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                job = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
                status = job["HyperParameterTuningJobStatus"]
                if live is not None and status == "InProgress":
                    listed = sm.list_training_jobs_for_hyper_parameter_tuning_job(
                        HyperParameterTuningJobName=name)["TrainingJobSummaries"]
                    live.append((job["TrainingJobStatusCounters"]["Completed"], len(listed)))
            except sm.exceptions.ClientError:
                time.sleep(0.02)
                continue
            if not seen or seen[-1] != status:
                seen.append(status)
            if status not in ("InProgress", "Stopping"):
                return
            time.sleep(0.05)

    threading.Thread(target=poll, daemon=True).start()
    return seen


def test_the_tuning_job_runs_its_trials_and_leaves_each_model_in_s3(tmp_path):
    step = tiny_tuning(tmp_path, seconds_per_epoch=0.2)
    cfg = load_config(overrides={"runs_dir": str(tmp_path / "runs")})
    (tmp_path / "work").mkdir()
    with EmbeddedEmulator(bridge=TuningBridge(cfg, workdir=tmp_path / "work")) as emu:
        request = staged_request(emu, tmp_path, step)
        name = request["HyperParameterTuningJobName"]
        assert name == "tiny-tune-r1"
        live: list = []
        statuses = watch(emu, name, live=live)
        described, history = run_to_end(emu, definition(request), timeout_s=120)
        assert described["status"] == "SUCCEEDED", failures(history)
        # InProgress while the trials ran, then the real outcome (not moto's made-up one)
        assert statuses[0] == "InProgress" and statuses[-1] == "Completed", statuses
        # while it ran, finished trials were counted and listed as they ended
        assert (0, 0) in live and any(0 < done < 3 and done == listed
                                      for done, listed in live), live
        out = json.loads(described["output"])["Tune"]
        assert out["HyperParameterTuningJobStatus"] == "Completed"
        assert out["TrainingJobStatusCounters"] == {"Completed": 3, "InProgress": 0,
                                                    "RetryableError": 0,
                                                    "NonRetryableError": 0, "Stopped": 0}

        sm = emu.client("sagemaker")
        trials = sm.list_training_jobs_for_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=name, SortBy="FinalObjectiveMetricValue",
            SortOrder="Descending")["TrainingJobSummaries"]
        assert len(trials) == 3 and {t["TrainingJobStatus"] for t in trials} == {"Completed"}
        assert all(t["TrainingJobName"].startswith(f"{name}-") for t in trials)
        # each trial's objective is what the script reported for its learning rate
        for t in trials:
            lr = float(t["TunedHyperParameters"]["learning_rate"])
            assert t["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == \
                pytest.approx(accuracy(lr), abs=1e-5)
        best = out["BestTrainingJob"]
        assert best["TrainingJobName"] == trials[0]["TrainingJobName"]
        assert best["TrainingJobArn"].endswith(f":training-job/{best['TrainingJobName']}")
        assert best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == max(
            t["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] for t in trials)
        page = sm.list_training_jobs_for_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=name, MaxResults=2)
        assert [t["TrainingJobName"] for t in page["TrainingJobSummaries"]] == sorted(
            t["TrainingJobName"] for t in trials)[:2] and page["NextToken"]

        s3 = emu.client("s3")
        keys = aws.list_keys(s3, f"{BASE}/training")
        for t in trials:
            assert f"mlharness/runs/r1/training/{t['TrainingJobName']}/output/model.tar.gz" \
                in keys, keys
        # the model CreateModel's ModelDataUrl names: <output path>/<best>/output/model.tar.gz
        model_uri = f"{BASE}/training/{best['TrainingJobName']}/output/model.tar.gz"
        with tarfile.open(aws.download_file(s3, model_uri, tmp_path / "m.tar.gz")) as tar:
            model = json.load(tar.extractfile("model.json"))
        assert model["learning_rate"] == float(best["TunedHyperParameters"]["learning_rate"])
        job = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        assert job["BestTrainingJob"]["TrainingJobName"] == best["TrainingJobName"]
        assert "OverallBestTrainingJob" not in job and "FailureReason" not in job

        # a warm start from it: its 3 trials seed the next tuning job's search
        child = tiny_tuning(tmp_path, max_jobs=1, seconds_per_epoch=0.2)
        child.warm_start_parents = [name]
        request = staged_request(emu, tmp_path, child, run_id="r2")
        described, history = run_to_end(emu, definition(request), timeout_s=120)
        assert described["status"] == "SUCCEEDED", failures(history)
        job = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="tiny-tune-r2")
        assert job["WarmStartConfig"]["ParentHyperParameterTuningJobs"] == [
            {"HyperParameterTuningJobName": name}]
        overall = job["OverallBestTrainingJob"]
        assert overall["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == max(
            best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"],
            job["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]["Value"])
    # the trials' records stay out of runs_dir, the scratch folders are gone
    assert not (tmp_path / "runs").exists()
    assert not list((tmp_path / "work").iterdir())


def test_a_tuning_job_without_a_completed_trial_fails_the_execution(tmp_path):
    step = tiny_tuning(tmp_path, max_jobs=2, crash="yes")
    with EmbeddedEmulator(bridge=TuningBridge(load_config(), workdir=tmp_path)) as emu:
        request = staged_request(emu, tmp_path, step, run_id="r2")
        described, history = run_to_end(emu, definition(request), timeout_s=120)
        assert described["status"] == "FAILED"
        (_, details), = [f for f in failures(history) if f[0] == "TaskFailed"]
        assert details["error"] == "States.TaskFailed"
        cause = json.loads(details["cause"])
        assert cause["HyperParameterTuningJobStatus"] == "Failed"
        assert "none of its 2 training jobs completed" in cause["FailureReason"]
        assert "diverged at learning rate" in cause["FailureReason"]
        # it names no scratch folder of the bridge's (gone with the job)
        assert str(tmp_path) not in cause["FailureReason"], cause["FailureReason"]
        assert "BestTrainingJob" not in cause
        assert not [k for k in aws.list_keys(emu.client("s3"), f"{BASE}/training")
                    if k.endswith("model.tar.gz")]


def _trial_processes() -> list[psutil.Process]:
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "local_runners.train_trial" in " ".join(p.cmdline()):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def test_stop_hyper_parameter_tuning_job_stops_its_trials(tmp_path):
    step = tiny_tuning(tmp_path, max_jobs=2, epochs=2, seconds_per_epoch=60)
    with EmbeddedEmulator(bridge=TuningBridge(load_config(), workdir=tmp_path)) as emu:
        request = staged_request(emu, tmp_path, step, run_id="r3")
        name = request["HyperParameterTuningJobName"]
        sm = emu.client("sagemaker")
        sm.create_hyper_parameter_tuning_job(**request)
        deadline = time.monotonic() + 60
        while len(_trial_processes()) < 2:
            assert time.monotonic() < deadline, "the trials never started"
            time.sleep(0.1)
        assert sm.list_training_jobs_for_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=name)["TrainingJobSummaries"] == []
        t0 = time.monotonic()
        sm.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        assert time.monotonic() - t0 < 5  # it answers at once
        while sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)[
                "HyperParameterTuningJobStatus"] != "Stopped":
            assert time.monotonic() - t0 < 30, "still not Stopped"
            time.sleep(0.1)
        assert not _trial_processes()
        with pytest.raises(sm.exceptions.ClientError, match="only a job InProgress"):
            sm.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        with pytest.raises(sm.exceptions.ClientError, match="Could not find"):
            sm.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName="nope")
        assert not aws.list_keys(emu.client("s3"), f"{BASE}/training")
        assert tuning_bridge.check() == []  # the bridge's own actions are not moto's
    # the emulator stopped: moto's SageMaker handler is as it was
    from moto.sagemaker.responses import SageMakerResponse

    assert not any(hasattr(SageMakerResponse, a) for a in tuning_bridge.ADDED_ACTIONS)


def test_a_tuning_workflow_runs_on_the_emulator_backend(tmp_path):
    """A pipeline of one's own, one TuningStep: `harness run --backend emulator` bootstraps
    the stack (its roles scoped to the tuning job's prefix), runs the state machine and
    records the real best trial. Its channel is the run's code folder (always there)."""
    step = tiny_tuning(tmp_path, max_jobs=2, train_uri=run_path("code"))
    wf = Workflow("tiny", step)
    cfg = load_config(overrides={"runs_dir": str(tmp_path / "runs"), "cloud.poll_seconds": 0.2})
    result = wf.run("emulator", config=cfg)
    assert result.record.status == "SUCCEEDED" and result.record.backend == "emulator"
    out = json.loads((result.run_dir / "steps/tune/output.json").read_text())
    assert out["HyperParameterTuningJobStatus"] == "Completed"
    assert out["TrainingJobStatusCounters"]["Completed"] == 2
    best = out["BestTrainingJob"]
    assert best["TrainingJobName"].startswith(f"tiny-tune-{result.record.run_id}-")
    lr = float(best["TunedHyperParameters"]["learning_rate"])
    assert best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == pytest.approx(
        accuracy(lr), abs=1e-5)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [result.record.run_id]
