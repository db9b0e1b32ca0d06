"""The tuning step's CreateHyperParameterTuningJob request: built from the training step it
tunes, every range and limit checked before any trial."""
import pytest
from pipeline_support import pipeline

from harness.errors import ConfigError
from harness.local_setup import LocalImages
from harness.placeholders import resolve
from harness.steps.tuning import (CategoricalParameter, ContinuousParameter, IntegerParameter,
                                  TuningStep)


def training():
    return pipeline()[1].step("train")


def tuning(**kw):
    args = dict(training=training(), job_name="mnist-tune", objective_metric="validation:accuracy",
                parameter_ranges={"learning_rate": ContinuousParameter(1e-4, 1e-2, "Logarithmic"),
                                  "batch_size": IntegerParameter(32, 256),
                                  "shift": CategoricalParameter([0.0, 0.1])},
                max_jobs=8, max_parallel_jobs=2, early_stopping="Auto", random_seed=7)
    args.update(kw)
    return TuningStep("tune", **args)


def test_the_request_is_a_create_hyper_parameter_tuning_job_body():
    step = tuning()
    ctx = pipeline()[1].build_context("local", LocalImages())
    body = resolve(step.request(ctx), {"RunId": "r1", "BaseUri": "file:///runs/r1", "CodeUri": "file:///runs/r1/code",
                                       "Prepare": {"ImageHeight": 28, "ImageWidth": 28,
                                                   "NumClasses": 10}}, "tune")
    assert body["HyperParameterTuningJobName"] == "mnist-tune-r1"
    config = body["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Bayesian" and config["RandomSeed"] == 7
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize",
                                                          "MetricName": "validation:accuracy"}
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 8,
                                        "MaxParallelTrainingJobs": 2}
    assert config["TrainingJobEarlyStoppingType"] == "Auto"
    ranges = config["ParameterRanges"]
    assert ranges["ContinuousParameterRanges"] == [{"Name": "learning_rate", "MinValue": "0.0001",
                                                    "MaxValue": "0.01",
                                                    "ScalingType": "Logarithmic"}]
    assert ranges["IntegerParameterRanges"] == [{"Name": "batch_size", "MinValue": "32",
                                                 "MaxValue": "256", "ScalingType": "Auto"}]
    # categorical values JSON-encoded, as the SDK's HyperparameterTuner sends them for a
    # Framework estimator (CategoricalParameter.as_json_range: json.dumps(str(value)));
    # integer and continuous bounds stay plain
    assert ranges["CategoricalParameterRanges"] == [{"Name": "shift",
                                                     "Values": ['"0.0"', '"0.1"']}]
    assert set(ranges) == {"ContinuousParameterRanges", "IntegerParameterRanges",
                           "CategoricalParameterRanges"}
    definition = body["TrainingJobDefinition"]
    static = definition["StaticHyperParameters"]
    # the tuned values are not static; the rest is the training step's own request
    assert not {"learning_rate", "batch_size", "shift"} & set(static)
    assert static["epochs"] == "6" and static["image_height"] == "28"
    # JSON-encoded, as the SageMaker SDK sends a framework estimator's hyperparameters
    assert static["sagemaker_program"] == '"train.py"'
    assert static["model_dir"] == '"file:///runs/r1/training/mnist-tune-r1/model"'
    names = [d["Name"] for d in definition["AlgorithmSpecification"]["MetricDefinitions"]]
    assert "validation:accuracy" in names
    assert [c["ChannelName"] for c in definition["InputDataConfig"]] == [
        "train", "validation", "test"]
    assert definition["OutputDataConfig"] == {"S3OutputPath": "file:///runs/r1/training"}
    assert "TrainingJobName" not in definition


def test_the_best_model_is_found_where_sagemaker_writes_a_training_jobs_model():
    step = tuning()
    doc = {"BaseUri": "s3://b/p", "Tune": {"BestTrainingJob": {
        "TrainingJobName": "mnist-tune-r1-003-abcdef12"}}}
    assert resolve({"m": step.best_model_data()}, doc, "model")["m"] == (
        "s3://b/p/training/mnist-tune-r1-003-abcdef12/output/model.tar.gz")


@pytest.mark.parametrize("kw, field", [
    ({"parameter_ranges": {"learning_rate": ContinuousParameter(0.1, 0.01)}},
     "tune.parameter_ranges.learning_rate"),
    ({"parameter_ranges": {"learning_rate": ContinuousParameter(0, 0.1, "Logarithmic")}},
     "tune.parameter_ranges.learning_rate"),
    ({"parameter_ranges": {"batch_size": IntegerParameter(32.5, 64)}},
     "tune.parameter_ranges.batch_size.min_value"),
    ({"parameter_ranges": {"x": ContinuousParameter(0, 1, "Quadratic")}},
     "tune.parameter_ranges.x.scaling_type"),
    ({"parameter_ranges": {}}, "tune.parameter_ranges"),
    ({"parameter_ranges": {"epochs": CategoricalParameter([])}}, "tune.parameter_ranges.epochs"),
    ({"objective_metric": "validation:auc"}, "tune.objective_metric"),
    ({"strategy": "Genetic"}, "tune.strategy"),
    ({"objective_type": "Maximise"}, "tune.objective_type"),
    ({"max_parallel_jobs": 0}, "tune.max_parallel_jobs"),
    ({"job_name": "a-tuning-job-prefix"}, "tune.job_name"),  # 32 characters with the run id
    ({"strategy": "Grid"}, "tune.parameter_ranges"),
    ({"strategy": "Hyperband"}, "tune.early_stopping"),
    ({"warm_start_parents": ["a"] * 6}, "tune.warm_start_parents"),
    ({"warm_start_parents": ["a", "a"]}, "tune.warm_start_parents"),
    ({"warm_start_parents": ["a"], "warm_start_type": "Identical"}, "tune.warm_start_type"),
])
def test_a_bad_setting_is_refused_before_any_trial(kw, field):
    with pytest.raises(ConfigError) as e:
        tuning(**kw)
    assert e.value.field == field, e.value.message


