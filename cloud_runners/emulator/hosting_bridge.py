"""The hosting bridge: an emulated SageMaker endpoint is the local model server.

``HostingBridge.install(emulator)`` patches two things of moto (its server runs in this
process), both undone by the function it returns:

- ``SageMakerModelBackend.create_endpoint`` is wrapped. moto creates every endpoint
  ``InService`` at once; the bridge keeps moto's endpoint object (``DescribeEndpoint``
  is its camel-cased ``__dict__``, ``None`` values left out) and sets its attributes:
  ``EndpointStatus`` ``Creating`` at once, while a worker thread downloads the model's
  ``PrimaryContainer.ModelDataUrl`` (``model.tar.gz``) from the emulated S3, unpacks it
  and starts ``local_runners.model_server.ModelServer`` on 127.0.0.1 and a free port,
  with the options ``local_runners.endpoint`` derives from the container's environment
  (``SAGEMAKER_TFS_DEFAULT_MODEL_NAME``, batching); then ``InService``, or ``Failed``
  with the error as ``FailureReason``.
  ``SageMakerModelBackend.delete_endpoint`` is wrapped too: it stops that server.
- ``SageMakerRuntimeResponse.invoke_endpoint`` (moto answers ``InvokeEndpoint`` with
  canned data) is replaced: the request body, ``Content-Type``, ``Accept`` and custom
  attributes go to the server's ``POST /invocations``, its body and content type come
  back. A non-2xx answer of the model server is SageMaker's ``ModelError`` (HTTP 424,
  ``OriginalStatusCode``/``OriginalMessage``); an unknown endpoint, or one not
  ``InService``, is a ``ValidationError``, as on AWS.

``DataCaptureConfig`` is executed (``capture_delivery``): with ``EnableCapture`` (absent =
on), each 2xx answer of ``_invoke`` is sampled (``InitialSamplingPercentage``; seeded by
``capture_seed``) and buffered as a record of SageMaker's capture format with the sections
``CaptureOptions`` asks for; a worker delivers the buffers to the emulated S3
(``<DestinationS3Uri>/<EndpointName>/<VariantName>/yyyy/mm/dd/hh/<mm-ss-mmm>-<uuid>.jsonl``)
every ``capture_flush_s`` s (``CAPTURE_FLUSH_S``), at DeleteEndpoint and at uninstall;
``flush_captures()`` delivers now. A failed delivery is logged and counted
(``captures_dropped``), never an InvokeEndpoint error; a ModelError is not captured.
Not emulated: ``CaptureContentTypeHeader`` (JSON and CSV are captured as text, the rest
base64), ``KmsKeyId``, ``inferenceId``, UpdateEndpoint, retrying a failed delivery.

What the patch relies on in moto is fingerprinted in ``FINGERPRINTS``; ``check()`` names
what changed and ``install()`` refuses to patch then
(``tests/cloud_runners/emulator/test_hosting_bridge.py``).
"""
from __future__ import annotations

import http.client
import json
import logging
import shutil
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from cloud_runners.emulator.moto_gaps import check_fingerprints, resolve_attr
from cloud_runners.emulator.bridge import Bridge, runner_error, utcnow
from cloud_runners.emulator.capture_delivery import CAPTURE_FLUSH_S, EndpointCapture
from cloud_runners.emulator.workers import STOP_GRACE_S
from cloud_runners.s3_staging import OBJECT, S3Staging
from harness.config import PipelineConfig
from harness.errors import HarnessError

LOG = logging.getLogger("mlharness.emulator.hosting")

