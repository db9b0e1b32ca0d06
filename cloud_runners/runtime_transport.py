"""The inference client's transport for SageMaker endpoints: sagemaker-runtime InvokeEndpoint.

Implements the tiny transport interface of ``harness.inference_client``
(``invoke(body, content_type) -> (body, content_type)``, ``close()``), so the client sends
the same TF Serving request bodies it sends to the local server. Errors become the same
``EndpointError`` the HTTP transports raise (status and the container's message kept).
"""
from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from harness.inference_client import JSON, EndpointError


class SageMakerRuntimeTransport:
    def __init__(self, session_client: Any, endpoint_name: str):
        """``session_client``: a boto3 ``sagemaker-runtime`` client."""
        self.client = session_client
        self.endpoint_name = endpoint_name

    @property
    def url(self) -> str:
        return f"sagemaker-runtime InvokeEndpoint {self.endpoint_name}"

    def invoke(self, body: bytes, content_type: str = JSON) -> tuple[bytes, str]:
        try:
            resp = self.client.invoke_endpoint(EndpointName=self.endpoint_name, Body=body,
                                               ContentType=content_type, Accept=JSON)
        except ClientError as e:
            err = e.response.get("Error", {})
            # ModelError carries the container's own status and message.
            status = e.response.get("OriginalStatusCode") or \
                e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            message = e.response.get("OriginalMessage") or err.get("Message") or str(e)
            raise EndpointError(f"endpoint {self.endpoint_name} answered "
                                f"{err.get('Code', 'an error')}"
                                + (f" (HTTP {status})" if status else "") + f": {message}",
                                status=int(status) if status else None,
                                server_message=message) from None
        except BotoCoreError as e:
            raise EndpointError(f"cannot reach endpoint {self.endpoint_name} "
                                f"({type(e).__name__}: {e})") from None
        payload = resp["Body"]
        data = payload.read() if hasattr(payload, "read") else bytes(payload)
        return data, resp.get("ContentType") or JSON

    def close(self) -> None:
        pass
