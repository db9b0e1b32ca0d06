"""The hosting bridge: an emulated SageMaker ``CreateEndpoint`` serves model.tar.gz from the
emulated S3 with the local model server, and sagemaker-runtime ``InvokeEndpoint`` reaches
it (through the project's own ``SageMakerRuntimeTransport``)."""
from __future__ import annotations

import json
import socket
import tarfile
import time

import numpy as np
import pytest
from support import in_process, save_tiny_model

from cloud_runners import aws
from cloud_runners.emulator.hosting_bridge import HostingBridge
from cloud_runners.emulator.server import EmbeddedEmulator
from cloud_runners.runtime_transport import SageMakerRuntimeTransport
from harness.inference_client import EndpointError

BUCKET = "emu-hosting"
ROLE = "arn:aws:iam::123456789012:role/mlharness-sagemaker"


@pytest.fixture(scope="module")
def tiny_archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    version_dir = save_tiny_model(root / "model", seed=3)
    archive = root / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(version_dir, arcname="1")
    return archive, version_dir


def _host(emu, name: str, model_data_url: str) -> None:
    sm = emu.client("sagemaker")
    sm.create_model(ModelName=f"{name}-model", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": "img-serve", "ModelDataUrl": model_data_url,
        "Environment": {"SAGEMAKER_TFS_DEFAULT_MODEL_NAME": "tiny"}})
    sm.create_endpoint_config(EndpointConfigName=f"{name}-config", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": f"{name}-model",
        "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")


def _wait(emu, name: str, timeout_s: float = 60) -> list[str]:
    sm = emu.client("sagemaker")
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = sm.describe_endpoint(EndpointName=name)["EndpointStatus"]
        if not seen or seen[-1] != status:
            seen.append(status)
        if status in ("InService", "Failed"):
            return seen
        time.sleep(0.05)
    raise AssertionError(f"endpoint {name} still {seen[-1]} after {timeout_s} s")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_endpoint_serves_the_archive_through_invoke_endpoint(tmp_path, tiny_archive):
    archive, version_dir = tiny_archive
    bridge = HostingBridge(workdir=tmp_path)
    with EmbeddedEmulator(bridge=bridge) as emu:
        s3 = emu.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        uri = aws.upload_file(s3, archive, f"s3://{BUCKET}/training/tj/output/model.tar.gz")
        _host(emu, "ep-1", uri)
        # Creating until the server answers (under load the first describe may already
        # see it InService), never anything else.
        seen = _wait(emu, "ep-1")
        assert seen[-1] == "InService" and set(seen) <= {"Creating", "InService"}, seen
        sm = emu.client("sagemaker")
        arn = sm.describe_endpoint(EndpointName="ep-1")["EndpointArn"]
        server = bridge.server_for(arn)
        assert server is not None and server.host == "127.0.0.1" and server.model_name == "tiny"

        x = np.random.default_rng(1).random((5, 12), dtype=np.float32)
        transport = SageMakerRuntimeTransport(emu.client("sagemaker-runtime"), "ep-1")
        body, ctype = transport.invoke(json.dumps({"instances": x.tolist()}).encode())
        assert ctype.startswith("application/json")
        predictions = json.loads(body)["predictions"]
        expected = in_process(version_dir, x)
        assert [p["classes"] for p in predictions] == expected["classes"].tolist()
        np.testing.assert_allclose([p["probabilities"] for p in predictions],
                                   expected["probabilities"], rtol=1e-5, atol=1e-6)

        # The model server's 4xx is SageMaker's ModelError, its status and message kept.
        with pytest.raises(EndpointError) as err:
            transport.invoke(b'{"instances": "not a tensor"}')
        assert err.value.status == 400 and "ModelError" in str(err.value), str(err.value)
        assert "must be a list of instances" in err.value.server_message
        with pytest.raises(EndpointError, match="ValidationError.*no-such-endpoint"):
            SageMakerRuntimeTransport(emu.client("sagemaker-runtime"),
                                      "no-such-endpoint").invoke(b"{}")

        port = server.port
        assert _port_open(port)
        sm.delete_endpoint(EndpointName="ep-1")
        assert bridge.server_for(arn) is None and not _port_open(port)
    assert not list(tmp_path.iterdir())  # the unpacked model is gone too


def test_endpoint_without_its_model_archive_fails_with_the_reason(tmp_path):
    with EmbeddedEmulator(bridge=HostingBridge(workdir=tmp_path)) as emu:
        emu.client("s3").create_bucket(Bucket=BUCKET)
        missing = f"s3://{BUCKET}/training/none/output/model.tar.gz"
        _host(emu, "ep-2", missing)
        assert _wait(emu, "ep-2")[-1] == "Failed"
        described = emu.client("sagemaker").describe_endpoint(EndpointName="ep-2")
        assert "model.tar.gz" in described["FailureReason"], described["FailureReason"]
        with pytest.raises(EndpointError, match="not in service"):
            SageMakerRuntimeTransport(emu.client("sagemaker-runtime"), "ep-2").invoke(b"{}")
