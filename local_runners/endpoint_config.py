"""Local ``endpoint-config``: execute a SageMaker ``CreateEndpointConfig`` request.

Registered for the run (``ctx.registry["sagemaker:CreateEndpointConfig"]``) after
checking, as SageMaker does, that the model each production variant names exists; the
local endpoint serves it (one variant). The output is ``EndpointConfigArn``.
"""
from __future__ import annotations

from typing import Any

from harness.errors import StepFailed
from harness.stages import StageContext, StageRunner
from local_runners.create_model import REGISTRY as MODELS
from local_runners.create_model import field, local_arn

REGISTRY = "sagemaker:CreateEndpointConfig"


class LocalEndpointConfigRunner(StageRunner):
    kind = "endpoint-config"

    def run(self, request: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        name = field(request, "EndpointConfigName", what="CreateEndpointConfig request")
        variants = field(request, "ProductionVariants", list,
                         what="CreateEndpointConfig request")
        models = ctx.registry.get(MODELS, {})
        for i, v in enumerate(variants):
            model = v.get("ModelName") if isinstance(v, dict) else None
            if model not in models:
                raise StepFailed(ctx.step, f"endpoint config {name}: the model of variant {i} "
                                 "does not exist", field=f"ProductionVariants[{i}].ModelName",
                                 expected="one of the run's models: "
                                 + (", ".join(models) or "none"), got=model)
        configs = ctx.registry.setdefault(REGISTRY, {})
        if name in configs:
            raise StepFailed(ctx.step, f"an endpoint config named {name} already exists",
                             field="EndpointConfigName", expected="a new name")
        configs[name] = request
        ctx.log.info("endpoint config %s: %s", name,
                     ", ".join(f"{v['VariantName']} -> {v['ModelName']}" for v in variants))
        return {"EndpointConfigArn": local_arn("endpoint-config", name)}

    def replay(self, request: dict[str, Any], output: dict[str, Any], ctx: StageContext
               ) -> None:
        ctx.registry.setdefault(REGISTRY, {})[request["EndpointConfigName"]] = request
