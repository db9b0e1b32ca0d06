"""One ``Endpoint`` interface for a served model, three implementations.

- ``embedded``               the embedded aiohttp server (``local_runners.serve_embedded``),
                             the default: no Docker, no cloud;
- ``tf-serving-container``   the official TensorFlow Serving image started through the
                             Docker SDK for Python (``local_runners.serve_container``);
- ``sagemaker``              a SageMaker real-time endpoint (``cloud_runners.
                             endpoint_sagemaker``), reached with InvokeEndpoint.

Every implementation hands out the same ``EndpointClient`` (``harness.inference_client``)
over its own transport, so callers send the same TF Serving request bodies and read the
same answers whichever one serves. Implementations are imported lazily by dotted path
(as ``harness.backends`` does for runners): choosing ``embedded`` never imports the
Docker SDK or boto3, and this module imports neither.
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.inference_client import EndpointClient
from harness.option_checks import check_host, check_number, check_percent, check_port
from harness.progress import Progress

# The local implementations, by ``deploy.server`` value. The SageMaker endpoint is made by
# the cloud backend's deploy runner (it needs the AWS session), not from this table.
LOCAL_SERVERS: dict[str, str] = {
    "embedded": "local_runners.serve_embedded:EmbeddedEndpoint",
    "tf-serving-container": "local_runners.serve_container:TfServingContainerEndpoint",
}

# How a client talks to an endpoint URL (the ``EndpointApi`` of a deploy step's output).
API_SAGEMAKER = "sagemaker"       # POST /invocations, GET /ping
API_TF_SERVING = "tf-serving"     # POST /v1/models/<name>:predict, GET /v1/models/<name>


@dataclass(frozen=True)
class ServingOptions:
    """What every local implementation is started with (from ``deploy`` config or the
    CreateModel request's SAGEMAKER_TFS_* environment); checked on construction
    (``ConfigError`` naming the option: a port above 65535, a poll interval <= 0, ...)."""

    host: str = "127.0.0.1"
    port: int = 0                              # 0: any free port
    max_batch_size: int | None = 128           # None or 0: batching off
    batch_timeout_micros: int = 1000
    capture_dir: str | None = None             # data capture (embedded server only)
    capture_percent: float = 100.0
    endpoint_name: str | None = None           # name in capture paths and descriptions
    variant_name: str = "AllTraffic"
    version_poll_seconds: float | None = None  # serve newer <version>/ dirs as they appear
    # (the TF Serving container always polls its model dir: once a second unless set)
    check_input_range: bool = True             # 400 for inputs outside the range the model
    # declares (<version>/assets.extra/input_ranges.json; embedded server only)

    def __post_init__(self) -> None:
        """Reject values that would misbehave later (ConfigError naming the option)."""
        check_host(self.host, "host")
        check_port(self.port, "port")
        check_number(self.max_batch_size, "max_batch_size", minimum=0, integer=True,
                     unset="batching off", note="0 turns batching off too")
        check_number(self.batch_timeout_micros, "batch_timeout_micros", minimum=0, integer=True)
        check_percent(self.capture_percent, "capture_percent")
        check_number(self.version_poll_seconds, "version_poll_seconds", minimum=0.01,
                     maximum=86400, unit="seconds", unset="no polling")
        if not isinstance(self.check_input_range, bool):
            raise ConfigError("check_input_range is not a boolean", field="check_input_range",
                              expected="true or false", got=self.check_input_range)
        if not self.max_batch_size:           # 0 means off, as deploy.max_batch_size says
            object.__setattr__(self, "max_batch_size", None)


class Endpoint(ABC):
    """A served model. ``start()`` returns once it answers; ``stop()`` releases everything
    it started (server, container, port). Usable as a context manager."""

    kind: str = ""

    def __init__(self, model_name: str):
        self.model_name = model_name

    @abstractmethod
    def start(self, timeout: float = 120.0, progress: Progress | None = None) -> "Endpoint":
        """Serve and wait until the model answers; raise HarnessError if it cannot.
        Long waits (an image pull, an endpoint being created) show on ``progress``."""

    @abstractmethod
    def stop(self) -> None:
        """Stop serving (idempotent). In-flight requests finish first where the
        implementation controls the server."""

    @abstractmethod
    def client(self) -> EndpointClient:
        """A new client for this endpoint (TF Serving request bodies in, predictions out)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """DescribeEndpoint-shaped facts: ``EndpointName``, ``EndpointStatus``, and for
        HTTP endpoints ``EndpointUrl`` + ``EndpointApi``; ``ServedModelName``,
        ``ModelVersion`` where known."""

    @property
    def url(self) -> str | None:
        """The HTTP base URL (None for endpoints reached through an API, e.g. SageMaker)."""
        return self.describe().get("EndpointUrl")

    def __enter__(self) -> "Endpoint":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class LocalEndpoint(Endpoint):
    """An endpoint serving a model dir on this machine (the ``LOCAL_SERVERS`` kinds)."""

    def __init__(self, model_dir: str | Path, model_name: str,
                 options: ServingOptions = ServingOptions()):
        super().__init__(model_name)
        self.model_dir = Path(model_dir)
        self.options = options
        self.endpoint_name = options.endpoint_name or model_name


def local_server_kinds() -> list[str]:
    return sorted(LOCAL_SERVERS)


def open_local_endpoint(kind: str, model_dir: str | Path, model_name: str,
                        options: ServingOptions = ServingOptions()) -> Endpoint:
    """An unstarted local endpoint of ``kind`` serving ``model_dir``
    (``<version>/saved_model.pb`` layout)."""
    try:
        target = LOCAL_SERVERS[kind]
    except KeyError:
        raise ConfigError(f"unknown model server {kind!r}", field="deploy.server",
                          expected="one of " + ", ".join(local_server_kinds())) from None
    module_name, cls_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(Path(model_dir), model_name, options)
