"""One Endpoint interface: the embedded server and a SageMaker endpoint (on the embedded
emulator) give the same client and the same answers for the same images."""
from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from support import D, in_process, port_is_free, predicted_classes, save_tiny_model

from harness.config import PROJECT_ROOT
from harness.endpoints import ServingOptions, open_local_endpoint
from harness.errors import ConfigError
from harness.inference_client import client_for_endpoint

ROOT = PROJECT_ROOT
X = np.random.default_rng(7).random((6, D), dtype=np.float32)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("endpoint-model")
    version_dir = save_tiny_model(root / "model", seed=11)
    return root / "model", version_dir



def _assert_same_answers(result: dict, version_dir: Path) -> None:
    expected = in_process(version_dir, X)
    assert result["classes"].tolist() == expected["classes"].tolist()
    np.testing.assert_allclose(result["probabilities"], expected["probabilities"],
                               rtol=1e-5, atol=1e-6)


def test_embedded_endpoint_serves_describes_and_stops(model):
    model_dir, version_dir = model
    ep = open_local_endpoint("embedded", model_dir, "tiny",
                             ServingOptions(endpoint_name="ep-embedded"))
    assert ep.describe()["EndpointStatus"] == "OutOfService"
    with ep:
        described = ep.describe()
        assert described["EndpointStatus"] == "InService"
        assert described["EndpointUrl"].startswith("http://127.0.0.1:")
        assert described["ModelVersion"] == 1 and described["ServedModelName"] == "tiny"
        with ep.client() as client:
            _assert_same_answers(client.predict(X), version_dir)
        # what a deploy step's output feeds the infer step: the same answers again
        with client_for_endpoint(described) as client:
            _assert_same_answers(client.predict(X), version_dir)
        port = int(described["EndpointUrl"].rsplit(":", 1)[1])
        assert not port_is_free(port)
    assert port_is_free(port), "the port is still taken after stop()"
    ep.stop()  # idempotent


def test_a_tf_serving_description_gets_the_tf_serving_rest_client(model):
    model_dir, version_dir = model
    with open_local_endpoint("embedded", model_dir, "tiny") as ep:
        described = {**ep.describe(), "EndpointApi": "tf-serving"}
        with client_for_endpoint(described) as client:
            assert client.transport.path == "/v1/models/tiny:predict"
            _assert_same_answers(client.predict(X), version_dir)


def test_unknown_server_kind_names_the_choices(model):
    with pytest.raises(ConfigError) as err:
        open_local_endpoint("triton", model[0], "tiny")
    assert err.value.field == "deploy.server"
    assert "embedded" in str(err.value) and "tf-serving-container" in str(err.value)


def test_the_interface_imports_neither_docker_nor_boto3():
    code = ("import sys, harness.endpoints, local_runners.serve_embedded; "
            "bad = [m for m in ('docker', 'boto3', 'botocore') if m in sys.modules]; "
            "sys.exit(str(bad) if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.slow
def test_sagemaker_endpoint_creates_answers_the_same_and_deletes(model, tmp_path, monkeypatch,
                                                                 capsys):
    from cloud_runners import aws
    from cloud_runners.emulator.hosting_bridge import HostingBridge
    from cloud_runners.emulator.server import EmbeddedEmulator
    from cloud_runners.endpoint_sagemaker import SageMakerEndpoint

    model_dir, version_dir = model
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(version_dir, arcname="1")
    (tmp_path / "bridge").mkdir()
    with EmbeddedEmulator(bridge=HostingBridge(workdir=tmp_path / "bridge")) as emu:
        s3, sm = emu.client("s3"), emu.client("sagemaker")
        s3.create_bucket(Bucket="ep-test")
        uri = aws.upload_file(s3, archive, "s3://ep-test/model.tar.gz")
        trio = {
            "CreateModel": {"ModelName": "m1", "ExecutionRoleArn":
                            "arn:aws:iam::123456789012:role/sm", "PrimaryContainer": {
                                "Image": "img", "ModelDataUrl": uri,
                                "Environment": {"SAGEMAKER_TFS_DEFAULT_MODEL_NAME": "tiny"}}},
            "CreateEndpointConfig": {"EndpointConfigName": "c1", "ProductionVariants": [{
                "VariantName": "AllTraffic", "ModelName": "m1", "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large"}]},
            "CreateEndpoint": {"EndpointName": "ep-1", "EndpointConfigName": "c1"}}
        seen: list[str] = []
        ep = SageMakerEndpoint("ep-1", sm, emu.client("sagemaker-runtime"), requests=trio,
                               poll_seconds=0.05, on_status=seen.append)
        ep.start(timeout=60)
        assert seen[-1] == "InService"
        described = ep.describe()
        assert described["EndpointApi"] == "sagemaker-runtime" and "EndpointUrl" not in described
        assert described["ServedModelName"] == "tiny" and described["ModelName"] == "m1"
        with ep.client() as client:
            _assert_same_answers(client.predict(X), version_dir)

        # `harness predict --sagemaker-endpoint` goes through the same client
        from harness.cli import main
        np.save(tmp_path / "x.npy", X)
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.setenv(key, "testing")
        capsys.readouterr()
        assert main(["predict", str(tmp_path / "x.npy"), "--sagemaker-endpoint", "ep-1",
                     "--model-name", "tiny", "--runs-dir", str(tmp_path / "runs"),
                     "--set", f"cloud.endpoint_url={emu.endpoint_url}"]) == 0
        assert predicted_classes(capsys.readouterr().out) == \
            in_process(version_dir, X)["classes"].tolist()

        # attaching to an existing endpoint: start() only checks it; stop() leaves it
        attached = SageMakerEndpoint("ep-1", sm, emu.client("sagemaker-runtime"),
                                     poll_seconds=0.05).start(timeout=10)
        attached.stop()
        assert sm.describe_endpoint(EndpointName="ep-1")["EndpointStatus"] == "InService"

        ep.stop()
        assert sm.list_endpoints()["Endpoints"] == []
        assert sm.list_endpoint_configs()["EndpointConfigs"] == []
        assert sm.list_models()["Models"] == []
        ep.stop()
