"""The inference client's transport for SageMaker endpoints (InvokeEndpoint), with botocore's
Stubber: the body and content type sent, a ModelError carrying the container's status."""
import io

import boto3
import numpy as np
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from cloud_support import REGION

from cloud_runners.runtime_transport import SageMakerRuntimeTransport
from harness.inference_client import EndpointClient, EndpointError

BODY = b'{"instances": [[0.5, 0.25]]}'
ANSWER = b'{"predictions": [{"probabilities": [0.1, 0.9], "classes": 1}]}'


def _streaming(data: bytes):
    return StreamingBody(io.BytesIO(data), len(data))


@pytest.fixture
def runtime():
    return boto3.client("sagemaker-runtime", region_name=REGION, aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def test_sends_the_body_and_content_type_and_keeps_the_containers_error(runtime):
    with Stubber(runtime) as stub:
        stub.add_response("invoke_endpoint",
                          {"Body": _streaming(ANSWER), "ContentType": "application/json"},
                          {"EndpointName": "ep-1", "Body": BODY,
                           "ContentType": "application/json", "Accept": "application/json"})
        stub.add_client_error("invoke_endpoint", service_error_code="ModelError",
                              service_message="Received client error (400) from primary",
                              http_status_code=424,
                              modeled_fields={"OriginalStatusCode": 400,
                                              "OriginalMessage": "bad instances"})
        transport = SageMakerRuntimeTransport(runtime, "ep-1")
        assert transport.url == "sagemaker-runtime InvokeEndpoint ep-1"
        assert transport.invoke(BODY, "application/json") == (ANSWER, "application/json")
        with pytest.raises(EndpointError, match="ModelError") as e:
            transport.invoke(BODY, "application/json")
        assert e.value.status == 400 and e.value.server_message == "bad instances"
        stub.assert_no_pending_responses()


def test_the_endpoint_client_predicts_through_it(runtime):
    client = EndpointClient(SageMakerRuntimeTransport(runtime, "ep-1"))
    with Stubber(runtime) as stub:
        stub.add_response("invoke_endpoint",
                          {"Body": _streaming(ANSWER), "ContentType": "application/json"})
        out = client.predict(np.array([[0.5, 0.25]], np.float32))
    assert out["classes"].tolist() == [1]