_MODELS = "moto.sagemaker.models"
_RUNTIME = "moto.sagemakerruntime.responses"
# sha256 (first 16 hex) of the moto code the bridge depends on, from moto 5.2.5.
FINGERPRINTS = {
    # wrapped: builds the FakeEndpoint from the endpoint config's variants
    f"{_MODELS}.SageMakerModelBackend.create_endpoint": "5474548999156c86",
    # wrapped: drops the endpoint from ``endpoints``
    f"{_MODELS}.SageMakerModelBackend.delete_endpoint": "1fb59ee16c92c0e8",
    # the attributes the bridge sets (endpoint_status, failure_reason, last_modified_time)
    f"{_MODELS}.FakeEndpoint.__init__": "7c82febdd2f03fe5",
    # DescribeEndpoint = the endpoint's response_object = its camel-cased __dict__
    f"{_MODELS}.FakeEndpoint.response_object": "7e910299a0450a5c",
    f"{_MODELS}.BaseObject.gen_response_object": "dfa69faba40843bb",
    # the endpoint config's ProductionVariants[].ModelName -> the model's primary_container
    f"{_MODELS}.SageMakerModelBackend.describe_endpoint_config": "1df79bdb0aeccaf2",
    f"{_MODELS}.SageMakerModelBackend.describe_model": "e48645bb937f6412",
    f"{_MODELS}.Model.__init__": "9daf27d122e384ea",
    # DataCaptureConfig of CreateEndpointConfig -> the config's data_capture_config
    f"{_MODELS}.FakeEndpointConfig.__init__": "63c32ba762297473",
    f"{_MODELS}.SageMakerModelBackend.create_endpoint_config": "87a71038bb397165",
    "moto.sagemaker.responses.SageMakerResponse.create_endpoint_config": "34c19362a0bac47b",
    # replaced: moto's InvokeEndpoint handler (canned answers)
    f"{_RUNTIME}.SageMakerRuntimeResponse.invoke_endpoint": "5559ed6a5dbe2534",
}
FORWARD_TIMEOUT_S = 120.0


def check() -> list[str]:
    """What the bridge relies on in moto and no longer finds as it was (empty: all good)."""
    return check_fingerprints(FINGERPRINTS, "the hosting bridge", resolve_attr)


class _Hosted:
    """One endpoint's server (or its start-up, or its failure)."""

    def __init__(self, endpoint: Any):
        self.endpoint = endpoint
        self.server: Any = None
        self.model_dir: Path | None = None
        self.capture: EndpointCapture | None = None
        self.deleted = False
        self.lock = threading.Lock()

    def stop(self) -> None:
        with self.lock:
            self.deleted = True
            server, self.server = self.server, None
        if server is not None:
            try:
                server.stop()
            except Exception:  # pragma: no cover - best effort at teardown
                LOG.exception("stopping the model server of %s", self.endpoint.endpoint_name)
        if self.model_dir is not None:
            shutil.rmtree(self.model_dir, ignore_errors=True)


