"""SageMaker MetricDefinitions applied to a training job's log lines.

SageMaker searches every log line with each definition's regular expression and takes
the first capture group as a float; the job's ``FinalMetricDataList`` holds the last
value of each metric. Values that do not parse as a finite float are ignored.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from harness.errors import ConfigError


@dataclass(frozen=True)
class MetricPoint:
    name: str
    value: float
    timestamp: str  # ISO 8601, UTC


def _definition(d: Any) -> tuple[str, str]:
    if isinstance(d, Mapping):
        name, regex = d.get("Name"), d.get("Regex")
    else:  # harness.config.MetricDefinition
        name, regex = getattr(d, "Name", None), getattr(d, "Regex", None)
    if not isinstance(name, str) or not isinstance(regex, str):
        raise ConfigError("a metric definition needs a Name and a Regex",
                          field="MetricDefinitions", expected='{"Name": ..., "Regex": ...}',
                          got=d)
    return name, regex


class MetricParser:
    """Feed log lines; collect each metric's time series."""

    def __init__(self, definitions: Iterable[Any]):
        self._patterns: list[tuple[str, re.Pattern]] = []
        for d in definitions:
            name, regex = _definition(d)
            try:
                pattern = re.compile(regex)
            except re.error as e:
                raise ConfigError(f"not a regular expression ({e})",
                                  field=f"MetricDefinitions[{name}].Regex", got=regex) from None
            if pattern.groups < 1:
                raise ConfigError("the regex needs a capture group for the value",
                                  field=f"MetricDefinitions[{name}].Regex", got=regex)
            self._patterns.append((name, pattern))
        self.series: dict[str, list[MetricPoint]] = {name: [] for name, _ in self._patterns}

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self._patterns]

    def feed(self, line: str) -> list[tuple[str, float]]:
        """Apply every definition to one line; return the (name, value) pairs found."""
        found = []
        now = None
        for name, pattern in self._patterns:
            m = pattern.search(line)
            if not m or m.group(1) is None:
                continue
            try:
                value = float(m.group(1))
            except ValueError:
                continue
            if not math.isfinite(value):
                continue
            now = now or datetime.now(timezone.utc).isoformat()
            self.series[name].append(MetricPoint(name, value, now))
            found.append((name, value))
        return found

    def latest(self, name: str) -> float | None:
        points = self.series.get(name)
        return points[-1].value if points else None

    def final(self) -> list[dict[str, Any]]:
        """``FinalMetricDataList``: the last value of every metric that was seen."""
        return [{"MetricName": name, "Value": points[-1].value, "Timestamp": points[-1].timestamp}
                for name, points in self.series.items() if points]
