"""``Gate``: continue only when a metric of a JSON file meets a threshold.

The JSON file is one an earlier step wrote (e.g. a processing job's
``evaluation.json``). The gate is the same everywhere: locally the gate runner reads the
file; in the state machine ``aws-sdk:s3:getObject`` reads it, ``States.StringToJson``
parses it, and a Choice compares the metric (``metric`` is its dotted path in the file,
``direction`` one of ``>=``, ``<=``, ``>``, ``<``). Below the threshold the run stops
at the gate with the metric and its value in the message (or continues at
``otherwise`` when given).
"""
from __future__ import annotations

import json
import re
from typing import Any

from harness.errors import ConfigError, GateFailed
from harness.placeholders import (
    BASE_URI,
    BUCKET_KEY,
    PREFIX_KEY,
    Placeholder,
    asl_parameters,
    format_literal,
    has_placeholders,
    lookup,
)
from harness.steps.base import BuildContext, Step, task_state

DIRECTIONS = {">=": "NumericGreaterThanEquals", "<=": "NumericLessThanEquals",
              ">": "NumericGreaterThan", "<": "NumericLessThan"}
_METRIC = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*$")


def _number(value: Any) -> str:
    """A number as the state machine's ``States.Format`` writes it (JSON)."""
    return json.dumps(value)


class Gate(Step):
    kind = "gate"
    title = "gate on a metric"
    local_runner = "local_runners.gate:LocalGateRunner"
    result_fields = ("Body",)

    def __init__(self, state_id: str, *, json_uri: str, metric: str, threshold: float,
                 direction: str = ">=", otherwise: Step | None = None,
                 retry_from: Step | None = None, comment: str | None = None):
        super().__init__(state_id, comment=comment)
        if not isinstance(metric, str) or not _METRIC.match(metric):
            raise ConfigError("the gate's metric is a dotted path into the JSON file",
                              field=f"{state_id}.metric",
                              expected="e.g. metrics.accuracy (names of letters, digits, '_')",
                              got=metric)
        if direction not in DIRECTIONS:
            raise ConfigError("unknown gate direction", field=f"{state_id}.direction",
                              expected=" | ".join(DIRECTIONS), got=direction)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise ConfigError("the gate's threshold is a number", field=f"{state_id}.threshold",
                              got=threshold)
        self.json_uri = json_uri
        self.metric = metric
        self.threshold = threshold
        self.direction = direction
        self.otherwise = otherwise
        self.retry_from = retry_from

    # -- definition -----------------------------------------------------------------------

    def branches(self) -> list[Step]:
        return [self.otherwise] if self.otherwise is not None else []

    def can_stop(self) -> bool:
        return self.otherwise is None

    def request(self, ctx: BuildContext) -> dict[str, Any]:
        return {"Uri": self.json_uri, "Metric": self.metric, "Threshold": self.threshold,
                "Direction": self.direction}

    def _bucket_key(self) -> tuple[Any, Any]:
        uri = str(self.json_uri)
        base = str(BASE_URI) + "/"
        if uri.startswith(base):
            return Placeholder(f"$.{BUCKET_KEY}"), f"{Placeholder(f'$.{PREFIX_KEY}')}/" \
                                                  f"{uri[len(base):]}"
        if uri.startswith("s3://") and not has_placeholders(uri.split("/", 3)[2]):
            _, _, bucket, key = uri.split("/", 3)
            return bucket, key
        raise ConfigError("the state machine reads the gate's file from S3",
                          field=f"{self.state_id}.json_uri",
                          expected="a run path (harness.placeholders.run_path) or an "
                          "s3://bucket/key URI", got=uri)

    def _value_path(self) -> str:
        return f"$.{self.result_key}.Body.{self.metric}"

    def _message_parts(self) -> tuple[str, str]:
        # No quotes: the state machine's States.Format template carries this text.
        return (f"{self.metric} = ",
                f" does not meet the gate (required {self.direction} "
                f"{_number(self.threshold)})")

    def message(self, value: Any) -> str:
        prefix, suffix = self._message_parts()
        return prefix + _number(value) + suffix

    def state_names(self) -> list[str]:
        s = self.state_id
        return [s, f"{s}-check", f"{s}-failed", f"{s}-missing"]

    def states(self, ctx: BuildContext, next_state: str) -> dict[str, dict[str, Any]]:
        read, check, failed, missing = self.state_names()
        bucket, key = self._bucket_key()
        path = self._value_path()
        below = self.otherwise.state_id if self.otherwise is not None else failed
        prefix, suffix = self._message_parts()
        states = {
            read: task_state("arn:aws:states:::aws-sdk:s3:getObject",
                             asl_parameters({"Bucket": bucket, "Key": key},
                                            f"{self.state_id}.Parameters"),
                             self.result_key, check,
                             f"read the JSON file the gate checks ({self.metric})",
                             {"Body.$": "States.StringToJson($.Body)"}),
            check: {"Type": "Choice",
                    "Comment": f"continue when {self.metric} {self.direction} {self.threshold}",
                    "Choices": [
                        {"Not": {"Variable": path, "IsPresent": True}, "Next": missing},
                        {"And": [{"Variable": path, "IsNumeric": True},
                                 {"Variable": path, DIRECTIONS[self.direction]: self.threshold}],
                         "Next": next_state}],
                    "Default": below},
            missing: {"Type": "Fail", "Error": "GateMetricMissing",
                      "Cause": f"the gate {self.state_id}: the file has no numeric "
                               f"{self.metric}"},
        }
        if self.otherwise is None:
            states[failed] = {"Type": "Fail", "Error": "GateNotPassed",
                              "CausePath": f"States.Format('{format_literal(prefix)}{{}}"
                                           f"{format_literal(suffix)}', {path})"}
        return states

    # -- the local run --------------------------------------------------------------------

    def value(self, output: dict[str, Any]) -> Any:
        try:
            return lookup(output.get("Body"), "$." + self.metric)
        except (KeyError, ValueError, TypeError):
            return None

    def passed(self, output: dict[str, Any]) -> bool:
        value = self.value(output)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        t = self.threshold
        return {">=": value >= t, "<=": value <= t, ">": value > t, "<": value < t}[
            self.direction]

    def after(self, output: dict[str, Any]) -> Step | None:
        if self.passed(output):
            return self.next_step
        if self.otherwise is not None:
            return self.otherwise
        value = self.value(output)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GateFailed(f"the gate {self.state_id}: the file has no numeric {self.metric}",
                             file=str(self.json_uri))
        raise GateFailed(self.message(value))

    def resume_step(self) -> Step:
        return self.retry_from or self

    def facts(self, output: dict[str, Any]) -> dict[str, Any]:
        return {self.metric: self.value(output),
                "required": f"{self.direction} {self.threshold}",
                "passed": self.passed(output)}

    def headline(self, output: dict[str, Any]) -> dict[str, float]:
        value = self.value(output)
        return {self.metric: value} if isinstance(value, (int, float)) else {}
