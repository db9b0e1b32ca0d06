"""Local ``endpoint``: execute a SageMaker ``CreateEndpoint`` request.

The endpoint config it names and that config's model were registered by the run's
earlier steps (``local_runners.endpoint_config``, ``local_runners.create_model``);
together they are the CreateModel / CreateEndpointConfig / CreateEndpoint trio SageMaker
gets. Locally the endpoint is the model server chosen by ``deploy.server``
(``harness.endpoints``: the embedded server by default, or the TF Serving container) on
127.0.0.1, serving the extracted ``model.tar.gz``, with the batching of the model's
``SAGEMAKER_TFS_*`` environment and the config's data capture. The step output has the
shape of ``DescribeEndpoint`` plus ``EndpointUrl``/``EndpointApi`` (local only),
``ModelName`` and ``ModelVersion``. The server stops when the run ends (unless
``deploy.keep_serving``).
"""
from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from pathlib import Path
from typing import Any

from harness import uris
from harness.archives import extract_archive
from harness.errors import HarnessError, StepFailed
from harness.endpoints import ServingOptions, open_local_endpoint
from harness.stages import StageContext, StageRunner
from local_runners.create_model import REGISTRY as MODELS
from local_runners.endpoint_config import REGISTRY as ENDPOINT_CONFIGS


def _get(request: dict[str, Any], dotted: str, kind: type | tuple = str) -> Any:
    node: Any = request
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise HarnessError("missing field in the deploy request", field=dotted,
                               expected=f"a {getattr(kind, '__name__', kind)} value")
        node = node[part]
    if not isinstance(node, kind) or (isinstance(node, str) and not node):
        raise HarnessError("wrong value in the deploy request", field=dotted,
                           expected=f"a non-empty {getattr(kind, '__name__', kind)}", got=node)
    return node


def validate_hosting_requests(request: dict[str, Any]) -> dict[str, Any]:
    """Check the trio refers to itself consistently; return the one production variant."""
    model_name = _get(request, "CreateModel.ModelName")
    _get(request, "CreateModel.PrimaryContainer.ModelDataUrl")
    config_name = _get(request, "CreateEndpointConfig.EndpointConfigName")
    variants = _get(request, "CreateEndpointConfig.ProductionVariants", list)
    if len(variants) != 1:
        raise HarnessError("the local backend serves exactly one production variant",
                           field="CreateEndpointConfig.ProductionVariants",
                           expected="a list with one variant", got=f"{len(variants)} variants")
    variant = variants[0]
    if not isinstance(variant, dict) or variant.get("ModelName") != model_name:
        raise HarnessError("the endpoint config refers to a model this request does not create",
                           field="CreateEndpointConfig.ProductionVariants[0].ModelName",
                           expected=f"{model_name!r} (CreateModel.ModelName)",
                           got=variant.get("ModelName") if isinstance(variant, dict) else variant)
    _get(request, "CreateEndpoint.EndpointName")
    if _get(request, "CreateEndpoint.EndpointConfigName") != config_name:
        raise HarnessError("the endpoint refers to an endpoint config this request does not "
                           "create", field="CreateEndpoint.EndpointConfigName",
                           expected=f"{config_name!r} (CreateEndpointConfig.EndpointConfigName)",
                           got=request["CreateEndpoint"]["EndpointConfigName"])
    return variant


def serving_options(environment: dict[str, str]) -> dict[str, Any]:
    """The SageMaker TF serving container's batching environment, as server options."""
    if environment.get("SAGEMAKER_TFS_ENABLE_BATCHING", "false").lower() != "true":
        return {"max_batch_size": None}
    try:
        return {"max_batch_size": int(environment.get("SAGEMAKER_TFS_MAX_BATCH_SIZE", 8)),
                "batch_timeout_micros": int(environment.get(
                    "SAGEMAKER_TFS_BATCH_TIMEOUT_MICROS", 1000))}
    except ValueError as e:
        raise HarnessError(f"batching setting is not an integer ({e})",
                           field="CreateModel.PrimaryContainer.Environment",
                           expected="SAGEMAKER_TFS_MAX_BATCH_SIZE and "
                           "SAGEMAKER_TFS_BATCH_TIMEOUT_MICROS as integers") from None


def capture_options(request: dict[str, Any]) -> dict[str, Any]:
    """DataCaptureConfig of the endpoint config as serving options (file:// destination)."""
    cfg = request["CreateEndpointConfig"].get("DataCaptureConfig")
    if not cfg or not cfg.get("EnableCapture", True):  # SageMaker: on unless set false
        return {}
    return {"capture_dir": str(uris.local_path(cfg["DestinationS3Uri"])),
            "capture_percent": float(cfg.get("InitialSamplingPercentage", 100))}


