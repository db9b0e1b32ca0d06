"""Hosting on the local backend: the pipeline's CreateModel, CreateEndpointConfig and
CreateEndpoint requests executed by LocalModelRunner, LocalEndpointConfigRunner and
LocalEndpointRunner with one run registry; the endpoint is a model server on 127.0.0.1."""
from __future__ import annotations

import contextlib
import copy
import glob
import io
import json
import os
import socket
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
from pipeline_support import deploy, hosting_requests, pipeline, run_document, stage_context
from support import D, call, in_process, save_tiny_model

from harness import uris
from harness.config import PROJECT_ROOT
from harness.errors import HarnessError, StepFailed
from harness.inference_client import client_for_endpoint
from local_runners import endpoint as endpoint_module
from local_runners.create_model import REGISTRY as MODELS
from local_runners.create_model import LocalModelRunner
from local_runners.endpoint import LocalEndpointRunner, serve_trio
from local_runners.endpoint_config import REGISTRY as CONFIGS
from local_runners.endpoint_config import LocalEndpointConfigRunner

CFG, WF = pipeline()


@pytest.fixture(scope="module")
def model_archive(tmp_path_factory) -> tuple[Path, Path]:
    """model.tar.gz as SageMaker training packs it, with code/inference.py."""
    root = tmp_path_factory.mktemp("trained")
    version_dir = save_tiny_model(root / "model", seed=5)
    archive = root / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(version_dir, arcname="1")
        tar.add(PROJECT_ROOT / "model" / "inference.py", arcname="code/inference.py")
    return archive, version_dir


def trained(base: Path, archive: Path | None, run_id: str = "r1") -> dict:
    """The run document of a run in ``base`` whose training job left ``archive``."""
    data = uris.file_uri(archive) if archive else uris.file_uri(base / "none" / "model.tar.gz")
    return run_document(uris.file_uri(base), run_id,
                        Train={"ModelArtifacts": {"S3ModelArtifacts": data}})


def served_model_dirs(endpoint_name: str) -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), f"mlharness-{endpoint_name}-*")))


