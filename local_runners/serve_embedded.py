"""The ``embedded`` Endpoint: the in-repo model server (``local_runners.model_server``).

No Docker and no cloud: the SavedModel is served from a background thread of this
process on 127.0.0.1, speaking both TF Serving's REST API and SageMaker's /ping,
/invocations. Clients go through ``/invocations`` (the SageMaker hosting contract), with
the same TF Serving request bodies as the other implementations. ``ServingOptions.
check_input_range`` switches the check of inputs against the model's declared ranges; the
server's other limits (timeouts, connection cap) keep their defaults
(``local_runners.serve_limits``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.endpoints import API_SAGEMAKER, LocalEndpoint, ServingOptions
from harness.inference_client import EndpointClient, HttpInvocationsTransport
from harness.progress import Progress
from local_runners.model_server import ModelServer
from local_runners.serve_capture import DataCapture


class EmbeddedEndpoint(LocalEndpoint):
    kind = "embedded"

    def __init__(self, model_dir: Path, model_name: str,
                 options: ServingOptions = ServingOptions()):
        super().__init__(model_dir, model_name, options)
        self.server: ModelServer | None = None

    def start(self, timeout: float = 120.0, progress: Progress | None = None
              ) -> "EmbeddedEndpoint":
        """Load the model (about a second: nothing to show on ``progress``) and listen."""
        if self.server is not None:
            return self
        o = self.options
        capture = (DataCapture(o.capture_dir, self.endpoint_name, o.variant_name,
                               o.capture_percent) if o.capture_dir else None)
        server = ModelServer(self.model_dir, self.model_name, host=o.host, port=o.port,
                             max_batch_size=o.max_batch_size,
                             batch_timeout_micros=o.batch_timeout_micros,
                             version_poll_seconds=o.version_poll_seconds,
                             data_capture=capture, check_input_range=o.check_input_range)
        server.start(wait=True, timeout=timeout)   # stops itself if the model fails to load
        self.server = server
        return self

    def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.stop()

    def client(self) -> EndpointClient:
        return EndpointClient(HttpInvocationsTransport(self._running().url), self.endpoint_name)

    def _running(self) -> ModelServer:
        if self.server is None:
            raise RuntimeError(f"endpoint {self.endpoint_name} is not started")
        return self.server

    def describe(self) -> dict[str, Any]:
        server = self.server
        out: dict[str, Any] = {"EndpointName": self.endpoint_name,
                               "EndpointStatus": "InService" if server else "OutOfService",
                               "ServedModelName": self.model_name, "Server": self.kind}
        if server is not None:
            out.update(EndpointUrl=server.url, EndpointApi=API_SAGEMAKER,
                       ModelVersion=server.model.version if server.model else None)
        return out

    @property
    def handlers_source(self) -> str | None:
        """Where the inference.py handlers came from (None: plain TF Serving bodies)."""
        handlers = self.server.handlers if self.server else None
        return handlers.source if handlers else None