def extract_model_archive(archive: Path, dest: Path) -> None:
    """Unpack model.tar.gz safely (see harness.archives.extract_archive)."""
    extract_archive(archive, dest, what="model archive",
                    expected="a gzipped tar holding <version>/saved_model.pb "
                    "(CreateModel.PrimaryContainer.ModelDataUrl)")


class LocalEndpointRunner(StageRunner):
    kind = "endpoint"

    def run(self, request: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        return serve_trio(hosting_trio(request, ctx), ctx)


def hosting_trio(request: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    """The CreateModel / CreateEndpointConfig / CreateEndpoint requests of an endpoint,
    from the run's registry."""
    config_name = request.get("EndpointConfigName")
    configs = ctx.registry.get(ENDPOINT_CONFIGS, {})
    if config_name not in configs:
        raise StepFailed(ctx.step, f"endpoint {request.get('EndpointName')}: the endpoint "
                         "config does not exist", field="EndpointConfigName",
                         expected="one of the run's endpoint configs: "
                         + (", ".join(configs) or "none"), got=config_name)
    config = configs[config_name]
    model_name = (config.get("ProductionVariants") or [{}])[0].get("ModelName")
    model = ctx.registry.get(MODELS, {}).get(model_name)
    if model is None:
        raise StepFailed(ctx.step, f"endpoint config {config_name}: its model does not exist",
                         field="ProductionVariants[0].ModelName", got=model_name)
    return {"CreateModel": model, "CreateEndpointConfig": config, "CreateEndpoint": request}


def serve_trio(request: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    """Serve the trio's model locally; the DescribeEndpoint-shaped output."""
    variant = validate_hosting_requests(request)
    container = request["CreateModel"]["PrimaryContainer"]
    environment = container.get("Environment") or {}
    endpoint_name = request["CreateEndpoint"]["EndpointName"]
    variant_name = variant.get("VariantName", "AllTraffic")
    model_name = environment.get("SAGEMAKER_TFS_DEFAULT_MODEL_NAME") \
        or ctx.config.deploy.model_name
    archive = uris.local_path(container["ModelDataUrl"])
    server_kind = ctx.config.deploy.server
    ctx.log.info("endpoint: image %s is not used locally; serving %s with the %s model "
                 "server", container.get("Image"), archive, server_kind)

    model_dir = Path(tempfile.mkdtemp(prefix=f"mlharness-{endpoint_name[:40]}-"))
    keep = ctx.config.deploy.keep_serving
    if not keep:
        ctx.resources.callback(shutil.rmtree, model_dir, ignore_errors=True)
    try:
        extract_model_archive(archive, model_dir)
        capture = capture_options(request)
        if capture and server_kind != "embedded":
            ctx.announce(f"endpoint {endpoint_name}: the {server_kind} server cannot capture "
                         "traffic; serving without data capture (the embedded server and "
                         "SageMaker capture it)")
            capture = {}
        options = ServingOptions(
            host=ctx.config.deploy.host, port=ctx.config.deploy.port,
            endpoint_name=endpoint_name, variant_name=variant_name,
            **serving_options(environment), **capture)
        endpoint = open_local_endpoint(server_kind, model_dir, model_name, options)
        endpoint.start(progress=ctx.progress)
    except BaseException:
        if keep:
            shutil.rmtree(model_dir, ignore_errors=True)
        raise
    if not keep:
        ctx.resources.callback(endpoint.stop)
    described = endpoint.describe()
    ctx.log.info("endpoint %s in service at %s (model %s version %s, server %s)",
                 endpoint_name, described["EndpointUrl"], model_name,
                 described.get("ModelVersion"), server_kind)
    ctx.announce(f"endpoint {endpoint_name} serving at {described['EndpointUrl']}"
                 + ("  (kept serving after the run: stop it with Ctrl+C)" if keep else ""))
    created = dt.datetime.now(dt.timezone.utc).isoformat()
    return {
        "EndpointName": endpoint_name,
        "EndpointConfigName": request["CreateEndpoint"]["EndpointConfigName"],
        "EndpointStatus": "InService",
        "ProductionVariants": [{
            "VariantName": variant_name,
            "DeployedImages": [{"SpecifiedImage": container.get("Image")}],
            "CurrentWeight": 1.0, "DesiredWeight": 1.0,
            "CurrentInstanceCount": 1,
            "DesiredInstanceCount": variant.get("InitialInstanceCount", 1),
        }],
        "CreationTime": created,
        "LastModifiedTime": created,
        "EndpointUrl": described["EndpointUrl"],
        "EndpointApi": described["EndpointApi"],
        "Server": server_kind,
        "ModelName": request["CreateModel"]["ModelName"],
        "ModelVersion": described.get("ModelVersion"),
        "ServedModelName": model_name,
    }
