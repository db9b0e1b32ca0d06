"""The hosting bridge: an emulated SageMaker ``CreateEndpoint`` serves model.tar.gz from the
emulated S3 with the local model server, and sagemaker-runtime ``InvokeEndpoint`` reaches
it (through the project's own ``SageMakerRuntimeTransport``)."""
from __future__ import annotations

import json
import socket

import numpy as np
import pytest
from hosting_support import host as _host
from hosting_support import tiny_model_archive
from hosting_support import wait_for_endpoint as _wait
from support import in_process

from cloud_runners import aws
from cloud_runners.emulator.hosting_bridge import HostingBridge
from cloud_runners.emulator.server import EmbeddedEmulator
from cloud_runners.runtime_transport import SageMakerRuntimeTransport
from harness.inference_client import EndpointError

BUCKET = "emu-hosting"


@pytest.fixture(scope="module")
def tiny_archive(tmp_path_factory):
    return tiny_model_archive(tmp_path_factory.mktemp("tiny"))


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