def test_the_trio_serves_the_archive_on_localhost_until_the_run_ends(model_archive, tmp_path):
    archive, version_dir = model_archive
    requests = hosting_requests(WF, trained(tmp_path, archive))
    assert requests["model"]["PrimaryContainer"]["ModelDataUrl"] == uris.file_uri(archive)
    assert requests["endpoint-config"]["ProductionVariants"][0]["ModelName"] == "mnist-r1"
    assert requests["endpoint"]["EndpointConfigName"] == "mnist-config-r1"
    registry: dict = {}
    resources = contextlib.ExitStack()
    with resources:
        out = deploy(CFG, requests, resources, registry)
        assert out["model"] == {"ModelArn": "arn:aws:sagemaker:local:000000000000:model/mnist-r1"}
        assert out["endpoint-config"]["EndpointConfigArn"].endswith(
            ":endpoint-config/mnist-config-r1")
        assert registry[MODELS] == {"mnist-r1": requests["model"]}
        assert registry[CONFIGS] == {"mnist-config-r1": requests["endpoint-config"]}
        deployed = out["endpoint"]
        assert deployed["EndpointName"] == "mnist-endpoint-r1"
        assert deployed["EndpointConfigName"] == "mnist-config-r1"
        assert deployed["EndpointStatus"] == "InService"
        assert deployed["ModelName"] == "mnist-r1" and deployed["ModelVersion"] == 1
        assert deployed["ServedModelName"] == CFG.deploy.model_name
        assert deployed["ProductionVariants"][0]["VariantName"] == "AllTraffic"
        url = deployed["EndpointUrl"]
        assert url.startswith("http://127.0.0.1:")
        assert call(url, "GET", "/ping")[0] == 200
        assert call(url, "GET", f"/v1/models/{CFG.deploy.model_name}")[0] == 200
        x = np.random.default_rng(4).random((7, D), dtype=np.float32)
        with client_for_endpoint(deployed) as client:
            got = client.predict(x)
        expected = in_process(version_dir, x)
        assert got["classes"].tolist() == expected["classes"].tolist()
        np.testing.assert_allclose(got["probabilities"], expected["probabilities"], rtol=1e-6)
        assert served_model_dirs("mnist-endpoint-r1")

    # The run's resources closed: the endpoint is gone, its port free, its model removed.
    port = int(url.rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert not served_model_dirs("mnist-endpoint-r1")


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
def test_an_inconsistent_trio_names_the_field(model_archive, tmp_path, edit, field):
    requests = hosting_requests(WF, trained(tmp_path, model_archive[0]))
    bad = copy.deepcopy({"CreateModel": requests["model"],
                         "CreateEndpointConfig": requests["endpoint-config"],
                         "CreateEndpoint": requests["endpoint"]})
    edit(bad)
    ctx = stage_context(CFG, "endpoint")
    with ctx.resources, pytest.raises(HarnessError) as err:
        serve_trio(bad, ctx)
    assert f"field '{field}'" in str(err.value)


def test_an_endpoint_config_naming_an_unknown_model_fails(model_archive, tmp_path):
    requests = hosting_requests(WF, trained(tmp_path, model_archive[0]))
    registry: dict = {}
    LocalModelRunner().run(requests["model"], stage_context(CFG, "model", registry=registry))
    config = copy.deepcopy(requests["endpoint-config"])
    config["ProductionVariants"][0]["ModelName"] = "mnist-other"
    with pytest.raises(StepFailed) as err:
        LocalEndpointConfigRunner().run(config, stage_context(CFG, "endpoint-config",
                                                              registry=registry))
    message = str(err.value)
    assert err.value.step == "endpoint-config"
    assert "field 'ProductionVariants[0].ModelName'" in message
    assert "mnist-r1" in message and "mnist-other" in message
    assert CONFIGS not in registry  # nothing registered


def test_an_endpoint_naming_an_unknown_config_fails(model_archive, tmp_path):
    requests = hosting_requests(WF, trained(tmp_path, model_archive[0]))
    registry: dict = {}
    for step, runner in (("model", LocalModelRunner), ("endpoint-config",
                                                       LocalEndpointConfigRunner)):
        runner().run(requests[step], stage_context(CFG, step, registry=registry))
    endpoint = {**requests["endpoint"], "EndpointConfigName": "mnist-config-other"}
    ctx = stage_context(CFG, "endpoint", registry=registry)
    with ctx.resources, pytest.raises(StepFailed) as err:
        LocalEndpointRunner().run(endpoint, ctx)
    message = str(err.value)
    assert err.value.step == "endpoint" and "field 'EndpointConfigName'" in message
    assert "mnist-config-r1" in message and "mnist-config-other" in message
    # An empty registry (the earlier steps did not run): the same error, "none" known.
    ctx = stage_context(CFG, "endpoint")
    with ctx.resources, pytest.raises(StepFailed, match="field 'EndpointConfigName'.*none"):
        LocalEndpointRunner().run(requests["endpoint"], ctx)


def test_a_model_name_is_created_once_per_run(model_archive, tmp_path):
    requests = hosting_requests(WF, trained(tmp_path, model_archive[0]))
    registry: dict = {}
    LocalModelRunner().run(requests["model"], stage_context(CFG, "model", registry=registry))
    with pytest.raises(StepFailed, match="a model named mnist-r1 already exists") as err:
        LocalModelRunner().run(requests["model"], stage_context(CFG, "model",
                                                                registry=registry))
    assert "field 'ModelName'" in str(err.value)


def test_replay_re_registers_what_the_endpoint_serves(model_archive, tmp_path):
    """A resumed run reuses the model and endpoint config steps: their replay registers
    the requests again, and the endpoint step serves from them."""
    requests = hosting_requests(WF, trained(tmp_path, model_archive[0]))
    earlier: dict = {}
    outputs = {s: r().run(requests[s], stage_context(CFG, s, registry=earlier))
               for s, r in (("model", LocalModelRunner),
                            ("endpoint-config", LocalEndpointConfigRunner))}
    registry: dict = {}
    for s, r in (("model", LocalModelRunner), ("endpoint-config", LocalEndpointConfigRunner)):
        r().replay(requests[s], outputs[s], stage_context(CFG, s, registry=registry))
    assert registry == earlier
    ctx = stage_context(CFG, "endpoint", registry=registry)
    with ctx.resources:
        deployed = LocalEndpointRunner().run(requests["endpoint"], ctx)
        assert deployed["EndpointStatus"] == "InService" and deployed["ModelName"] == "mnist-r1"
        assert call(deployed["EndpointUrl"], "GET", "/ping")[0] == 200


def test_a_missing_or_unsafe_archive_is_refused(tmp_path):
    # Missing: CreateModel checks ModelDataUrl, as SageMaker does.
    requests = hosting_requests(WF, trained(tmp_path, None))
    with pytest.raises(StepFailed, match="the model data does not exist") as err:
        LocalModelRunner().run(requests["model"], stage_context(CFG, "model"))
    assert "field 'PrimaryContainer.ModelDataUrl'" in str(err.value)
    # Unsafe: a member escaping the extraction folder; nothing is served or left.
    evil = tmp_path / "model.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        data = b"x"
        info = tarfile.TarInfo("../escaped.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    requests = hosting_requests(WF, trained(tmp_path, evil, "r2"))
    resources = contextlib.ExitStack()
    with resources, pytest.raises(HarnessError, match="unsafe member"):
        deploy(CFG, requests, resources, run_id="r2")
    assert not (Path(tempfile.gettempdir()) / "escaped.txt").exists()
    assert not served_model_dirs("mnist-endpoint-r2")


def test_batching_and_data_capture_come_from_the_requests(model_archive, tmp_path,
                                                          monkeypatch):
    """SAGEMAKER_TFS_* of CreateModel and DataCaptureConfig of the endpoint config become
    the local server's options; every request is captured as SageMaker captures it."""
    cfg, wf = pipeline(**{"deploy.data_capture_percent": 100, "deploy.max_batch_size": 16,
                          "deploy.batch_timeout_micros": 2000})
    requests = hosting_requests(wf, trained(tmp_path, model_archive[0], "cap1"))
    env = requests["model"]["PrimaryContainer"]["Environment"]
    assert env["SAGEMAKER_TFS_ENABLE_BATCHING"] == "true"
    assert env["SAGEMAKER_TFS_MAX_BATCH_SIZE"] == "16"
    capture_uri = uris.join(uris.file_uri(tmp_path), "capture")
    capture = requests["endpoint-config"]["DataCaptureConfig"]
    assert capture["DestinationS3Uri"] == capture_uri and capture["EnableCapture"]

    opened = []
    real = endpoint_module.open_local_endpoint

    def recording(kind, model_dir, model_name, options):
        opened.append(options)
        return real(kind, model_dir, model_name, options)

    monkeypatch.setattr(endpoint_module, "open_local_endpoint", recording)
    x = np.random.default_rng(1).random((230, D), dtype=np.float32)
    resources = contextlib.ExitStack()
    with resources:
        deployed = deploy(cfg, requests, resources, run_id="cap1")["endpoint"]
        with client_for_endpoint(deployed) as client:
            client.predict_batches(x, 100)
    (options,) = opened
    assert options.max_batch_size == 16 and options.batch_timeout_micros == 2000
    assert options.capture_dir == str(tmp_path / "capture") and options.capture_percent == 100
    assert options.host == "127.0.0.1" and options.endpoint_name == "mnist-endpoint-cap1"

    files = sorted((tmp_path / "capture").rglob("*.jsonl"))
    assert files, "no capture file written"
    rel = files[0].relative_to(tmp_path / "capture").parts
    assert rel[:2] == ("mnist-endpoint-cap1", "AllTraffic") and len(rel) == 7  # yyyy/mm/dd/hh
    records = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert len(records) == 3  # ceil(230 / 100) requests, every one captured
    assert {r["captureData"]["endpointInput"]["mode"] for r in records} == {"INPUT"}
    assert {r["captureData"]["endpointOutput"]["mode"] for r in records} == {"OUTPUT"}


def test_without_batching_the_server_does_not_batch(model_archive, tmp_path, monkeypatch):
    cfg, wf = pipeline(**{"deploy.max_batch_size": 0, "deploy.data_capture_percent": 0})
    requests = hosting_requests(wf, trained(tmp_path, model_archive[0], "nb1"))
    assert "SAGEMAKER_TFS_ENABLE_BATCHING" not in \
        requests["model"]["PrimaryContainer"]["Environment"]
    assert "DataCaptureConfig" not in requests["endpoint-config"]
    opened = []
    real = endpoint_module.open_local_endpoint
    monkeypatch.setattr(endpoint_module, "open_local_endpoint",
                        lambda *a: opened.append(a[3]) or real(*a))
    resources = contextlib.ExitStack()
    with resources:
        deploy(cfg, requests, resources, run_id="nb1")
    assert opened[0].max_batch_size is None and opened[0].capture_dir is None
