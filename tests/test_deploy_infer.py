"""deploy + infer on the local backend: the SageMaker hosting requests, executed for real."""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import socket
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import D, call, in_process, save_tiny_model

from harness import uris
from harness.config import PipelineConfig
from harness.errors import DataError, HarnessError
from harness.requests import Layout, Names, hosting_requests, infer_request
from harness.stages import StageContext
from local_runners.deploy import LocalDeployRunner
from local_runners.infer import LocalInferRunner

PROJECT = Path(__file__).resolve().parent.parent
N_TEST = 230


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


def make_ctx(cfg: PipelineConfig, step: str) -> StageContext:
    return StageContext(run_id="test-run", step=step, config=cfg,
                        log=logging.getLogger(f"test.{step}"), progress=RecordingProgress(),
                        announce=lambda msg: None)


@pytest.fixture(scope="module")
def model_archive(tmp_path_factory) -> tuple[Path, Path]:
    """model.tar.gz as SageMaker training packs it, with code/inference.py."""
    root = tmp_path_factory.mktemp("trained")
    version_dir = save_tiny_model(root / "model", seed=5)
    archive = root / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(version_dir, arcname="1")
        tar.add(PROJECT / "model" / "inference.py", arcname="code/inference.py")
    return archive, version_dir


@pytest.fixture()
def layout(tmp_path, model_archive) -> Layout:
    """A run layout whose test split is Spark-style Parquet part files."""
    layout = Layout(uris.file_uri(tmp_path / "run"))
    x = np.random.default_rng(4).random((N_TEST, D), dtype=np.float32)
    predicted = in_process(model_archive[1], x)["classes"]
    labels = predicted.copy()
    labels[::3] = (labels[::3] + 1) % 3  # a third wrong: accuracy is not trivially 1
    split = uris.local_path(layout.processed_split("test"))
    split.mkdir(parents=True)
    for i, rows in enumerate((slice(0, 100), slice(100, N_TEST))):
        table = pa.table({"pixels": pa.array(list(x[rows]), pa.list_(pa.float32())),
                          "label": pa.array(labels[rows], pa.int32())})
        pq.write_table(table, split / f"part-0000{i}-abc.snappy.parquet")
    (split / "_SUCCESS").write_text("")
    return layout


def _expected_accuracy(version_dir: Path, layout: Layout) -> tuple[float, np.ndarray]:
    table = pq.read_table(uris.local_path(layout.processed_split("test")))
    x = np.array(table.column("pixels").to_pylist(), np.float32)
    y = np.array(table.column("label").to_pylist())
    predicted = in_process(version_dir, x)["classes"]
    return float((predicted == y).mean()), predicted


