"""The train step: the default pipeline's CreateTrainingJob request (a real, short
SageMaker script-mode job) executed by LocalTrainingRunner."""
import json
import os
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline_support import pipeline, request, run_document, stage_code, stage_context
from support import RecordingProgress, sample_digits, write_split

from harness import uris
from harness.errors import ConfigError, StepFailed
from local_runners.train import LocalTrainingRunner
from model.data import DataFormatError, load_split


def processed(base, split: str = ""):
    """The run's processed data (``<base>/data/processed[/<split>]``), as a path."""
    return base / "data" / "processed" / split if split else base / "data" / "processed"


def write_splits(base, sizes=(1200, 300, 300), seed: int = 0) -> None:
    x, y = sample_digits(sum(sizes), seed)
    start = 0
    for split, n in zip(("train", "validation", "test"), sizes):
        write_split(processed(base, split), x[start:start + n], y[start:start + n])
        start += n


def make_job(tmp, run_id: str, hyperparameters: dict, stage: bool = True):
    """The default pipeline's training request for a run in ``tmp`` (its BaseUri), the
    code staged at ``<base>/code/train/sourcedir.tar.gz`` as a run stages it."""
    cfg, wf = pipeline(**{"train.hyperparameters": hyperparameters})
    base = uris.file_uri(tmp)
    req = request(wf, "train", run_document(base, run_id))
    if stage:
        stage_code(cfg, wf, base, "train")
    ctx = stage_context(cfg, "train", run_id, progress=RecordingProgress())
    return cfg, tmp, req, ctx


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    cfg, base, request, ctx = make_job(tmp, "r1", {"epochs": 2, "batch_size": 64,
                                                   "learning_rate": 0.003, "seed": 7})
    write_splits(base)
    before = (dict(os.environ), list(sys.argv), list(sys.path), os.getcwd())
    # no prewarm: importing TensorFlow here would change os.environ itself; the check is
    # that the training script's changes stay in its own process
    result = LocalTrainingRunner(prewarm=False).run(request, ctx)
    after = (dict(os.environ), list(sys.argv), list(sys.path), os.getcwd())
    return {"cfg": cfg, "base": base, "request": request, "ctx": ctx, "result": result,
            "before": before, "after": after, "tmp": tmp}


