"""``Workflow``: a pipeline written in Python, run locally, on the emulator or on AWS.

In the spirit of the Step Functions Data Science SDK (``stepfunctions.workflow``)::

    from harness.workflow import Workflow, ExecutionInput, run_path
    from harness.steps import GlueStartJobRunStep, TrainingStep, ...

    wf = Workflow("mnist", etl >> train >> evaluate >> gate >> model >> config >> endpoint)
    wf.render_graph()                  # Mermaid text; an image in a notebook
    print(wf.definition())             # the Amazon States Language document
    run = wf.run(backend="local")      # or "emulator", or "cloud"
    wf.create(); wf.execute()          # on AWS: the state machine, then one execution

Everything derives from this one object: the local executor walks its steps, the ASL
compiler asks each step for its states, the cloud run takes the client-side steps
(before/after the execution) from the step kinds, the cost estimate counts its states.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from harness.errors import ConfigError
from harness.placeholders import (
    BASE_URI,
    BUILT_IN_KEYS,
    RUN_ID,
    ExecutionInput,
    Placeholder,
    run_path,
    unique_name,
)
from harness.steps.base import AFTER, BEFORE, MACHINE, BuildContext, Chain, CodeAsset, Step

if TYPE_CHECKING:
    from harness.config import PipelineConfig
    from harness.graph import WorkflowGraph

# What a pipeline module needs besides the step classes (harness.steps).
__all__ = ["Workflow", "ExecutionInput", "Placeholder", "run_path", "unique_name", "RUN_ID",
           "BASE_URI", "load_workflow", "PlanImages"]


class PlanImages:
    """Image names for documents made without a backend: the SageMaker framework image
    a cloud run would use, written as ``<framework>-<scope>:<version>`` (no lookup)."""

    def image(self, framework: str, version: str, scope: str, instance_type: str,
              py_version: str | None = None) -> str:
        device = "gpu" if instance_type.startswith(("ml.g", "ml.p")) else "cpu"
        tail = f"-{py_version}" if py_version and scope == "training" else ""
        return f"<{framework}-{scope}:{version}-{device}{tail}>"


class Workflow:
    """A pipeline: a start step and everything reachable from it (see the module doc)."""

    def __init__(self, name: str, definition: Step | Chain, *,
                 execution_input: ExecutionInput | None = None, comment: str | None = None,
                 timeout_seconds: int | None = None):
        if not isinstance(name, str) or not name:
            raise ConfigError("a workflow needs a name", field="name", got=name)
        self.name = name
        self.start = definition.start if isinstance(definition, Chain) else definition
        if not isinstance(self.start, Step):
            raise ConfigError("a workflow's definition is a step or a chain of steps",
                              field="definition", got=type(definition).__name__)
        self.execution_input = execution_input or ExecutionInput()
        self.comment = comment or f"{name} (compiled by mlharness)"
        self.main_path = self._main_path()
        self.steps = self._reachable()
        self._check()
        self.timeout_seconds = timeout_seconds or (
            sum(int(getattr(s, "max_runtime_s", 0) or 0) for s in self.steps) + 3 * 3600)

    # -- structure ------------------------------------------------------------------------

    def _main_path(self) -> list[Step]:
        path, seen = [], set()
        step: Step | None = self.start
        while step is not None:
            if id(step) in seen:
                raise ConfigError(f"the chain loops back to step '{step.state_id}'",
                                  field=step.state_id, expected="a chain without cycles")
            seen.add(id(step))
            path.append(step)
            step = step.next_step
        return path

    def _reachable(self) -> list[Step]:
        out: list[Step] = []
        seen: set[int] = set()
        todo = [self.start]
        while todo:
            step = todo.pop(0)
            if id(step) in seen:
                continue
            seen.add(id(step))
            out.append(step)
            todo += ([step.next_step] if step.next_step is not None else []) + step.branches()
        main = {id(s) for s in self.main_path}
        return self.main_path + [s for s in out if id(s) not in main]

    def _check(self) -> None:
        ids: dict[str, Step] = {}
        keys: dict[str, Step] = {}
        reserved = set(BUILT_IN_KEYS) | set(self.execution_input.schema) | {"Error"}
        for s in self.steps:
            if s.state_id in ids:
                raise ConfigError(f"two steps are named '{s.state_id}'", field=s.state_id,
                                  expected="a unique state id per step")
            ids[s.state_id] = s
            if s.result_key in keys:
                raise ConfigError(f"steps '{keys[s.result_key].state_id}' and '{s.state_id}' "
                                  f"would both write $.{s.result_key}", field=s.state_id,
                                  expected="state ids that differ in more than '-'/'_' or case")
            if s.result_key in reserved:
                raise ConfigError(f"step '{s.state_id}' would write $.{s.result_key}, which "
                                  "is an execution input", field=s.state_id,
                                  expected="another state id")
            keys[s.result_key] = s
        order = {BEFORE: 0, MACHINE: 1, AFTER: 2}
        where = {BEFORE: "runs on the client before the state machine",
                 MACHINE: "runs in the state machine",
                 AFTER: "runs on the client after the state machine"}
        prev: Step | None = None
        for s in self.main_path:
            if prev is not None and order[s.placement] < order[prev.placement]:
                raise ConfigError(
                    f"step '{s.state_id}' {where[s.placement]} but follows step "
                    f"'{prev.state_id}', which {where[prev.placement]}",
                    field=s.state_id,
                    expected="client-side 'before' steps first, then the state machine's "
                    "steps, then client-side 'after' steps")
            prev = s
        for s in self.steps[len(self.main_path):]:
            if s.placement != MACHINE:
                raise ConfigError(f"step '{s.state_id}' is on a branch but runs on the client",
                                  field=s.state_id, expected="state machine steps on branches")
        names: dict[str, str] = {}
        for s in self.machine_steps():
            for n in s.state_names():
                if n in names:
                    raise ConfigError(f"state name '{n}' is made by steps '{names[n]}' and "
                                      f"'{s.state_id}'", field=s.state_id,
                                      expected="state ids that do not collide")
                names[n] = s.state_id

    def step(self, state_id: str) -> Step:
        for s in self.steps:
            if s.state_id == state_id:
                return s
        raise ConfigError(f"no step named {state_id!r}", field="step",
                          expected="one of " + ", ".join(s.state_id for s in self.steps))

    def before_steps(self) -> list[Step]:
        return [s for s in self.main_path if s.placement == BEFORE]

    def machine_steps(self) -> list[Step]:
        return [s for s in self.steps if s.placement == MACHINE]

    def after_steps(self) -> list[Step]:
        return [s for s in self.main_path if s.placement == AFTER]

    def code(self) -> list[CodeAsset]:
        """Every file or folder a step runs, once."""
        out: dict[str, CodeAsset] = {}
        for s in self.steps:
            for asset in s.code():
                if asset.target in out and out[asset.target].source != asset.source:
                    raise ConfigError(f"two code assets would be staged at code/{asset.target}",
                                      field=s.state_id)
                out[asset.target] = asset
        return list(out.values())

    def emulator_bridges(self) -> list[str]:
        """The compute bridges the embedded emulator needs for this workflow."""
        out: list[str] = []
        for s in self.machine_steps():
            out.extend(b for b in s.emulator_bridges() if b not in out)
        return out

    def name_prefixes(self) -> dict[str, str]:
        """Resource kind -> the name prefix of what the runs create (IAM scoping and
        teardown); one prefix per kind."""
        out: dict[str, tuple[str, str]] = {}
        for s in self.steps:
            for kind, prefix in s.name_prefixes().items():
                if kind in out and kind != "glue-job":
                    # a name prefix covers the longer ones that extend it ("<p>-*" in IAM)
                    if prefix.startswith(out[kind][0] + "-"):
                        continue
                    if out[kind][0].startswith(prefix + "-"):
                        out[kind] = (prefix, s.state_id)
                        continue
                if kind in out and out[kind][0] != prefix:
                    raise ConfigError(
                        f"steps '{out[kind][1]}' and '{s.state_id}' name their {kind}s "
                        f"'{out[kind][0]}-…' and '{prefix}-…'", field=s.state_id,
                        expected="one name prefix per resource kind (the IAM roles are "
                        "scoped to it)")
                out.setdefault(kind, (prefix, s.state_id))
        return {k: v[0] for k, v in out.items()}

    # -- documents ------------------------------------------------------------------------

    def build_context(self, backend: str = "plan", images: Any = None, role: str | None = None,
                      roles: dict[str, str] | None = None,
                      tags: list[dict[str, str]] | None = None,
                      poll_seconds: float = 30) -> BuildContext:
        return BuildContext(backend=backend, images=images or PlanImages(), role=role,
                            roles=dict(roles or {}), tags=list(tags or []),
                            poll_seconds=max(1, int(poll_seconds)))

    def definition(self, ctx: BuildContext | None = None) -> dict[str, Any]:
        """The Amazon States Language document (``json.dumps`` it for CreateStateMachine).

        Without ``ctx``: placeholder image names and no role (see ``harness cloud plan``
        for the document a cloud run sends)."""
        from harness.asl import compile_workflow
        return compile_workflow(self, ctx or self.build_context())

    def to_json(self, ctx: BuildContext | None = None, pretty: bool = True) -> str:
        return json.dumps(self.definition(ctx), indent=2 if pretty else None)

    def render_graph(self, statuses: dict[str, str] | None = None) -> "WorkflowGraph":
        """The graph: Mermaid text (``str()``), an image in a notebook; ``statuses`` (step
        -> SUCCEEDED/FAILED/...) colours the steps."""
        from harness.graph import WorkflowGraph
        return WorkflowGraph(self, statuses)

    # -- running --------------------------------------------------------------------------

    def run(self, backend: str = "local", *, inputs: dict[str, Any] | None = None,
            config: "PipelineConfig | None" = None, **options: Any):
        """Run once on ``backend`` (local | emulator | cloud); returns the run's result
        (record, summary, every step's input and output). ``options``: ``run_id``,
        ``resume``/``from_step`` (local), ``progress``, ``announce``, ``on_step``."""
        from harness.backends import backend_for
        from harness.config import PipelineConfig

        cfg = (config or PipelineConfig()).model_copy(deep=True)
        cfg.backend = backend
        return backend_for(backend).run(self, cfg, inputs=inputs, **options)

    def create(self, config: "PipelineConfig | None" = None, **options: Any) -> str:
        """On AWS: create or update the state machine (and the Glue jobs); its ARN."""
        from harness.backends import load
        from harness.config import PipelineConfig

        return load("cloud_runners.cloud_run:create_workflow")(
            self, config or PipelineConfig(), **options)

    def execute(self, inputs: dict[str, Any] | None = None,
                config: "PipelineConfig | None" = None, **options: Any):
        """On AWS: one run (client-side steps, the execution, then the after-steps)."""
        return self.run("cloud", inputs=inputs, config=config, **options)

    def __repr__(self) -> str:
        return f"Workflow({self.name!r}: {' -> '.join(s.state_id for s in self.main_path)})"


def load_workflow(spec: str, cfg: "PipelineConfig") -> Workflow:
    """The workflow named by ``spec``: ``package.module:attr`` or ``path/to/file.py:attr``;
    ``attr`` is a Workflow or a function ``(cfg) -> Workflow``."""
    import importlib
    import importlib.util
    from pathlib import Path

    target, _, attr = spec.partition(":")
    attr = attr or "build"
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_absolute():
            from harness.config import PROJECT_ROOT
            path = (Path.cwd() / path) if (Path.cwd() / path).exists() else PROJECT_ROOT / path
        if not path.is_file():
            raise ConfigError("pipeline module not found", file=str(path), field="pipeline",
                              expected="a Python file defining the workflow")
        module_spec = importlib.util.spec_from_file_location(f"_pipeline_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise ConfigError(f"cannot import the pipeline module ({e})", field="pipeline",
                              expected="package.module:attr or path/to/file.py:attr",
                              got=spec) from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise ConfigError(f"the pipeline module has no {attr!r}", field="pipeline", got=spec,
                          expected="a Workflow or a function (config) -> Workflow")
    wf = obj(cfg) if callable(obj) and not isinstance(obj, Workflow) else obj
    if not isinstance(wf, Workflow):
        raise ConfigError("the pipeline did not give a Workflow", field="pipeline", got=spec)
    return wf

