"""The step kind: the unit of extension of a pipeline.

A step kind declares, in one class, everything the backends ask of it:

- ``request(ctx)``: the AWS request body, built once, with placeholders
  (``harness.placeholders``) for what only a run knows;
- ``local_runner``: the runner that executes that request on this machine
  (``"module:Class"``, imported lazily);
- ``placement``: where it runs on the emulator and cloud backends: inside the state
  machine (``MACHINE``), or on the client before the execution (``BEFORE``: e.g. upload
  the data) or after it (``AFTER``: e.g. call the endpoint); the client-side kinds name a
  ``cloud_runner``;
- ``states(...)``: its ASL state(s) (resource, ``Parameters`` from the request, result
  selector, retry/catch), for ``MACHINE`` steps;
- ``emulator_bridge``: the compute bridge that makes the embedded emulator do its work;
- ``code()``: the files it runs (Glue script, training source dir, processing code),
  staged beside the run's data by each backend;
- ``facts``/``headline``: what it adds to the run summary; ``creates``/``name_prefixes``
  and ``cost``: what it creates in AWS and what that costs.

The executor, the ASL compiler, the cloud run, the cost estimate and the CLI walk the
pipeline and ask its steps; none of them knows a step by name.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Protocol

from harness.errors import ConfigError, HarnessError
from harness.placeholders import CODE_URI, Placeholder, asl_parameters

BEFORE = "before"     # on the client, before the state machine runs
MACHINE = "machine"   # a state of the state machine
AFTER = "after"       # on the client, after the state machine succeeded
PLACEMENTS = (BEFORE, MACHINE, AFTER)

# The catch-all Fail state every Task's Catch goes to (see harness.asl).
PIPELINE_FAILED = "PipelineFailed"

# Errors worth retrying with backoff: throttling and transient service faults.
RETRYABLE = ["ThrottlingException", "Glue.ThrottlingException",
             "Glue.InternalServiceException", "Glue.ConcurrentRunsExceededException",
             "SageMaker.ThrottlingException", "SageMaker.InternalFailure",
             "S3.SlowDownException", "States.Timeout"]

_STATE_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


class ImageSource(Protocol):
    """Container images by framework (the backend's setup provides one)."""

    def image(self, framework: str, version: str, scope: str, instance_type: str,
              py_version: str | None = None) -> str: ...


@dataclass
class BuildContext:
    """What a request builder may read besides its step's parameters."""

    backend: str                   # local | emulator | cloud | plan
    images: ImageSource
    role: str | None = None        # the SageMaker execution role (cloud backends)
    roles: dict[str, str] = field(default_factory=dict)  # e.g. {"glue": arn}
    # The tags every SageMaker resource of a run carries ([{"Key", "Value"}]):
    # teardown finds the project's resources by them.
    tags: list[dict[str, str]] = field(default_factory=list)
    # How often the state machine polls what has no .sync integration (an endpoint).
    poll_seconds: int = 30


@dataclass(frozen=True)
class CodeAsset:
    """A file or folder of this machine a step runs; staged under the run's code location.

    ``pack``: ``file`` copies one file, ``tar`` packs a folder as a deterministic
    ``sourcedir.tar.gz``, ``dir`` copies a folder's files.
    """

    source: Path
    target: str                    # path under <run>/code/
    pack: str = "file"

    @property
    def uri(self) -> str:
        return f"{CODE_URI}/{self.target}"


@dataclass(frozen=True)
class SetupRequest:
    """A resource a backend creates (or updates) before the steps run, e.g. the Glue job
    a StartJobRun names: ``("glue", "CreateJob", body)``."""

    service: str
    action: str
    name: str
    body: dict[str, Any]


def camel(state_id: str) -> str:
    """``endpoint-config`` -> ``EndpointConfig``: the state's result key in ``$``."""
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[-_]", state_id) if p)


def absolute(path: str | Path, what: str, *, directory: bool = False) -> Path:
    """A file or folder a step will run, checked when the pipeline is defined."""
    p = Path(path).expanduser().resolve()
    if directory and not p.is_dir():
        raise ConfigError(f"{what}: not a directory", file=str(p), field=what,
                          expected="an existing directory")
    if not directory and not p.is_file():
        raise ConfigError(f"{what}: file not found", file=str(p), field=what,
                          expected="an existing file")
    return p


def task_state(resource: str, parameters: dict[str, Any], result_key: str, next_state: str,
               comment: str, result_selector: dict[str, Any] | None = None,
               retry: bool = True) -> dict[str, Any]:
    """A Task state with the project's retry (throttling) and catch (-> PipelineFailed)."""
    state: dict[str, Any] = {"Type": "Task", "Comment": comment, "Resource": resource,
                             "Parameters": parameters}
    if result_selector:
        state["ResultSelector"] = result_selector
    state["ResultPath"] = f"$.{result_key}"
    if retry:
        state["Retry"] = [{"ErrorEquals": RETRYABLE, "IntervalSeconds": 10, "MaxAttempts": 4,
                           "BackoffRate": 2.0, "MaxDelaySeconds": 120,
                           "JitterStrategy": "FULL"}]
    state["Catch"] = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.Error",
                       "Next": PIPELINE_FAILED}]
    state["Next"] = next_state
    return state