class HostingBridge(Bridge):
    """Serve emulated SageMaker endpoints with the local model server (module doc)."""

    def __init__(self, cfg: PipelineConfig | None = None, *,
                 workdir: str | Path | None = None, capture_seed: int | None = None,
                 capture_flush_s: float = CAPTURE_FLUSH_S):
        super().__init__(cfg, workdir=workdir)
        self.hosted: dict[str, _Hosted] = {}  # endpoint ARN -> its server
        self._lock = threading.Lock()
        self.capture_seed, self.capture_flush_s = capture_seed, capture_flush_s
        self.captures: list[EndpointCapture] = []  # every endpoint's, deleted ones too

    # -- install / uninstall ------------------------------------------------------------------

    def install(self, emulator: Any) -> Callable[[], None]:
        self.refuse_changed_moto(check(), "the hosting bridge",
                                 "cloud_runners/emulator/hosting_bridge.py")
        from moto.sagemaker.models import SageMakerModelBackend
        from moto.sagemakerruntime.responses import SageMakerRuntimeResponse

        self._emulator = emulator
        self._delivery_stop = threading.Event()
        self._s3: Any = None  # the emulated S3's client, once an endpoint captures
        bridge = self
        original_create = SageMakerModelBackend.create_endpoint
        original_delete = SageMakerModelBackend.delete_endpoint
        original_invoke = SageMakerRuntimeResponse.invoke_endpoint

        def create_endpoint(backend, *args, **kwargs):
            endpoint = original_create(backend, *args, **kwargs)
            bridge._created(backend, endpoint)
            return endpoint

        def delete_endpoint(backend, endpoint_name, *args, **kwargs):
            endpoint = backend.endpoints.get(endpoint_name)
            original_delete(backend, endpoint_name, *args, **kwargs)
            if endpoint is not None:
                bridge._deleted(endpoint)

        def invoke_endpoint(response):
            return bridge._invoke(response)

        create_endpoint.__wrapped__ = original_create  # type: ignore[attr-defined]
        delete_endpoint.__wrapped__ = original_delete  # type: ignore[attr-defined]
        invoke_endpoint.__wrapped__ = original_invoke  # type: ignore[attr-defined]
        SageMakerModelBackend.create_endpoint = create_endpoint
        SageMakerModelBackend.delete_endpoint = delete_endpoint
        SageMakerRuntimeResponse.invoke_endpoint = invoke_endpoint

        def uninstall() -> None:
            SageMakerModelBackend.create_endpoint = original_create
            SageMakerModelBackend.delete_endpoint = original_delete
            SageMakerRuntimeResponse.invoke_endpoint = original_invoke
            # Every endpoint goes with the emulator: servers stop now; one still starting
            # sees it was deleted and stops its server itself (_run).
            self._delivery_stop.set()
            with self._lock:
                hosted, self.hosted = list(self.hosted.values()), {}
            for h in hosted:
                h.stop()
            for capture in list(self.captures):  # a deleted endpoint's late ones too
                self._flush(capture)
            left = self.join(STOP_GRACE_S)
            if left:
                LOG.warning("endpoints still starting after %.0f s (they end with the "
                            "process): %s", STOP_GRACE_S, ", ".join(left))

        return uninstall

    def server_for(self, endpoint_arn: str) -> Any:
        h = self.hosted.get(endpoint_arn)
        return h.server if h is not None else None

    # -- data capture -------------------------------------------------------------------------

    @property
    def captures_dropped(self) -> int:
        """Capture records lost so far (delivery failed, or a buffer was full)."""
        return sum(c.dropped for c in list(self.captures))

    def flush_captures(self, endpoint_name: str | None = None, timeout: float = 10) -> int:
        """Deliver the capture records buffered now (of one endpoint, or of all) to the
        emulated S3; the number delivered. A delivery the worker has under way is waited
        for (up to ``timeout``), so what was captured before the call is in S3 after it."""
        with self._lock:
            captures = [h.capture for h in self.hosted.values() if h.capture is not None
                        and endpoint_name in (None, h.endpoint.endpoint_name)]
        return sum(self._flush(c, timeout) for c in captures)

    def _flush(self, capture: EndpointCapture | None, timeout: float = 10) -> int:
        if capture is None:
            return 0
        try:
            return capture.flush(self._s3, timeout)
        except Exception:  # noqa: BLE001 - capture never takes the bridge down
            LOG.exception("delivering the data capture of %s failed", capture.endpoint_name)
            return 0

    def _deliver(self) -> None:
        """The delivery worker: every ``capture_flush_s`` (read at each tick: it may be
        changed while it runs) until the bridge is uninstalled."""
        last = time.monotonic()
        while not self._delivery_stop.wait(min(self.capture_flush_s, 0.25)):
            if time.monotonic() - last >= self.capture_flush_s:
                self.flush_captures()
                last = time.monotonic()

    # -- create / delete ----------------------------------------------------------------------

    def _created(self, backend: Any, endpoint: Any) -> None:
        endpoint.endpoint_status = "Creating"
        endpoint.failure_reason = None
        hosted = _Hosted(endpoint)
        with self._lock:
            previous = self.hosted.pop(endpoint.arn, None)
            self.hosted[endpoint.arn] = hosted
        if previous is not None:  # pragma: no cover - moto replaced it without a delete
            previous.stop()
        try:
            container, capture_config = self._container(backend, endpoint)
            hosted.capture = EndpointCapture.from_config(
                capture_config, endpoint.endpoint_name, container["VariantName"],
                seed=self.capture_seed)
        except Exception as e:
            self._fail(hosted, e)
            return
        if hosted.capture is not None:
            with self._lock:
                self.captures.append(hosted.capture)
                start = self._s3 is None
                if start:  # boto3 clients may be shared by threads
                    self._s3 = self._emulator.client("s3")
            if start:
                self.workers.start("hosting-bridge-capture-delivery", self._deliver,
                                   on_stopped=lambda: None)
        # Not stopped by Workers.stop: the start-up ends by itself once the endpoint is
        # deleted (a model half loaded is only memory).
        self.workers.start(f"hosting-bridge-{endpoint.endpoint_name[:24]}",
                           lambda: self._run(hosted, container), on_stopped=lambda: None)

    def _deleted(self, endpoint: Any) -> None:
        with self._lock:
            hosted = self.hosted.get(endpoint.arn)
            if hosted is not None and hosted.endpoint is endpoint:
                del self.hosted[endpoint.arn]
            else:
                hosted = None
        if hosted is not None:
            hosted.stop()
            self._flush(hosted.capture)  # what it captured is delivered, not lost

    @staticmethod
    def _container(backend: Any, endpoint: Any) -> tuple[dict[str, Any], dict | None]:
        config = backend.describe_endpoint_config(endpoint.endpoint_config_name)
        variants = config.get("ProductionVariants") or []
        if len(variants) != 1:
            raise HarnessError("the emulator serves exactly one production variant",
                               field="ProductionVariants", got=f"{len(variants)} variants")
        model = backend.describe_model(variants[0]["ModelName"])
        container = dict(model.primary_container or {})
        if not container.get("ModelDataUrl"):
            raise HarnessError(f"model {model.model_name} has no PrimaryContainer.ModelDataUrl",
                               field="PrimaryContainer.ModelDataUrl",
                               expected="the s3:// URI of model.tar.gz")
        container["VariantName"] = variants[0].get("VariantName", "AllTraffic")
        return container, config.get("DataCaptureConfig")

    def _fail(self, hosted: _Hosted, e: BaseException, staging: S3Staging | None = None
              ) -> None:
        endpoint = hosted.endpoint
        LOG.error("endpoint %s failed:\n%s", endpoint.endpoint_name,
                  "".join(traceback.format_exception(e)))
        endpoint.failure_reason = runner_error(e, staging)
        endpoint.last_modified_time = utcnow()
        endpoint.endpoint_status = "Failed"

    def _run(self, hosted: _Hosted, container: dict[str, Any]) -> None:
        from local_runners.endpoint import extract_model_archive, serving_options
        from local_runners.model_server import ModelServer

        endpoint = hosted.endpoint
        staging: S3Staging | None = None
        try:
            # The staging folder holds the unpacked model while the endpoint serves; it
            # goes when the endpoint is deleted (_Hosted.stop).
            staging = S3Staging(self._emulator.client("s3"),
                                prefix=f"mlharness-endpoint-{endpoint.endpoint_name[:40]}-",
                                dir=self.workdir)
            hosted.model_dir = staging.root
            environment = container.get("Environment") or {}
            model_name = environment.get("SAGEMAKER_TFS_DEFAULT_MODEL_NAME") \
                or self.cfg.deploy.model_name
            archive = staging.download(container["ModelDataUrl"], "model.tar.gz",
                                       kind=OBJECT)
            model_dir = staging.path("model")
            try:
                extract_model_archive(archive, model_dir)
            finally:
                archive.unlink(missing_ok=True)
            server = ModelServer(model_dir, model_name, host="127.0.0.1", port=0,
                                 **serving_options(environment))
            server.start()
        except Exception as e:
            if not hosted.deleted:
                self._fail(hosted, e, staging)
            if staging is not None:
                staging.cleanup()
            return
        with hosted.lock:
            if not hosted.deleted:
                hosted.server = server
                endpoint.last_modified_time = utcnow()
                endpoint.endpoint_status = "InService"
                LOG.info("endpoint %s in service at %s", endpoint.endpoint_name, server.url)
                return
        server.stop()  # deleted while it was starting
        staging.cleanup()

    # -- InvokeEndpoint -----------------------------------------------------------------------

    def _invoke(self, response: Any) -> tuple[int, dict[str, str], Any]:
        from moto.core.exceptions import JsonRESTError
        from moto.sagemaker.models import sagemaker_backends

        def validation_error(message: str) -> JsonRESTError:
            # sagemaker-runtime's code is ValidationError (sagemaker's: ValidationException).
            return JsonRESTError("ValidationError", message)

        name = response._get_params().get("EndpointName") or _name_from_path(response.path)
        account, region = response.current_account, response.region
        backend = sagemaker_backends[account][region]
        endpoint = backend.endpoints.get(name)
        if endpoint is None:
            raise validation_error(f"Endpoint {name} of account {account} not found.")
        hosted = self.hosted.get(endpoint.arn)
        server = hosted.server if hosted is not None and hosted.endpoint is endpoint else None
        if endpoint.endpoint_status != "InService" or server is None:
            raise validation_error(f"Endpoint {name} of account {account} is not in service "
                                   f"(status {endpoint.endpoint_status}).")
        body = response.raw_body if isinstance(response.raw_body, bytes) \
            else (response.raw_body or b"").encode("utf-8")
        headers = {"Content-Type": response.headers.get("Content-Type")
                   or "application/json",
                   "Accept": response.headers.get("Accept") or "application/json"}
        attributes = response.headers.get("X-Amzn-SageMaker-Custom-Attributes")
        if attributes:
            headers["X-Amzn-SageMaker-Custom-Attributes"] = attributes
        conn = http.client.HTTPConnection(server.host, server.port, timeout=FORWARD_TIMEOUT_S)
        try:
            conn.request("POST", "/invocations", body=body, headers=headers)
            answer = conn.getresponse()
            data = answer.read()
            status = answer.status
            ctype = answer.getheader("Content-Type") or "application/json"
        finally:
            conn.close()
        variant = (endpoint.production_variants or [{}])[0].get("VariantName", "AllTraffic")
        if 200 <= status < 300:
            if hosted.capture is not None:
                try:
                    hosted.capture.offer(body, headers["Content-Type"], data, ctype)
                except Exception:  # noqa: BLE001 - capture never fails InvokeEndpoint
                    LOG.exception("capturing an invocation of %s failed", name)
            return 200, {"status": "200", "Content-Type": ctype,
                         "x-Amzn-Invoked-Production-Variant": variant}, data
        text = data.decode("utf-8", "replace")
        kind = "client" if 400 <= status < 500 else "server"
        error = {
            "ErrorCode": f"{kind.upper()}_ERROR_FROM_MODEL",
            "OriginalStatusCode": status,
            "OriginalMessage": text,
            "LogStreamArn": f"arn:aws:logs:{region}:{account}:log-group:"
                            f"/aws/sagemaker/Endpoints/{name}",
            "message": f"Received {kind} error ({status}) from primary with message "
                       f"\"{text}\". See the endpoint's logs for more information.",
        }
        # moto takes the status from the "status" header (BaseResponse._transform_response).
        return 424, {"status": "424", "Content-Type": "application/json",
                     "x-amzn-ErrorType": "ModelError"}, json.dumps(error)


def _name_from_path(path: str) -> str:
    parts = path.split("/")
    return parts[2] if len(parts) > 2 else ""
