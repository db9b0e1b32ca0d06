"""Cloud ``deploy``: CreateModel, CreateEndpointConfig, CreateEndpoint, wait for InService.

The request trio is the one the local deploy executes (``harness.requests.
hosting_requests``); each call carries the project's tags. The runner polls
``DescribeEndpoint`` every ``cloud.poll_seconds`` until ``InService`` (``Failed`` ->
StepFailed with the FailureReason) and returns the DescribeEndpoint response, JSON-able,
plus ``ModelName``. Nothing is registered on ``ctx.resources``: the endpoint lives until
``harness cloud teardown`` (it costs money while it exists).
"""
from __future__ import annotations

from typing import Any

from cloud_runners import aws
from harness.errors import StepFailed
from harness.stages import StageContext
from local_runners.deploy import validate_hosting_requests

TERMINAL = ("InService", "Failed", "OutOfService", "Deleting")


class CloudDeployRunner(aws.CloudStageRunner):
    kind = "deploy"

    def run(self, request: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        validate_hosting_requests(request)
        sm = self.client(ctx, "sagemaker")
        model = request["CreateModel"]
        config = request["CreateEndpointConfig"]
        endpoint = request["CreateEndpoint"]
        name = endpoint["EndpointName"]
        aws.aws_call(ctx.step, f"SageMaker CreateModel {model['ModelName']}", sm.create_model,
                     **model)
        ctx.log.info("model %s created (image %s, data %s)", model["ModelName"],
                     model["PrimaryContainer"].get("Image"),
                     model["PrimaryContainer"].get("ModelDataUrl"))
        aws.aws_call(ctx.step, f"SageMaker CreateEndpointConfig {config['EndpointConfigName']}",
                     sm.create_endpoint_config, **config)
        aws.aws_call(ctx.step, f"SageMaker CreateEndpoint {name}", sm.create_endpoint,
                     **endpoint)
        ctx.log.info("endpoint %s created; waiting for InService", name)
        seen: list[str] = []
        with ctx.progress.task(f"endpoint {name}", total=None) as task:
            def on_update(answer: dict[str, Any]) -> None:
                status = answer.get("EndpointStatus", "?")
                if not seen or seen[-1] != status:
                    seen.append(status)
                    ctx.log.info("endpoint %s: %s", name, status)
                    task.update(description=f"  endpoint {name}: {status}")

            answer = aws.poll(
                lambda: aws.aws_call(ctx.step, f"SageMaker DescribeEndpoint {name}",
                                     sm.describe_endpoint, EndpointName=name),
                lambda a: a.get("EndpointStatus") in TERMINAL,
                ctx.config.cloud.poll_seconds, on_update)
        out = aws.jsonable(answer)
        status = out.get("EndpointStatus")
        if status != "InService":
            raise StepFailed(ctx.step, f"endpoint {name} {status}: "
                             f"{out.get('FailureReason') or '(no failure reason)'}",
                             hint="the endpoint still exists and may cost money: run "
                             "`harness cloud teardown`; its logs are in CloudWatch under "
                             f"/aws/sagemaker/Endpoints/{name}")
        ctx.announce(f"endpoint {name} InService in {ctx.config.cloud.region} "
                     "(delete it with `harness cloud teardown`)")
        return {**out, "ModelName": model["ModelName"],
                "ServedModelName": (model["PrimaryContainer"].get("Environment") or {}).get(
                    "SAGEMAKER_TFS_DEFAULT_MODEL_NAME")}
