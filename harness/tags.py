"""The tags every AWS resource of a run carries: teardown finds the project's resources by
``mlharness:project``; ``mlharness:run`` says which run made them."""
from __future__ import annotations

from typing import TYPE_CHECKING

from harness.placeholders import RUN_ID

if TYPE_CHECKING:
    from harness.config import PipelineConfig

PROJECT_TAG = "mlharness:project"
RUN_TAG = "mlharness:run"


def resource_tags(cfg: "PipelineConfig", run_id: str | None = None) -> list[dict[str, str]]:
    """``[{"Key", "Value"}]`` (SageMaker form); the run id is a placeholder unless given."""
    return [{"Key": PROJECT_TAG, "Value": cfg.cloud.stack_name},
            {"Key": RUN_TAG, "Value": run_id or str(RUN_ID)}]