def test_deploy_serves_the_archive_and_infer_scores_through_it(model_archive, layout):
    archive, version_dir = model_archive
    cfg = PipelineConfig()
    names = Names(cfg, "test-run")
    request = hosting_requests(cfg, names, uris.file_uri(archive), image="tf-inference:2.19")
    deploy_ctx = make_ctx(cfg, "deploy")

    with deploy_ctx.resources:
        deployed = LocalDeployRunner().run(request, deploy_ctx)
        assert deployed["EndpointName"] == names.endpoint
        assert deployed["EndpointConfigName"] == names.endpoint_config
        assert deployed["EndpointStatus"] == "InService"
        assert deployed["ModelName"] == names.model and deployed["ModelVersion"] == 1
        assert deployed["ProductionVariants"][0]["VariantName"] == "AllTraffic"
        url = deployed["EndpointUrl"]
        assert url.startswith("http://127.0.0.1:")
        assert call(url, "GET", "/ping")[0] == 200
        assert call(url, "GET", f"/v1/models/{cfg.deploy.model_name}")[0] == 200

        infer_ctx = make_ctx(cfg, "infer")
        req = infer_request(cfg, layout, deployed)
        req["BatchSize"] = 64
        out = LocalInferRunner().run(req, infer_ctx)

        accuracy, predicted = _expected_accuracy(version_dir, layout)
        assert out["Accuracy"] == accuracy and 0.5 < accuracy < 0.8
        assert out["Count"] == N_TEST and out["Correct"] == round(accuracy * N_TEST)
        assert out["Requests"] == 4 and out["MeanLatencyMs"] > 0  # ceil(230 / 64)
        assert out["EndpointUrl"] == url
        assert infer_ctx.progress.tasks["infer"] == [N_TEST, N_TEST]
        written = pq.read_table(uris.local_path(out["PredictionsUri"]))
        assert written.column_names == ["label", "predicted", "probability"]
        assert written.column("predicted").to_pylist() == predicted.tolist()
        assert all(1 / 3 <= p <= 1 for p in written.column("probability").to_pylist())

        with pytest.raises(HarnessError, match="refusing to overwrite"):
            LocalInferRunner().run(req, make_ctx(cfg, "infer"))

    # The run's resources closed: the endpoint is gone and its port is free.
    port = int(url.rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


@pytest.mark.parametrize("edit, field", [
    (lambda r: r["CreateEndpointConfig"]["ProductionVariants"][0].update(ModelName="other"),
     "CreateEndpointConfig.ProductionVariants[0].ModelName"),
    (lambda r: r["CreateEndpoint"].update(EndpointConfigName="other-config"),
     "CreateEndpoint.EndpointConfigName"),
    (lambda r: r["CreateModel"]["PrimaryContainer"].pop("ModelDataUrl"),
     "CreateModel.PrimaryContainer.ModelDataUrl"),
    (lambda r: r["CreateEndpointConfig"].update(ProductionVariants=[]),
     "CreateEndpointConfig.ProductionVariants"),
])
def test_inconsistent_hosting_requests_name_the_field(model_archive, edit, field):
    cfg = PipelineConfig()
    request = hosting_requests(cfg, Names(cfg, "test-run"), uris.file_uri(model_archive[0]),
                               image="tf-inference:2.19")
    bad = copy.deepcopy(request)
    edit(bad)
    ctx = make_ctx(cfg, "deploy")
    with ctx.resources, pytest.raises(HarnessError) as err:
        LocalDeployRunner().run(bad, ctx)
    assert f"field '{field}'" in str(err.value)


def test_unsafe_or_missing_archive_is_refused(tmp_path):
    evil = tmp_path / "model.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        data = b"x"
        info = tarfile.TarInfo("../escaped.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    cfg = PipelineConfig()
    for archive, message in ((evil, "unsafe member"), (tmp_path / "none.tar.gz", "not found")):
        request = hosting_requests(cfg, Names(cfg, "r"), uris.file_uri(archive), image="img")
        ctx = make_ctx(cfg, "deploy")
        with ctx.resources, pytest.raises(HarnessError, match=message):
            LocalDeployRunner().run(request, ctx)
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_infer_reports_a_missing_test_split(tmp_path):
    cfg = PipelineConfig()
    layout = Layout(uris.file_uri(tmp_path))
    req = infer_request(cfg, layout, {"EndpointName": "e", "EndpointUrl": "http://127.0.0.1:9"})
    with pytest.raises(DataError, match="split directory not found"):
        LocalInferRunner().run(req, make_ctx(cfg, "infer"))


def test_endpoint_config_data_capture_and_batching_are_executed_locally(model_archive, layout):
    archive, _ = model_archive
    cfg = PipelineConfig()
    cfg.deploy.data_capture_percent = 100
    cfg.deploy.max_batch_size = 16
    names = Names(cfg, "capture-run")
    request = hosting_requests(cfg, names, uris.file_uri(archive), image="tf-inference:2.19",
                               capture_uri=layout.capture)
    env = request["CreateModel"]["PrimaryContainer"]["Environment"]
    assert env["SAGEMAKER_TFS_ENABLE_BATCHING"] == "true"
    assert env["SAGEMAKER_TFS_MAX_BATCH_SIZE"] == "16"
    capture = request["CreateEndpointConfig"]["DataCaptureConfig"]
    assert capture["DestinationS3Uri"] == layout.capture and capture["EnableCapture"]
    ctx = make_ctx(cfg, "deploy")
    with ctx.resources:
        deployed = LocalDeployRunner().run(request, ctx)
        req = infer_request(cfg, layout, deployed)
        req["BatchSize"] = 100
        LocalInferRunner().run(req, make_ctx(cfg, "infer"))
    files = sorted(uris.local_path(layout.capture).rglob("*.jsonl"))
    assert files, "no capture file written"
    rel = files[0].relative_to(uris.local_path(layout.capture)).parts
    assert rel[:2] == (names.endpoint, "AllTraffic") and len(rel) == 7  # yyyy/mm/dd/hh/file
    records = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert len(records) == 3  # ceil(230 / 100) requests, every one captured
    assert {r["captureData"]["endpointInput"]["mode"] for r in records} == {"INPUT"}
    assert {r["captureData"]["endpointOutput"]["mode"] for r in records} == {"OUTPUT"}
