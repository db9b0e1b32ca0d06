"""The runner interface: one runner executes one step kind's request on one backend.

A step's request is built once (``harness.steps``) and handed to a runner; the local
runner executes it with ``file://`` URIs, a cloud runner sends it to AWS. A runner
returns the step's output as a JSON-able dict (for AWS stages: the shape of the matching
Describe* response).
"""
from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable

from harness.config import PipelineConfig
from harness.errors import HarnessError
from harness.progress import NullProgress, Progress

GLUE_JOBS = "glue:CreateJob"  # registry key of the Glue job definitions


@dataclass
class StageContext:
    """What a runner may use besides its request."""

    run_id: str
    step: str
    config: PipelineConfig
    log: logging.Logger  # writes to the step's log file (and nowhere else)
    progress: Progress = field(default_factory=NullProgress)
    # Resources that outlive the step (e.g. a served endpoint) register their cleanup
    # here; the executor closes the stack at the end of the run.
    resources: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    # A loud one-line message for the person running the pipeline (also logged).
    announce: Callable[[str], None] = print
    # What the backend's setup and the run's earlier steps created, by
    # "<service>:<action>" and name (the Glue jobs a StartJobRun names, the CreateModel
    # request an endpoint config names): the local stand-in for AWS's state.
    registry: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def glue_jobs(self) -> dict[str, dict[str, Any]]:
        """The Glue job definitions (CreateJob bodies) by job name."""
        return self.registry.setdefault(GLUE_JOBS, {})


class StageRunner(ABC):
    """Executes one step kind's request on one backend."""

    @abstractmethod
    def run(self, request: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        """Execute ``request``; return the step output. Raise HarnessError on bad input."""

    def replay(self, request: dict[str, Any], output: dict[str, Any], ctx: StageContext
               ) -> None:
        """A resumed run reuses this step's earlier output: restore what the step left in
        ``ctx.registry`` (nothing by default)."""


def required_field(request: dict[str, Any], *path: str, what: str, expected: str) -> Any:
    """``request[path[0]][path[1]]...``; a missing field is a HarnessError naming its dotted
    path (``what``: e.g. "the training request"; ``expected``: the request's kind)."""
    node: Any = request
    for i, key in enumerate(path):
        if not isinstance(node, dict) or key not in node:
            raise HarnessError(f"{what} lacks a required field",
                               field=".".join(path[: i + 1]), expected=expected)
        node = node[key]
    return node