def test_show_prints_the_trials_best_first_marked_and_stopped_ones_named():
    out = {"BestTrainingJob": {"TrainingJobName": "t-002"}, "TrainingJobSummaries": [
        {"TrainingJobName": "t-001", "TunedHyperParameters": {"learning_rate": "0.00892718"},
         "FinalHyperParameterTuningJobObjectiveMetric": {"MetricName": "validation:accuracy",
                                                         "Value": 0.95},
         "TrainingJobStatus": "Stopped", "TrainingTimeInSeconds": 3.5},
        {"TrainingJobName": "t-002", "TunedHyperParameters": {"learning_rate": "0.01"},
         "FinalHyperParameterTuningJobObjectiveMetric": {"MetricName": "validation:accuracy",
                                                         "Value": 0.97},
         "TrainingJobStatus": "Completed", "TrainingTimeInSeconds": 9.0}]}
    columns, rows = TuningStep.table(out)
    assert columns == ["trial", "learning_rate", "validation:accuracy", "status", "seconds"]
    assert rows == [["t-001", "0.008927", 0.95, "Stopped (early)", 3.5],
                    ["t-002", "0.01", 0.97, "Completed - best", 9.0]]
    assert TuningStep.table({}) is None


def test_the_trials_plot_shows_each_trial_and_the_best_so_far(tmp_path):
    import matplotlib.image

    from local_runners.tuning_plot import plot_trials

    summaries = [{"TrainingJobStatus": st, "FinalHyperParameterTuningJobObjectiveMetric": {
        "MetricName": "validation:loss", "Value": v}} for st, v in
        (("Completed", 0.5), ("Stopped", 0.7), ("Completed", 0.3))]
    path = plot_trials(summaries, "Minimize", tmp_path / "trials.png")
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (360, 640) and image.std() > 0.01
    assert plot_trials([{"TrainingJobStatus": "Failed"}], "Minimize", tmp_path / "x.png") is None


def test_the_emulator_runs_a_tuning_pipeline_with_the_tuning_bridge():
    """The emulator accepts the tuning step and installs the bridge that runs its trials
    (tests/cloud_runners/emulator/test_tuning_bridge.py runs one)."""
    from cloud_runners.emulator.backend import make_bridges
    from cloud_runners.emulator.tuning_bridge import TuningBridge

    cfg, wf = pipeline(**{"tune.enabled": True})
    step = wf.step("tune")
    assert step.kind == "tuning"
    bridges = wf.emulator_bridges()
    assert "cloud_runners.emulator.tuning_bridge:TuningBridge" in bridges
    assert "cloud_runners.emulator.training_bridge:TrainingBridge" not in bridges
    assert any(isinstance(b, TuningBridge) for b in make_bridges(cfg, "/tmp", bridges))


def test_tune_config_ranges_are_checked_with_the_training_scripts_rules():
    with pytest.raises(ConfigError) as e:
        pipeline(**{"tune.enabled": True, "tune.parameter_ranges": {
            "epochs": {"type": "integer", "min_value": 0, "max_value": 3}}})
    assert e.value.field == "tune.parameter_ranges.epochs" and "--epochs" in e.value.message
    with pytest.raises(ConfigError) as e:
        pipeline(**{"tune.enabled": True, "tune.parameter_ranges": {
            "momentum": {"type": "continuous", "min_value": 0.1, "max_value": 0.5}}})
    assert "--momentum is not an argument" in e.value.message
    with pytest.raises(ConfigError) as e:
        pipeline(**{"tune.enabled": True, "tune.parameter_ranges": {
            "dropout": {"type": "continuous", "min_value": 0.1, "max_value": 1.0}}})
    assert e.value.field == "tune.parameter_ranges.dropout" and "--dropout" in e.value.message
    _, wf = pipeline(**{"tune.enabled": True, "tune.parameter_ranges": {
        "shift": {"type": "categorical", "values": [0.0, 0.1, 0.2]}}, "tune.strategy": "Grid"})
    assert wf.step("tune").tuned == ["shift"]


def test_the_default_pipeline_warm_starts_from_the_tuning_jobs_named_in_config():
    from harness.steps.base import BuildContext

    _, wf = pipeline(**{"tune.enabled": True, "tune.warm_start_parents": ["mnist-tune-r1"],
                        "tune.warm_start_type": "TransferLearning"})
    request = wf.step("tune").request(BuildContext("local", LocalImages()))
    assert request["WarmStartConfig"] == {
        "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": "mnist-tune-r1"}],
        "WarmStartType": "TransferLearning"}
