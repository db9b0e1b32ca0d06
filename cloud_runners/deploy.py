"""Cloud ``deploy``: CreateModel, CreateEndpointConfig, CreateEndpoint, wait for InService.

The request trio is the one the local deploy executes (``harness.requests.
hosting_requests``); each call carries the project's tags. The ``sagemaker`` Endpoint
(``cloud_runners.endpoint_sagemaker``) sends it and polls ``DescribeEndpoint`` every
``cloud.poll_seconds`` until ``InService`` (``Failed`` -> StepFailed with the
FailureReason); the runner returns its description, JSON-able, plus ``ModelName``. The
endpoint is not stopped and nothing is registered on ``ctx.resources``: it lives until
``harness cloud teardown`` (it costs money while it exists).
"""
from __future__ import annotations

from typing import Any

from cloud_runners import aws
from cloud_runners.endpoint_sagemaker import SageMakerEndpoint
from harness.stages import StageContext
from local_runners.deploy import validate_hosting_requests


class CloudDeployRunner(aws.CloudStageRunner):
    kind = "deploy"

    def run(self, request: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        validate_hosting_requests(request)
        name = request["CreateEndpoint"]["EndpointName"]
        endpoint = SageMakerEndpoint(
            name, self.client(ctx, "sagemaker"), self.client(ctx, "sagemaker-runtime"),
            requests=request, poll_seconds=ctx.config.cloud.poll_seconds,
            on_status=lambda status: ctx.log.info("endpoint %s: %s", name, status),
            step=ctx.step, log=ctx.log).start(progress=ctx.progress)
        ctx.announce(f"endpoint {name} InService in {ctx.config.cloud.region} "
                     "(delete it with `harness cloud teardown`)")
        return endpoint.describe()
