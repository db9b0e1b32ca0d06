"""Local ``model``: execute a SageMaker ``CreateModel`` request.

The model is registered for the run (``ctx.registry["sagemaker:CreateModel"]``), as
SageMaker keeps it, after checking that its ``ModelDataUrl`` exists; an endpoint config
names it, and the local endpoint serves its ``model.tar.gz``. The output is
CreateModel's answer (``ModelArn``).
"""
from __future__ import annotations

from typing import Any

from harness import uris
from harness.errors import HarnessError, StepFailed
from harness.stages import StageContext, StageRunner

REGISTRY = "sagemaker:CreateModel"


def field(request: dict[str, Any], dotted: str, kind: type | tuple = str, what: str = "request"
          ) -> Any:
    """``request``'s value at ``dotted`` (``A.B``), checked: a missing or empty value is an
    error naming the field."""
    node: Any = request
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise HarnessError(f"missing field in the {what}", field=dotted,
                               expected=f"a {getattr(kind, '__name__', kind)} value")
        node = node[part]
    if not isinstance(node, kind) or (isinstance(node, (str, list)) and not node):
        raise HarnessError(f"wrong value in the {what}", field=dotted,
                           expected=f"a non-empty {getattr(kind, '__name__', kind)}", got=node)
    return node


def local_arn(kind: str, name: str) -> str:
    return f"arn:aws:sagemaker:local:000000000000:{kind}/{name.lower()}"


class LocalModelRunner(StageRunner):
    kind = "model"

    def run(self, request: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        name = field(request, "ModelName", what="CreateModel request")
        data = field(request, "PrimaryContainer.ModelDataUrl", what="CreateModel request")
        path = uris.local_path(data)
        if not path.is_file():
            raise StepFailed(ctx.step, f"model {name}: the model data does not exist",
                             file=data, field="PrimaryContainer.ModelDataUrl",
                             expected="the training job's model.tar.gz")
        models = ctx.registry.setdefault(REGISTRY, {})
        if name in models:
            raise StepFailed(ctx.step, f"a model named {name} already exists in this run",
                             field="ModelName", expected="a new name")
        models[name] = request
        ctx.log.info("model %s: %s (image %s is not used locally)", name, data,
                     request["PrimaryContainer"].get("Image"))
        return {"ModelArn": local_arn("model", name)}

    def replay(self, request: dict[str, Any], output: dict[str, Any], ctx: StageContext
               ) -> None:
        ctx.registry.setdefault(REGISTRY, {})[request["ModelName"]] = request
