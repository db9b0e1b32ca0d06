"""The infer step on the local backend: the pipeline's infer request (the test split
through the deployed endpoint over HTTP, checked against the evaluation's accuracy)
executed by LocalInferRunner against an endpoint the hosting runners serve."""
from __future__ import annotations

import contextlib
import math
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline_support import deploy, hosting_requests, pipeline, request, run_document, \
    stage_context
from support import D, in_process, save_tiny_model

from harness import uris
from harness.config import PROJECT_ROOT
from harness.errors import DataError, HarnessError, StepFailed
from local_runners.infer import LocalInferRunner

N_TEST = 230
BATCH = 64
CFG, WF = pipeline(**{"infer.batch_size": BATCH})


class RecordingProgress:
    def __init__(self):
        self.tasks: dict[str, list] = {}

    @contextlib.contextmanager
    def task(self, description, total=None):
        done = [total, 0]
        self.tasks[description] = done

        class Task:
            def advance(self, amount=1):
                done[1] += amount

            def update(self, **kw):
                pass
        yield Task()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny model (with code/inference.py) served by the pipeline's hosting steps for
    the whole module; its version dir, for in-process answers."""
    root = tmp_path_factory.mktemp("served")
    version_dir = save_tiny_model(root / "model", seed=5)
    archive = root / "training" / "mnist-train-r1" / "output" / "model.tar.gz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(version_dir, arcname="1")
        tar.add(PROJECT_ROOT / "model" / "inference.py", arcname="code/inference.py")
    doc = run_document(uris.file_uri(root), Train={
        "ModelArtifacts": {"S3ModelArtifacts": uris.file_uri(archive)}})
    with contextlib.ExitStack() as resources:
        deployed = deploy(CFG, hosting_requests(WF, doc), resources)["endpoint"]
        yield {"endpoint": deployed, "version_dir": version_dir}


def write_test_split(base: Path, version_dir: Path) -> tuple[float, np.ndarray]:
    """A test split as the ETL writes it (two part files) under ``<base>/data/processed``,
    a third of its labels wrong; the in-process accuracy and predicted classes."""
    x = np.random.default_rng(4).random((N_TEST, D), dtype=np.float32)
    predicted = in_process(version_dir, x)["classes"]
    labels = predicted.copy()
    labels[::3] = (labels[::3] + 1) % 3  # a third wrong: accuracy is not trivially 1
    split = base / "data" / "processed" / "test"
    split.mkdir(parents=True)
    for i, rows in enumerate((slice(0, 100), slice(100, N_TEST))):
        table = pa.table({"pixels": pa.array(list(x[rows]), pa.list_(pa.float32())),
                          "label": pa.array(labels[rows], pa.int32())})
        pq.write_table(table, split / f"part-0000{i}-abc.snappy.parquet")
    (split / "_SUCCESS").write_text("")
    return float((predicted == labels).mean()), predicted


def infer_request(base: Path, endpoint: dict, expected_accuracy) -> dict:
    """The pipeline's infer request in a run in ``base`` whose gate read
    ``expected_accuracy`` from evaluation.json."""
    doc = run_document(uris.file_uri(base), Endpoint=endpoint,
                       Gate={"Body": {"metrics": {"accuracy": expected_accuracy}}})
    return request(WF, "infer", doc)


def test_infer_through_the_endpoint_equals_the_model_in_process(served, tmp_path):
    accuracy, predicted = write_test_split(tmp_path, served["version_dir"])
    req = infer_request(tmp_path, served["endpoint"], accuracy)
    assert req["EndpointName"] == "mnist-endpoint-r1" and req["BatchSize"] == BATCH
    assert req["TestDataUri"] == uris.join(uris.file_uri(tmp_path), "data", "processed", "test")
    assert req["ExpectedAccuracy"] == accuracy
    ctx = stage_context(CFG, "infer", progress=RecordingProgress())
    out = LocalInferRunner().run(req, ctx)

    assert out["Accuracy"] == accuracy and 0.5 < accuracy < 0.8
    assert out["Count"] == N_TEST and out["Correct"] == round(accuracy * N_TEST)
    assert out["Requests"] == math.ceil(N_TEST / BATCH) and out["MeanLatencyMs"] > 0
    assert out["EndpointUrl"] == served["endpoint"]["EndpointUrl"]
    assert out["EndpointUrl"].startswith("http://127.0.0.1:")
    assert out["EndpointName"] == "mnist-endpoint-r1"
    assert ctx.progress.tasks["infer"] == [N_TEST, N_TEST]
    assert out["PredictionsUri"] == uris.join(uris.file_uri(tmp_path), "inference",
                                              "predictions.parquet")
    written = pq.read_table(uris.local_path(out["PredictionsUri"]))
    assert written.column_names == ["label", "predicted", "probability"]
    assert written.column("predicted").to_pylist() == predicted.tolist()
    assert all(1 / 3 <= p <= 1 for p in written.column("probability").to_pylist())


def test_outputs_are_atomic_and_never_overwritten(served, tmp_path):
    accuracy, _ = write_test_split(tmp_path, served["version_dir"])
    req = infer_request(tmp_path, served["endpoint"], accuracy)
    LocalInferRunner().run(req, stage_context(CFG, "infer"))
    inference = tmp_path / "inference"
    before = sorted(p.name for p in inference.iterdir())
    assert before == ["predictions.parquet"]
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no temporary sibling
    with pytest.raises(HarnessError, match="refusing to overwrite"):
        LocalInferRunner().run(req, stage_context(CFG, "infer"))
    assert sorted(p.name for p in inference.iterdir()) == before
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_an_accuracy_other_than_the_evaluations_fails_and_writes_nothing(served, tmp_path):
    """The endpoint must answer as the evaluation of the same model on the same data did;
    anything else means it serves another model or transforms the input differently."""
    accuracy, _ = write_test_split(tmp_path, served["version_dir"])
    req = infer_request(tmp_path, served["endpoint"], accuracy + 1 / N_TEST)
    with pytest.raises(StepFailed) as err:
        LocalInferRunner().run(req, stage_context(CFG, "infer"))
    message = str(err.value)
    assert err.value.step == "infer" and "field 'ExpectedAccuracy'" in message
    assert f"({accuracy:.6f}) differs from the evaluation's ({accuracy + 1 / N_TEST:.6f})" \
        in message
    assert not (tmp_path / "inference").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_a_non_numeric_expected_accuracy_is_refused(served, tmp_path):
    write_test_split(tmp_path, served["version_dir"])
    req = infer_request(tmp_path, served["endpoint"], "0.9")
    with pytest.raises(HarnessError, match="field 'ExpectedAccuracy'"):
        LocalInferRunner().run(req, stage_context(CFG, "infer"))
    assert not (tmp_path / "inference").exists()


def test_without_an_expected_accuracy_any_accuracy_passes(served, tmp_path):
    accuracy, _ = write_test_split(tmp_path, served["version_dir"])
    req = infer_request(tmp_path, served["endpoint"], None)
    del req["ExpectedAccuracy"]
    assert LocalInferRunner().run(req, stage_context(CFG, "infer"))["Accuracy"] == accuracy


def test_a_missing_test_split_is_named(tmp_path):
    req = infer_request(tmp_path, {"EndpointName": "e", "EndpointUrl": "http://127.0.0.1:9"},
                        0.5)
    with pytest.raises(DataError, match="split directory not found"):
        LocalInferRunner().run(req, stage_context(CFG, "infer"))
    assert not (tmp_path / "inference").exists()
