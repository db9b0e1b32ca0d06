"""The tuning step's CreateHyperParameterTuningJob request executed by LocalTuningRunner:
every trial a real training job in a child process, tuned by Optuna.

The trials run a tiny pure-Python training script (no TensorFlow): its validation
accuracy is ``accuracy(learning_rate, optimizer, epoch)`` below, which peaks at a learning
rate of 0.01 with adam, so each trial takes well under a second and the best trial is
known from its hyperparameters."""
from __future__ import annotations

import json
import os
import re
import signal
import statistics
import tarfile
import threading
import time
from datetime import datetime

import psutil
import pytest
from pipeline_support import pipeline, run_document, stage_code, stage_context

from harness import uris
from harness.errors import HarnessError, StepFailed
from harness.local_setup import LocalImages
from harness.placeholders import resolve
from harness.steps.tuning import (CategoricalParameter, ContinuousParameter, IntegerParameter,
                                  TuningStep)
from local_runners.tune import LocalTuningRunner
from local_runners.tuning_trial import threads_per_trial

from tuning_support import Tuning, tiny_tuning_workflow, tuned_accuracy


def seconds(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


LR = ContinuousParameter(1e-4, 1.0, "Logarithmic")
OPTIMIZER = CategoricalParameter(["sgd", "adam"])


@pytest.fixture(scope="module")
def bayesian(tmp_path_factory):
    job = Tuning(tmp_path_factory.mktemp("bayesian"), ranges={"learning_rate": LR,
                                                              "optimizer": OPTIMIZER},
                 hyperparameters={"seconds_per_epoch": 0.1}, strategy="Bayesian", max_jobs=6,
                 max_parallel_jobs=2, random_seed=5)
    job.run()
    return job


def test_the_best_trial_is_the_one_the_script_makes_best(bayesian):
    out = bayesian.output
    summaries = out["TrainingJobSummaries"]
    for s in summaries:
        assert s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == pytest.approx(
            tuned_accuracy(s), abs=2e-6)
    best = out["BestTrainingJob"]
    final = best["FinalHyperParameterTuningJobObjectiveMetric"]
    assert (final["Type"], final["MetricName"]) == ("Maximize", "validation:accuracy")
    assert final["Value"] == pytest.approx(max(tuned_accuracy(s) for s in summaries), abs=2e-6)
    assert best == next(s for s in summaries if s["TrainingJobName"] == best["TrainingJobName"])
    assert best["TrainingJobStatus"] == "Completed" and best["ObjectiveStatus"] == "Succeeded"
    # the best trial's model is where TuningStep.best_model_data() looks for it
    model = resolve({"m": bayesian.step.best_model_data()},
                    {"BaseUri": uris.file_uri(bayesian.tmp), "Tune": out}, "m")["m"]
    with tarfile.open(uris.local_path(model)) as tar:
        written = json.load(tar.extractfile("model.json"))
    # the categorical value is JSON-encoded in the request ('"adam"', as the SDK sends it);
    # the script gets it decoded (adam), as the training toolkit passes it
    tuned = best["TunedHyperParameters"]
    assert tuned["optimizer"] in ('"sgd"', '"adam"')
    assert written == {"learning_rate": float(tuned["learning_rate"]),
                       "optimizer": json.loads(tuned["optimizer"])}


def test_every_trial_is_a_named_recorded_training_job(bayesian):
    out, name = bayesian.output, bayesian.name
    assert name == "tiny-tune-t1"
    assert out["HyperParameterTuningJobStatus"] == "Completed"
    assert out["HyperParameterTuningJobArn"] == (
        "arn:aws:sagemaker:local:000000000000:hyper-parameter-tuning-job/tiny-tune-t1")
    assert out["TrainingJobStatusCounters"] == {"Completed": 6, "InProgress": 0,
                                                "RetryableError": 0, "NonRetryableError": 0,
                                                "Stopped": 0}
    assert out["ObjectiveStatusCounters"] == {"Succeeded": 6, "Pending": 0, "Failed": 0}
    names = [s["TrainingJobName"] for s in out["TrainingJobSummaries"]]
    assert [re.fullmatch(r"tiny-tune-t1-(\d{3})-[0-9a-f]{8}", n).group(1) for n in names] == [
        "001", "002", "003", "004", "005", "006"]
    assert sorted(p.name for p in bayesian.records.iterdir()) == sorted(names)
    # the picture of the job: objective per trial and best so far, beside the records
    import matplotlib.image
    png = matplotlib.image.imread(bayesian.records.parent / "trials.png")
    assert png.shape[0] > 100 and png.std() > 0.01
    assert sorted(p.name for p in bayesian.training.iterdir()) == sorted(names)
    for s in out["TrainingJobSummaries"]:
        trial = s["TrainingJobName"]
        req = bayesian.record(trial, "request.json")
        hps = req["HyperParameters"]
        assert req["TrainingJobName"] == trial
        assert hps["_tuning_objective_metric"] == "validation:accuracy"
        assert hps["epochs"] == "3" and hps["sagemaker_program"] == '"train.py"'
        assert {k: hps[k] for k in ("learning_rate", "optimizer")} == s["TunedHyperParameters"]
        assert 1e-4 <= float(hps["learning_rate"]) <= 1.0
        assert hps["optimizer"] in ('"sgd"', '"adam"')
        rec = bayesian.record(trial, "output.json")
        assert rec["TrainingJobStatus"] == "Completed"
        assert rec["TuningJobArn"] == out["HyperParameterTuningJobArn"]
        assert [v["Step"] for v in rec["ObjectiveValues"]] == [1, 2, 3]
        assert rec["ObjectiveValues"][0]["Value"] == pytest.approx(
            tuned_accuracy(s, epoch=1), abs=2e-6)
        log = bayesian.record(trial, "log.txt")
        assert "objective=validation:accuracy" in log and log.count("\nepoch=") == 3
        assert (bayesian.training / trial / "output" / "model.tar.gz").is_file()
    # a live table, a row per trial: its values, epoch, objective and status as they come
    (table,) = bayesian.recorder.tables
    assert table["columns"] == ["trial", "learning_rate", "optimizer", "epoch",
                                "objective", "status", "note"]
    best = out["BestTrainingJob"]["TrainingJobName"]
    for s in out["TrainingJobSummaries"]:
        name = s["TrainingJobName"]
        row = table["rows"][name]
        value = s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
        assert row["status"] == "Completed" and row["epoch"] == "3/3"
        assert row["objective"] == f"{value:.4f}"
        assert row["optimizer"] == json.loads(s["TunedHyperParameters"]["optimizer"])
        assert row["trial"].endswith(" ★") == (name == best)
        statuses = [c["status"] for k, c in table["updates"] if k == name and "status" in c]
        assert statuses == ["InProgress", "Completed"]
        epochs = [c["epoch"] for k, c in table["updates"] if k == name and "epoch" in c]
        assert epochs == ["0/3", "1/3", "2/3", "3/3"]


def test_parallel_two_runs_two_trials_at_once_with_the_cores_shared(bayesian):
    spans = sorted((seconds(s["TrainingStartTime"]), seconds(s["TrainingEndTime"]))
                   for s in bayesian.output["TrainingJobSummaries"])
    overlapping = sum(b[0] < a[1] for a, b in zip(spans, spans[1:]))
    assert overlapping >= 3, spans
    busy = sum(end - start for start, end in spans)
    assert bayesian.seconds < 0.85 * busy  # less than running them one after another
    threads = threads_per_trial(2)
    assert threads == max(1, len(os.sched_getaffinity(0)) // 2)
    for trial in bayesian.records.iterdir():
        assert f"threads={threads}/{threads}/{threads}" in bayesian.record(trial.name, "log.txt")


@pytest.mark.parametrize("strategy, parallel", [("Random", 2), ("Hyperband", 1)])
def test_random_and_hyperband_strategies_run(tmp_path, strategy, parallel):
    job = Tuning(tmp_path, ranges={"learning_rate": LR,
                                   "epochs": IntegerParameter(2, 5, "Linear")},
                 hyperparameters={"seconds_per_epoch": 0.05}, strategy=strategy, max_jobs=6,
                 max_parallel_jobs=parallel, random_seed=3)
    out = job.run()
    summaries = out["TrainingJobSummaries"]
    assert len(summaries) == 6 and len({s["TunedHyperParameters"]["learning_rate"]
                                        for s in summaries}) == 6
    assert {s["TunedHyperParameters"]["epochs"] for s in summaries} <= {"2", "3", "4", "5"}
    counters = out["TrainingJobStatusCounters"]
    assert counters["Completed"] + counters["Stopped"] == 6 and counters["Completed"] >= 1
    # Hyperband stops some trials after fewer epochs than they were given
    assert (counters["Stopped"] >= 1) == (strategy == "Hyperband")
    for s in summaries:
        epochs = int(s["TunedHyperParameters"]["epochs"])
        steps = job.record(s["TrainingJobName"], "output.json")["ObjectiveValues"]
        if s["TrainingJobStatus"] == "Completed":
            assert len(steps) == epochs
            assert s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == pytest.approx(
                tuned_accuracy(s, epoch=epochs), abs=2e-6)
        else:
            assert len(steps) < epochs


def test_grid_runs_every_combination_once(tmp_path):
    job = Tuning(tmp_path, ranges={"learning_rate": CategoricalParameter([0.001, 0.01, 0.1]),
                                   "optimizer": OPTIMIZER},
                 strategy="Grid", max_jobs=10, max_parallel_jobs=2)
    out = job.run()
    combos = sorted((s["TunedHyperParameters"]["learning_rate"],
                     s["TunedHyperParameters"]["optimizer"])
                    for s in out["TrainingJobSummaries"])
    assert combos == sorted((f'"{lr}"', f'"{o}"') for lr in ("0.001", "0.01", "0.1")
                            for o in ("sgd", "adam"))
    assert out["BestTrainingJob"]["TunedHyperParameters"] == {"learning_rate": '"0.01"',
                                                              "optimizer": '"adam"'}


@pytest.fixture(scope="module")
def stopping(tmp_path_factory):
    """The same random search with early stopping Off and Auto."""
    jobs = {}
    for mode in ("Off", "Auto"):
        jobs[mode] = Tuning(tmp_path_factory.mktemp(mode), ranges={"learning_rate": LR},
                            hyperparameters={"epochs": 6, "seconds_per_epoch": 0.05},
                            strategy="Random", max_jobs=6, early_stopping=mode, random_seed=3)
        jobs[mode].run()
    return jobs


def test_early_stopping_auto_stops_bad_trials_and_saves_epochs(stopping):
    off, auto = stopping["Off"], stopping["Auto"]
    lrs = [[s["TunedHyperParameters"]["learning_rate"] for s in j.output["TrainingJobSummaries"]]
           for j in (off, auto)]
    assert lrs[0] == lrs[1]  # the same seed: the same trials
    assert off.output["TrainingJobStatusCounters"]["Stopped"] == 0 and off.epochs_run() == 36
    counters = auto.output["TrainingJobStatusCounters"]
    assert counters["Stopped"] >= 1 and counters["Completed"] + counters["Stopped"] == 6
    assert auto.epochs_run() < off.epochs_run()
    summaries = auto.output["TrainingJobSummaries"]
    completed_before = []
    for s in summaries:
        rec = auto.record(s["TrainingJobName"], "output.json")
        if s["TrainingJobStatus"] == "Stopped":
            step = rec["StoppedEarlyAtStep"]
            assert step >= 2  # never on its first value
            at_step = [c["ObjectiveValues"][step - 1]["Value"] for c in completed_before]
            assert len(at_step) >= 2
            best_so_far = max(v["Value"] for v in rec["ObjectiveValues"][:step])
            assert best_so_far < statistics.median(at_step)
            assert not (auto.training / s["TrainingJobName"]).exists()
            assert s["ObjectiveStatus"] == "Succeeded"  # SageMaker keeps a stopped job's value
            row = auto.recorder.tables[0]["rows"][s["TrainingJobName"]]
            assert (row["status"], row["note"]) == ("Stopped", f"stopped early at epoch {step}")
        else:
            completed_before.append(rec)
    assert [p.name for p in auto.training.iterdir() if p.name.startswith(".")] == []
    assert auto.output["BestTrainingJob"]["TrainingJobStatus"] == "Completed"


def test_a_crashing_trial_is_counted_failed_and_the_job_completes(tmp_path):
    job = Tuning(tmp_path, ranges={"learning_rate": CategoricalParameter([0.001, 0.01, 0.5])},
                 hyperparameters={"crash_above": 0.1}, strategy="Grid", max_jobs=3,
                 max_parallel_jobs=2)
    out = job.run()
    assert out["TrainingJobStatusCounters"]["Completed"] == 2
    assert out["TrainingJobStatusCounters"]["NonRetryableError"] == 1
    assert out["ObjectiveStatusCounters"] == {"Succeeded": 2, "Pending": 0, "Failed": 1}
    failed = next(s for s in out["TrainingJobSummaries"] if s["TrainingJobStatus"] == "Failed")
    assert failed["TunedHyperParameters"] == {"learning_rate": '"0.5"'}
    assert "RuntimeError: diverged at learning rate 0.5" in failed["FailureReason"]
    assert "RuntimeError" in job.record(failed["TrainingJobName"], "log.txt")
    assert job.record(failed["TrainingJobName"], "output.json")["TrainingJobStatus"] == "Failed"
    assert not (job.training / failed["TrainingJobName"]).exists()
    assert out["BestTrainingJob"]["TunedHyperParameters"] == {"learning_rate": '"0.01"'}


def test_all_trials_failing_fails_the_step_with_the_last_error(tmp_path):
    job = Tuning(tmp_path, ranges={"learning_rate": CategoricalParameter([0.2, 0.5])},
                 hyperparameters={"crash_above": 0.1}, strategy="Grid", max_jobs=2)
    with pytest.raises(StepFailed) as e:
        job.run()
    assert e.value.step == "tune"
    assert "tuning job tiny-tune-t1 failed" in e.value.message
    assert re.search(r"the last, tiny-tune-t1-002-[0-9a-f]{8} \(Failed\): training job "
                     r"tiny-tune-t1-002-[0-9a-f]{8} failed: RuntimeError: diverged at "
                     r"learning rate 0\.[25]", e.value.message), e.value.message
    assert str(job.records) in e.value.message
    assert len(list(job.records.iterdir())) == 2


def test_an_objective_regex_matching_nothing_is_an_error_naming_it(tmp_path):
    regex = r"validation_accuracy=([0-9.]+)"
    job = Tuning(tmp_path, ranges={"learning_rate": CategoricalParameter([0.01])},
                 regex=regex, strategy="Grid", max_jobs=1)
    with pytest.raises(StepFailed) as e:
        job.run()
    msg = e.value.message
    assert f"its regex {regex!r} matched no line of the log of training job" in msg
    assert re.search(r"last lines:\n.*epoch=3/3 val_accuracy=0\.83\d+", msg, re.S), msg
    trial = next(job.records.iterdir()).name
    rec = job.record(trial, "output.json")
    # SageMaker's way: the training job completed, its objective failed
    assert rec["TrainingJobStatus"] == "Completed" and rec["ObjectiveStatus"] == "Failed"


def test_a_request_whose_objective_has_no_metric_definition_is_refused(tmp_path):
    job = Tuning(tmp_path, ranges={"learning_rate": LR})
    job.request["TrainingJobDefinition"]["AlgorithmSpecification"]["MetricDefinitions"] = [
        {"Name": "train:loss", "Regex": "loss=([0-9.]+)"}]
    with pytest.raises(HarnessError, match="'validation:accuracy'"):
        job.run()
    assert not job.records.exists() or list(job.records.iterdir()) == []


def test_ctrl_c_stops_the_running_trials_and_keeps_the_finished(tmp_path):
    job = Tuning(tmp_path, ranges={"learning_rate": CategoricalParameter([0.01]),
                                   "seconds_per_epoch": CategoricalParameter([0.01, 30])},
                 strategy="Grid", max_jobs=2, max_parallel_jobs=2)
    seen: set[int] = set()
    me = psutil.Process()
    # processes this test process had already (a Spark JVM of an earlier test) are not
    # the tuner's
    before = {p.pid for p in me.children(recursive=True)}

    def interrupt_when_one_finished_and_one_runs():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            seen.update(p.pid for p in me.children(recursive=True))
            outputs = [p for p in job.records.glob("*/output.json")
                       if "ObjectiveStatus" in p.read_text()]  # the tuner's record
            logs = [p.read_text() for p in job.records.glob("*/log.txt")]
            if len(outputs) == 1 and sum("epoch=1/3" in text for text in logs) == 2:
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=interrupt_when_one_finished_and_one_runs, daemon=True)
    watcher.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        job.run(grace_s=5)
    watcher.join()
    seen -= before
    assert time.monotonic() - t0 < 20  # the 90-second trial did not run on
    assert len(seen) >= 2
    assert [p for p in me.children(recursive=True) if p.pid in seen] == []
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() !=
                   psutil.STATUS_ZOMBIE for pid in seen)
    records = {json.loads(json.loads((d / "output.json").read_text())["TunedHyperParameters"][
        "seconds_per_epoch"]): json.loads((d / "output.json").read_text())
        for d in job.records.iterdir()}
    assert records["0.01"]["TrainingJobStatus"] == "Completed"
    assert records["30"]["TrainingJobStatus"] == "Stopped"
    assert "interrupted" in records["30"]["FailureReason"]
    finished = records["0.01"]["TrainingJobName"]
    assert sorted(p.name for p in job.training.iterdir()) == [finished]  # no partial job
    assert any("tuning job tiny-tune-t1 interrupted: 1 trial(s) finished, 1 running one(s) "
               "stopped" in m for m in job.recorder.messages), job.recorder.messages


