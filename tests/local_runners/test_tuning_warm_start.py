"""WarmStartConfig locally: a tuning run's trials seed a later tuning job's search (the
tiny script of ``tuning_support``: its best learning rate is 0.01, with adam)."""
from __future__ import annotations

import json

import pytest
from tuning_support import tiny_tuning_workflow

from harness.errors import HarnessError, StepFailed
from harness.steps.tuning import CategoricalParameter, ContinuousParameter
from local_runners.tuning_warm_start import ParentJob, parents

LR = ContinuousParameter(1e-4, 1.0, "Logarithmic")


def tuning_run(tmp, runs, ranges, *, hyperparameters=None, max_jobs=2, strategy="Random",
               **warm):
    wf, cfg = tiny_tuning_workflow(tmp, runs, ranges, hyperparameters=hyperparameters,
                                   strategy=strategy, max_jobs=max_jobs, random_seed=3, **warm)
    messages = []
    result = wf.run("local", config=cfg, announce=messages.append)
    return result, messages


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("warm")
    result, _ = tuning_run(tmp, tmp / "runs", {"learning_rate": LR,
                                               "optimizer": CategoricalParameter(["sgd", "adam"])},
                           max_jobs=4)
    assert result.record.status == "SUCCEEDED"
    return tmp, result.output("tune")


def objective(summary):
    return summary["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]


def test_the_parent_trials_seed_the_search_and_the_overall_best_is_reported(parent):
    tmp, out = parent
    result, messages = tuning_run(
        tmp, tmp / "runs", {"learning_rate": LR,
                            "optimizer": CategoricalParameter(["sgd", "adam"])},
        strategy="Bayesian", warm_start_parents=[out["HyperParameterTuningJobName"]])
    assert result.record.status == "SUCCEEDED"
    child = result.output("tune")
    assert child["WarmStartConfig"] == {
        "ParentHyperParameterTuningJobs": [
            {"HyperParameterTuningJobName": out["HyperParameterTuningJobName"]}],
        "WarmStartType": "IdenticalDataAndAlgorithm"}
    seeded = [m for m in messages if "warm start from" in m]
    assert seeded and "4 parent trial(s) seed the search" in seeded[0]
    # the child ran its own 2 trials; the overall best is the best of both jobs
    assert len(child["TrainingJobSummaries"]) == 2
    everyone = out["TrainingJobSummaries"] + child["TrainingJobSummaries"]
    assert objective(child["OverallBestTrainingJob"]) == max(objective(s) for s in everyone)
    assert child["BestTrainingJob"]["TrainingJobName"].startswith(
        child["HyperParameterTuningJobName"])


def test_parent_trials_outside_the_new_ranges_are_skipped_and_counted(parent):
    tmp, out = parent
    values = sorted(float(s["TunedHyperParameters"]["learning_rate"])
                    for s in out["TrainingJobSummaries"])
    narrow = ContinuousParameter(values[1] * 0.999, 1.0, "Logarithmic")  # drops the lowest
    result, messages = tuning_run(
        tmp, tmp / "runs", {"learning_rate": narrow}, max_jobs=1,
        hyperparameters={"optimizer": "sgd"}, warm_start_type="TransferLearning",
        warm_start_parents=[out["HyperParameterTuningJobName"]])
    assert result.record.status == "SUCCEEDED"
    seeded = next(m for m in messages if "warm start from" in m)
    # the parent tuned "optimizer"; here it is static, and that is allowed
    assert "3 parent trial(s) seed the search; skipped: 1 outside the new ranges" in seeded
    assert "OverallBestTrainingJob" not in result.output("tune")  # TransferLearning


def test_an_unknown_parent_fails_the_step_before_any_trial(parent):
    tmp, _ = parent
    with pytest.raises(StepFailed) as e:
        tuning_run(tmp, tmp / "runs", {"learning_rate": LR},
                   warm_start_parents=["tiny-tune-nope"])
    record = e.value.run_record
    assert record.status == "FAILED"
    error = record.step("tune").error
    assert "parent tuning job 'tiny-tune-nope' not found in the runs folder" in error
    assert "WarmStartConfig.ParentHyperParameterTuningJobs[0]" in error
    assert not (tmp / "runs" / record.run_id / "steps" / "tune" / "trials").exists()


REQUEST = {
    "HyperParameterTuningJobConfig": {
        "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "acc"},
        "ParameterRanges": {"ContinuousParameterRanges": [
            {"Name": "learning_rate", "MinValue": "0.001", "MaxValue": "0.1"}]}},
    "TrainingJobDefinition": {"AlgorithmSpecification": {"TrainingImage": "tf:2.19"},
                              "StaticHyperParameters": {"epochs": "2"}},
}


def parent_job(**changes):
    doc = {"HyperParameterTuningJobName": "p1", "HyperParameterTuningJobStatus": "Completed",
           **json.loads(json.dumps(REQUEST)), "TrainingJobSummaries": []}
    for path, value in changes.items():
        *keys, last = path.split(".")
        node = doc
        for k in keys:
            node = node[k]
        node[last] = value
    return ParentJob.from_describe(doc, "test")


def warm(kind="IdenticalDataAndAlgorithm", names=("p1",)):
    return {**REQUEST, "WarmStartConfig": {
        "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": n} for n in names],
        "WarmStartType": kind}}


@pytest.mark.parametrize("kind,changes,message", [
    ("IdenticalDataAndAlgorithm", {"HyperParameterTuningJobStatus": "InProgress"},
     "parent tuning job p1 is InProgress"),
    ("TransferLearning", {"HyperParameterTuningJobConfig.HyperParameterTuningJobObjective.Type":
                          "Minimize"}, "parent tuning job p1 has another objective"),
    ("IdenticalDataAndAlgorithm", {"TrainingJobDefinition.AlgorithmSpecification.TrainingImage":
                                   "tf:2.18"}, "used another training image"),
    ("IdenticalDataAndAlgorithm", {"TrainingJobDefinition.StaticHyperParameters":
                                   {"epochs": "2", "dropout": "0.1"}},
     "parent tuning job p1 has other hyperparameters"),
])
def test_a_parent_that_does_not_fit_is_a_clear_error(kind, changes, message):
    job = parent_job(**changes)
    with pytest.raises(HarnessError) as e:
        parents(warm(kind), lambda name: job if name == "p1" else None, "test")
    assert message in str(e.value)
    assert "WarmStartConfig.ParentHyperParameterTuningJobs[0]" in str(e.value)


def test_transfer_learning_allows_other_hyperparameters_and_image():
    job = parent_job(**{"TrainingJobDefinition.AlgorithmSpecification.TrainingImage": "x",
                        "TrainingJobDefinition.StaticHyperParameters": {"dropout": "0.1"}})
    assert parents(warm("TransferLearning"), lambda name: job, "test") == [job]


@pytest.mark.parametrize("config,message", [
    ({"WarmStartType": "Cold", "ParentHyperParameterTuningJobs": [
        {"HyperParameterTuningJobName": "p1"}]}, "unknown warm start type"),
    ({"WarmStartType": "TransferLearning", "ParentHyperParameterTuningJobs": []},
     "1 to 5 parent tuning jobs"),
    ({"WarmStartType": "TransferLearning", "ParentHyperParameterTuningJobs": [
        {"HyperParameterTuningJobName": "p1"}] * 2}, "named twice"),
])
def test_a_bad_warm_start_config_is_refused(config, message):
    with pytest.raises(HarnessError, match=message):
        parents({**REQUEST, "WarmStartConfig": config}, lambda name: parent_job(), "test")