def selector(fields: Iterable[str]) -> dict[str, str]:
    return {f"{f}.$": f"$.{f}" for f in fields}


class Step:
    """One state of a pipeline (see the module doc). Subclasses set the class variables
    and implement ``request``; ``MACHINE`` kinds also ``states``."""

    kind: ClassVar[str] = "step"
    title: ClassVar[str] = "step"
    placement: ClassVar[str] = MACHINE
    local_runner: ClassVar[str | None] = None
    cloud_runner: ClassVar[str | None] = None
    emulator_bridge: ClassVar[str | None] = None
    # Fields of the output the state machine keeps (ResultSelector); None: all of it.
    result_fields: ClassVar[tuple[str, ...] | None] = None
    # The Task resource of a step that is one Task state (``states`` then builds it).
    resource: ClassVar[str | None] = None
    # Whether the local backend may reuse this step's earlier result (harness.step_cache).
    cacheable: ClassVar[bool] = False

    def __init__(self, state_id: str, *, comment: str | None = None):
        if not isinstance(state_id, str) or not _STATE_ID.match(state_id):
            raise ConfigError("a step needs a state id", field="state_id",
                              expected="1-64 letters, digits, '-' or '_', starting with a "
                              "letter", got=state_id)
        self.state_id = state_id
        self.result_key = camel(state_id)
        self.comment = comment or self.title
        self.next_step: Step | None = None

    # -- chaining -------------------------------------------------------------------------

    def next(self, step: "Step") -> "Step":
        """Run ``step`` after this one; returns ``step`` (as the Data Science SDK does)."""
        if not isinstance(step, Step):
            raise ConfigError(f"{self.state_id}.next() takes a step", got=type(step).__name__)
        self.next_step = step
        return step

    def __rshift__(self, other: Any) -> "Chain":
        return Chain([self]) >> other

    def branches(self) -> list["Step"]:
        """Successors other than ``next_step`` (a gate's ``otherwise``)."""
        return []

    def can_stop(self) -> bool:
        """Whether this step may end the run as failed without an error (a gate)."""
        return False

    # -- data -----------------------------------------------------------------------------

    def output(self) -> Placeholder:
        """This step's output in later steps' requests: ``step.output()["Field"]``."""
        return Placeholder(f"$.{self.result_key}")

    def request(self, ctx: BuildContext) -> dict[str, Any]:
        """The AWS request body (placeholders for what only a run knows)."""
        raise NotImplementedError(f"{type(self).__name__}.request")

    def code(self) -> list[CodeAsset]:
        return []

    def known_output(self) -> dict[str, Any] | None:
        """The output of a client-side step when it is known without running it (an
        unattended execution, e.g. a schedule's, cannot run it); None: it must run."""
        return None

    def cache_inputs(self, request: dict[str, Any]) -> list[Any] | None:
        """What the step's result depends on besides its resolved request: local files or
        folders (``Path``: by content) and values; None when it cannot be cached this time
        (harness.step_cache)."""
        return []

    def emulator_bridges(self) -> list[str]:
        """The compute bridges the embedded emulator needs for this step."""
        return [self.emulator_bridge] if self.emulator_bridge else []

    def setup_requests(self, code_uris: dict[str, str], ctx: BuildContext
                       ) -> list[SetupRequest]:
        """Resources to create before the run (``code_uris``: CodeAsset.target -> URI)."""
        return []

    # -- the state machine ----------------------------------------------------------------

    def states(self, ctx: BuildContext, next_state: str) -> dict[str, dict[str, Any]]:
        """This step's ASL states; the first is named ``state_id``; they continue to
        ``next_state``. By default one Task on ``resource`` with the request as its
        ``Parameters`` and ``result_fields`` as its ResultSelector."""
        if self.resource is None:
            raise HarnessError(f"step '{self.state_id}' ({self.kind}) runs on the client, "
                               "not in the state machine")
        return {self.state_id: task_state(
            self.resource, self.parameters(ctx), self.result_key, next_state,
            self.state_comment(), selector(self.result_fields) if self.result_fields else None)}

    def state_comment(self) -> str:
        return self.comment

    def parameters(self, ctx: BuildContext) -> dict[str, Any]:
        return asl_parameters(self.request(ctx), f"{self.state_id}.Parameters")

    def state_names(self) -> list[str]:
        """Every ASL state this step makes (to map events back to the step)."""
        return [self.state_id]

    # -- the local run --------------------------------------------------------------------

    def after(self, output: dict[str, Any]) -> "Step | None":
        """The step to run after this one, given its output (a gate raises GateFailed)."""
        return self.next_step

    def resume_step(self) -> "Step":
        """Where a run that stopped at this step is resumed from."""
        return self

    # -- summary, AWS footprint -----------------------------------------------------------

    def facts(self, output: dict[str, Any]) -> dict[str, Any]:
        """What a person wants to see of this step's output in the run summary."""
        return {}

    def headline(self, output: dict[str, Any]) -> dict[str, float]:
        """Headline metrics (``harness runs`` shows the first)."""
        return {}

    @classmethod
    def table(cls, output: dict[str, Any]) -> tuple[list[str], list[list[Any]]] | None:
        """A table of the output for ``harness show RUN --step STEP`` (columns, rows), e.g.
        the trials of a tuning job; None when the kind has none."""
        return None

    @staticmethod
    def kind_class(kind: str) -> "type[Step] | None":
        """The step class of a kind name (any subclass imported so far)."""
        todo: list[type[Step]] = [Step]
        while todo:
            cls = todo.pop()
            if cls.kind == kind:
                return cls
            todo.extend(cls.__subclasses__())
        return None

    def creates(self, request: dict[str, Any]) -> list[tuple[str, str]]:
        """What a run creates in AWS through this step: [(what, name)]."""
        return []

    def name_prefixes(self) -> dict[str, str]:
        """Resource kind -> name prefix of what this step creates (IAM scoping, teardown)."""
        return {}

    def cost(self, pricing: Any) -> list[Any]:
        """Cost line items (``pricing`` is cloud_runners.cost.Pricing)."""
        return []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.state_id!r})"


class Chain:
    """Steps in order: ``Chain([a, b, c])`` or ``a >> b >> c`` (a linked to b, b to c)."""

    def __init__(self, steps: Iterable[Step] = ()):
        self.steps: list[Step] = []
        for s in steps:
            self._append(s)

    def _append(self, step: Any) -> None:
        if isinstance(step, Chain):
            for s in step.steps:
                self._append(s)
            return
        if not isinstance(step, Step):
            raise ConfigError("a chain holds steps", got=type(step).__name__)
        if self.steps:
            self.steps[-1].next(step)
        self.steps.append(step)

    def __rshift__(self, other: Any) -> "Chain":
        self._append(other)
        return self

    def append(self, step: Step) -> "Chain":
        self._append(step)
        return self

    @property
    def start(self) -> Step:
        if not self.steps:
            raise ConfigError("the chain is empty", expected="at least one step")
        return self.steps[0]