def test_in_a_run_the_trial_records_sit_beside_the_steps_own(tmp_path):
    wf, cfg = tiny_tuning_workflow(tmp_path, tmp_path / "runs", {"learning_rate": LR},
                                   random_seed=1)
    result = wf.run("local", config=cfg)
    assert result.record.status == "SUCCEEDED"
    step_dir = result.run_dir / "steps" / "tune"
    trials = sorted(p.name for p in (step_dir / "trials").iterdir())
    assert len(trials) == 2 and (step_dir / "output.json").is_file()
    for trial in trials:
        assert {p.name for p in (step_dir / "trials" / trial).iterdir()} == {
            "request.json", "output.json", "log.txt"}
        assert f"[{trial}] epoch=2/2" in (step_dir / "log.txt").read_text()
    best = result.output("tune")["BestTrainingJob"]["TrainingJobName"]
    assert (result.run_dir / "training" / best / "output" / "model.tar.gz").is_file()


@pytest.mark.slow
def test_tuning_the_real_model_on_real_digits(tmp_path):
    from test_train import write_splits

    cfg, wf = pipeline(**{"train.hyperparameters": {"epochs": 1, "batch_size": 64},
                          "runs_dir": str(tmp_path / "runs")})
    step = TuningStep("tune", training=wf.step("train"), job_name="mnist-tune",
                      objective_metric="validation:accuracy",
                      parameter_ranges={"learning_rate": ContinuousParameter(1e-3, 1e-2)},
                      strategy="Random", max_jobs=2, max_parallel_jobs=2, random_seed=1)
    base = uris.file_uri(tmp_path)
    write_splits(tmp_path, sizes=(600, 150, 150))
    stage_code(cfg, wf, base, "train")
    body = resolve(step.request(wf.build_context("local", LocalImages())),
                   run_document(base, "m1"), "tune")
    out = LocalTuningRunner().run(body, stage_context(cfg, "tune", "m1"))
    assert out["TrainingJobStatusCounters"]["Completed"] == 2
    best = out["BestTrainingJob"]
    assert 0.3 < best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] <= 1.0
    archive = tmp_path / "training" / best["TrainingJobName"] / "output" / "model.tar.gz"
    with tarfile.open(archive) as tar:
        assert "1/saved_model.pb" in tar.getnames()

