"""What every SageMaker job step shares: unique resource names, and the instances,
limits and framework image of the job (``SageMakerJob``, a mixin of the training and
processing steps)."""
from __future__ import annotations

import re

from harness.errors import ConfigError
from harness.placeholders import Placeholder, has_placeholders, unique_name
from harness.steps.base import BuildContext


# "-" + a run id (20261201-094123-ab12): what unique_name appends to a prefix
RUN_ID_SUFFIX = 21


def resource_name(name: str, where: str, max_length: int = 63) -> str:
    """A SageMaker resource name: a fixed prefix gets ``-<run id>`` (names must be new on
    every run); a name with placeholders is used as it is. ``max_length`` is the limit
    of the whole name (63 for jobs, models and endpoints; 32 for tuning jobs)."""
    if isinstance(name, Placeholder) or (isinstance(name, str) and has_placeholders(name)):
        return str(name)
    most = max_length - 1 - RUN_ID_SUFFIX
    if not isinstance(name, str) or not re.fullmatch(
            r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,%d}" % most, name):
        raise ConfigError("not a usable SageMaker name prefix", field=where,
                          expected=f"1-{most + 1} letters, digits and hyphens (the run id is "
                          "appended)", got=name)
    return unique_name(name)


def name_prefix(name: str) -> str:
    """The fixed part of a resource name (for IAM scoping and teardown)."""
    text = str(name)
    return text.split("⟦", 1)[0].rstrip("-") or text


class SageMakerJob:
    """The instances, limits and framework image of a SageMaker job step, and what it
    creates and costs. Subclasses set ``job_use`` ("training" | "processing": the price
    table and the IAM resource kind) and ``name_field`` (the request's job name field)."""

    job_use: str = "training"
    name_field: str = "TrainingJobName"

    def _set_job(self, where: str, *, instance_type: str, instance_count: int,
                 volume_size_gb: int, max_runtime_s: int, framework: str,
                 framework_version: str, py_version: str | None, image_uri: str | None,
                 expected_hours: float) -> None:
        for field, value, low in (("instance_count", instance_count, 1),
                                  ("volume_size_gb", volume_size_gb, 1),
                                  ("max_runtime_s", max_runtime_s, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"bad {field.replace('_', ' ')}", field=f"{where}.{field}",
                                  expected=f"an integer >= {low}", got=value)
        if not isinstance(instance_type, str) or not instance_type.startswith("ml."):
            raise ConfigError("not a SageMaker instance type", field=f"{where}.instance_type",
                              expected="e.g. ml.m5.xlarge", got=instance_type)
        self.instance_type = instance_type
        self.instance_count = instance_count
        self.volume_size_gb = volume_size_gb
        self.max_runtime_s = max_runtime_s
        self.framework = framework
        self.framework_version = framework_version
        self.py_version = py_version
        self.image_uri = image_uri
        self.expected_hours = expected_hours

    def image(self, ctx: BuildContext, scope: str = "training") -> str:
        return self.image_uri or ctx.images.image(self.framework, self.framework_version,
                                                  scope, self.instance_type, self.py_version)

    def creates(self, request: dict) -> list[tuple[str, str]]:
        return [(f"{self.job_use} job", f"{request[self.name_field]} ({self.instance_count} x "
                                        f"{self.instance_type})")]

    def name_prefixes(self) -> dict[str, str]:
        return {f"{self.job_use}-job": name_prefix(self.job_name)}

    def cost(self, pricing) -> list:
        return [pricing.instances(f"SageMaker {self.job_use} {name_prefix(self.job_name)}",
                                  self.job_use, self.instance_type, self.instance_count,
                                  self.expected_hours, field=f"{self.state_id}.instance_type")]