@pytest.mark.slow
def test_job_output_is_a_serving_model_archive(job, tmp_path):
    result = job["result"]
    assert result["TrainingJobStatus"] == "Completed"
    archive = uris.local_path(result["ModelArtifacts"]["S3ModelArtifacts"])
    assert result["TrainingJobName"] == "mnist-train-r1"
    assert archive == job["base"] / "training" / "mnist-train-r1" / "output" / "model.tar.gz"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        assert "1/saved_model.pb" in names
        assert any(n.startswith("1/variables/variables.") for n in names)
        tar.extractall(tmp_path, filter="data")

    import tensorflow as tf
    sig = tf.saved_model.load(str(tmp_path / "1")).signatures["serving_default"]
    spec = sig.structured_input_signature[1]["pixels"]
    assert spec.dtype == tf.float32 and spec.shape.as_list() == [None, 784]
    assert set(sig.structured_outputs) == {"probabilities", "classes"}
    x, y = sample_digits(20, seed=99)
    out = sig(pixels=tf.constant(x))
    assert out["probabilities"].shape == (20, 10) and out["classes"].dtype == tf.int64
    np.testing.assert_allclose(out["probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-5)
    assert (out["classes"].numpy() == out["probabilities"].numpy().argmax(axis=1)).all()


@pytest.mark.slow
def test_metrics_follow_the_metric_definitions(job):
    result = job["result"]
    final = {m["MetricName"]: m["Value"] for m in result["FinalMetricDataList"]}
    assert set(final) == {m.Name for m in job["cfg"].train.metric_definitions}
    assert 0.8 < final["validation:accuracy"] <= 1.0  # 2 epochs on 1,200 real digits
    assert 0.8 < final["test:accuracy"] <= 1.0
    job_dir = job["base"] / "training" / result["TrainingJobName"]
    written = json.loads((job_dir / "output" / "data" / "metrics.json").read_text())
    assert written["metrics"]["test_accuracy"] == pytest.approx(final["test:accuracy"], abs=1e-4)
    with tarfile.open(job_dir / "output" / "output.tar.gz") as tar:
        assert tar.getnames() == ["metrics.json"]
    progress = job["ctx"].progress.tasks[0]
    assert progress["total"] == 2 and progress["advanced"] == 2
    assert "val_accuracy=" in progress["updates"][-1]["description"]


@pytest.mark.slow
def test_describe_shape_and_process_state_restored(job):
    result = job["result"]
    for key in ("TrainingJobName", "HyperParameters", "AlgorithmSpecification",
                "InputDataConfig", "OutputDataConfig", "ResourceConfig", "TrainingStartTime",
                "TrainingEndTime", "TrainingTimeInSeconds"):
        assert key in result
    assert result["SecondaryStatus"] == "Completed"
    # JSON-encoded as the SageMaker SDK sends a framework estimator's hyperparameters
    hps = result["HyperParameters"]
    assert hps["sagemaker_program"] == '"train.py"' and hps["epochs"] == "2"
    assert json.loads(hps["sagemaker_submit_directory"]).startswith("file://")
    assert job["before"] == job["after"]
    assert "network" not in sys.modules and "data" not in sys.modules


@pytest.mark.slow
def test_same_job_name_twice_is_refused(job):
    with pytest.raises(StepFailed, match="already used"):
        LocalTrainingRunner().run(job["request"], job["ctx"])


@pytest.mark.slow
def test_script_failure_is_step_failed_and_leaves_nothing(job, tmp_path):
    cfg, base, request, ctx = make_job(tmp_path, "r2", {"epochs": 1})
    write_splits(base, sizes=(50, 20, 20))
    request["InputDataConfig"] = [c for c in request["InputDataConfig"]
                                  if c["ChannelName"] != "train"]
    env, argv, path = dict(os.environ), list(sys.argv), list(sys.path)
    with pytest.raises(StepFailed, match="training job mnist-train-r2 failed: .*'train' channel"):
        LocalTrainingRunner(prewarm=False).run(request, ctx)
    training = base / "training"
    assert not training.exists() or list(training.iterdir()) == []
    assert (dict(os.environ), list(sys.argv), list(sys.path)) == (env, argv, path)


@pytest.mark.slow
def test_a_bad_row_met_while_streaming_fails_the_job_naming_file_and_field(tmp_path):
    """The script streams the splits: a bad label in a part file is found while the
    model trains, and the job fails with the reader's own message, not TensorFlow's."""
    cfg, base, request, ctx = make_job(tmp_path, "r5", {"epochs": 1})
    write_splits(base, sizes=(50, 20, 20))
    x, _ = sample_digits(3, seed=8)
    bad = processed(base, "train") / "part-00009-x.snappy.parquet"
    pq.write_table(pa.table({"pixels": pa.array(list(x), pa.list_(pa.float32())),
                             "label": pa.array([1, 12, 3], pa.int32())}), bad)
    with pytest.raises(StepFailed, match=r"part-00009-x.snappy.parquet: field 'label': values "
                       r"outside \[0, 9\]. Expected labels below num_classes=10. Got 12"):
        LocalTrainingRunner(prewarm=False).run(request, ctx)


@pytest.mark.slow
def test_unknown_hyperparameter_fails_clearly(tmp_path):
    # the default pipeline refuses it before the run starts ...
    with pytest.raises(ConfigError, match="--epoch_count is not an argument"):
        make_job(tmp_path, "r3", {"epochs": 1, "epoch_count": 3})
    # ... and a request that carries one anyway fails in the script, naming it
    cfg, base, request, ctx = make_job(tmp_path, "r3", {"epochs": 1})
    request["HyperParameters"]["epoch_count"] = "3"
    write_splits(base, sizes=(50, 20, 20))
    with pytest.raises(StepFailed, match="unrecognized arguments: --epoch_count 3"):
        LocalTrainingRunner().run(request, ctx)


def test_missing_channel_data_names_the_location(tmp_path):
    cfg, base, request, ctx = make_job(tmp_path, "r4", {"epochs": 1}, stage=False)
    with pytest.raises(StepFailed, match="no data for channel 'train'") as e:
        LocalTrainingRunner().run(request, ctx)
    assert str(processed(base, "train")) in str(e.value)


def test_load_split_reads_spark_style_parquet(tmp_path):
    x, y = sample_digits(30)
    write_split(tmp_path / "test", x, y, parts=3)
    gx, gy = load_split(tmp_path / "test", expected_pixels=784)
    assert gx.dtype == np.float32 and gy.dtype == np.int64
    np.testing.assert_array_equal(gx, x)
    np.testing.assert_array_equal(gy, y)


def test_load_split_errors_name_directory_and_field(tmp_path):
    with pytest.raises(DataFormatError, match="split directory not found"):
        load_split(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "_SUCCESS").write_text("")
    with pytest.raises(DataFormatError, match="holds no data files"):
        load_split(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    pq.write_table(pa.table({"pixels": pa.array([[0.1, 0.2]]), "target": [1]}),
                   tmp_path / "bad" / "part-0.parquet")
    with pytest.raises(DataFormatError, match=r"bad: field 'label': column missing"):
        load_split(tmp_path / "bad")
    (tmp_path / "short").mkdir()
    pq.write_table(pa.table({"pixels": pa.array([[0.1, 0.2]], pa.list_(pa.float32())),
                             "label": [1]}), tmp_path / "short" / "part-0.parquet")
    with pytest.raises(DataFormatError, match="field 'pixels': wrong pixel count .* Expected 784"):
        load_split(tmp_path / "short", expected_pixels=784)
    (tmp_path / "str").mkdir()
    pq.write_table(pa.table({"pixels": ["a"], "label": [1]}), tmp_path / "str" / "p.parquet")
    with pytest.raises(DataFormatError, match="Expected array<float>"):
        load_split(tmp_path / "str")


@pytest.mark.slow
def test_same_seed_gives_the_same_model(tmp_path):
    finals = []
    for run in ("s1", "s2"):
        cfg, base, request, ctx = make_job(tmp_path / run, run, {"epochs": 1, "seed": 5,
                                                                 "batch_size": 64})
        write_splits(base, sizes=(300, 60, 60))
        result = LocalTrainingRunner().run(request, ctx)
        finals.append({m["MetricName"]: m["Value"] for m in result["FinalMetricDataList"]})
    assert finals[0] == finals[1]


@pytest.mark.slow
def test_tensorflow_is_imported_while_the_job_trains(tmp_path):
    """The harness imports TensorFlow while the job's own process trains (the evaluation
    and the endpoint after it use it in this process); turned off, nothing is imported."""
    import subprocess
    import textwrap

    code = textwrap.dedent(f"""
        import sys
        sys.path[:0] = {[str(p) for p in (Path(__file__).parent, *Path(__file__).parents[1:3])]!r}
        from pathlib import Path
        from test_train import make_job, write_splits
        from local_runners.train import LocalTrainingRunner
        prewarm = sys.argv[1] == "on"
        cfg, base, request, ctx = make_job(Path(sys.argv[2]), "r9", {{"epochs": 1}})
        write_splits(base, sizes=(50, 20, 20))
        LocalTrainingRunner(prewarm=prewarm).run(request, ctx)
        print("TF", "tensorflow" in sys.modules)
    """)
    for mode, expected in (("on", "TF True"), ("off", "TF False")):
        out = subprocess.run([sys.executable, "-c", code, mode, str(tmp_path / mode)],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip().splitlines()[-1] == expected
