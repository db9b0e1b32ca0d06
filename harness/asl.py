"""Compile a workflow to Amazon States Language by walking its graph.

Each state-machine step contributes its own state(s) (``Step.states``: resource,
``Parameters`` from the very request the local runner executes, result selector,
retry/catch); the compiler links them in order, ends the path in a Succeed state and adds
the catch-all Fail state every Task's Catch leads to. It knows no step by name.

Data between states: each step writes its result to ``$.<ResultKey>``; the steps that
ran on the client before the execution are in the execution input under their result
keys, next to ``RunId``, ``Bucket``, ``Prefix``, ``BaseUri`` and the workflow's own
execution input. ``check_references`` makes sure every placeholder a request uses has a
value at that point of the run (and that a step's field is one the state machine keeps).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.errors import ConfigError
from harness.placeholders import (
    BASE_URI_KEY,
    CODE_URI_KEY,
    BUCKET_KEY,
    PREFIX_KEY,
    code_uri_of,
    RUN_ID_KEY,
    references,
)
from harness.steps.base import BEFORE, MACHINE, PIPELINE_FAILED, BuildContext, Step

if TYPE_CHECKING:
    from harness.workflow import Workflow

SUCCEEDED = "PipelineSucceeded"


def _fields_kept(step: Step) -> tuple[str, ...] | None:
    """What of a step's output later states can read (None: everything)."""
    return None if step.placement == BEFORE else step.result_fields


def check_references(wf: "Workflow", ctx: BuildContext, *, cloud: bool) -> None:
    """Every placeholder of every request names a value that exists when the step runs."""
    known: dict[str, tuple[str, ...] | None] = {
        RUN_ID_KEY: None, BASE_URI_KEY: None, CODE_URI_KEY: None,
        **{k: None for k in wf.execution_input.schema}}
    if cloud:
        known.update({BUCKET_KEY: None, PREFIX_KEY: None})
    producers: dict[str, Step] = {s.result_key: s for s in wf.steps}

    def check(step: Step, kept: dict[str, tuple[str, ...] | None]) -> None:
        for path in references(step.request(ctx)):
            head, _, rest = path[2:].partition(".")
            head = head.split("[", 1)[0]
            if head not in kept:
                if head in producers:
                    raise ConfigError(
                        f"step '{step.state_id}' uses {path}, but step "
                        f"'{producers[head].state_id}' has not run at that point",
                        field=step.state_id, expected="an earlier step's output")
                raise ConfigError(f"step '{step.state_id}' uses {path}, which no run has",
                                  field=step.state_id, expected="$.RunId, $.BaseUri, an "
                                  "execution input key or an earlier step's output")
            fields = kept[head]
            field = rest.split(".", 1)[0].split("[", 1)[0]
            if cloud and fields is not None and field and field not in fields:
                raise ConfigError(
                    f"step '{step.state_id}' uses {path}, but the state machine keeps only "
                    f"{', '.join(fields)} of step '{producers[head].state_id}'",
                    field=step.state_id, expected="one of " + ", ".join(fields))

    kept = dict(known)
    for step in wf.main_path:
        check(step, kept)
        kept[step.result_key] = _fields_kept(step) if cloud else None
    for step in wf.steps[len(wf.main_path):]:
        check(step, kept)


def compile_workflow(wf: "Workflow", ctx: BuildContext) -> dict[str, Any]:
    """The ASL definition of ``wf``'s state-machine steps."""
    machine = wf.machine_steps()
    if not machine:
        raise ConfigError(f"workflow '{wf.name}' has no step that runs in the state machine",
                          expected="at least one Glue, training, processing or hosting step")
    check_references(wf, ctx, cloud=True)
    states: dict[str, Any] = {}
    for step in machine:
        nxt = step.next_step
        next_state = nxt.state_id if nxt is not None and nxt.placement == MACHINE else SUCCEEDED
        for name, state in step.states(ctx, next_state).items():
            if name in states or name in (SUCCEEDED, PIPELINE_FAILED):
                raise ConfigError(f"state name '{name}' is used twice", field=step.state_id)
            states[name] = state
    states[SUCCEEDED] = {"Type": "Succeed"}
    # A fixed custom error name (names starting "States." are reserved), the caught
    # error's name and cause in the cause.
    states[PIPELINE_FAILED] = {"Type": "Fail", "Error": "PipelineStepFailed",
                               "CausePath": "States.Format('{}: {}', $.Error.Error, "
                                            "$.Error.Cause)"}
    return {
        "Comment": wf.comment,
        "StartAt": machine[0].state_id,
        "TimeoutSeconds": int(wf.timeout_seconds),
        "States": states,
    }


def state_to_step(wf: "Workflow") -> dict[str, str]:
    """ASL state name -> the step that made it (to read an execution's history)."""
    return {name: s.state_id for s in wf.machine_steps() for name in s.state_names()}


def execution_input(wf: "Workflow", *, run_id: str, bucket: str, prefix: str,
                    inputs: dict[str, Any] | None = None,
                    before: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The input of one execution: the run's location, the workflow's execution input and
    the outputs of the client-side steps that ran before it (by result key)."""
    doc: dict[str, Any] = {RUN_ID_KEY: run_id, BUCKET_KEY: bucket, PREFIX_KEY: prefix,
                           BASE_URI_KEY: f"s3://{bucket}/{prefix}",
                           CODE_URI_KEY: code_uri_of(f"s3://{bucket}/{prefix}")}
    doc.update(wf.execution_input.validate(inputs))
    for step in wf.before_steps():
        if before is None or step.state_id not in before:
            raise ConfigError(f"step '{step.state_id}' runs before the execution and has no "
                              "output yet", field=step.state_id)
        doc[step.result_key] = before[step.state_id]
    return doc


def input_schema(wf: "Workflow") -> dict[str, Any]:
    """JSON Schema of the execution input (for people and for checks)."""
    props: dict[str, Any] = {
        RUN_ID_KEY: {"type": "string", "pattern": "^[A-Za-z0-9-]{1,40}$"},
        BUCKET_KEY: {"type": "string", "minLength": 3, "maxLength": 63},
        PREFIX_KEY: {"type": "string", "description": "the run's key prefix, no slashes at "
                     "the ends"},
        BASE_URI_KEY: {"type": "string", "pattern": "^s3://"},
        CODE_URI_KEY: {"type": "string", "pattern": "^s3://",
                       "description": "where the run's code is (default <BaseUri>/code)"},
    }
    props.update(wf.execution_input.json_schema()["properties"])
    for step in wf.before_steps():
        props[step.result_key] = {"type": "object",
                                  "description": f"output of step '{step.state_id}' "
                                  f"({step.kind}), which ran on the client"}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": f"{wf.name} execution input", "type": "object",
            "required": list(props), "properties": props}


def _happy_path(definition: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The states entered on a successful run (a Choice takes its first choice) and the
    polling loops on it (a Wait state that a Choice's Default leads back to)."""
    states = definition["States"]
    path: list[str] = []
    name: str | None = definition["StartAt"]
    while name is not None and name not in path:
        path.append(name)
        state = states[name]
        if state["Type"] == "Choice":
            rules = [c for c in state.get("Choices", []) if "Not" not in c]
            name = rules[0]["Next"] if rules else state.get("Default")
        elif state["Type"] in ("Succeed", "Fail") or state.get("End"):
            name = None
        else:
            name = state.get("Next")
    loops: list[list[str]] = []
    for name in path:
        if states[name]["Type"] != "Wait":
            continue
        loop, cur = [name], states[name].get("Next")
        while cur is not None and cur != name and len(loop) < len(states):
            loop.append(cur)
            st = states[cur]
            if st["Type"] == "Choice":
                if st.get("Default") == name:
                    break
                cur = None
            else:
                cur = st.get("Next")
        if cur == name or states[loop[-1]].get("Default") == name:
            loops.append(loop)
    return path, loops


def transitions(definition: dict[str, Any]) -> dict[str, Any]:
    """State transitions of one successful execution, counted from the definition:
    ``{"once": n, "per_poll": [m per polling loop], "states": [...]}``."""
    path, loops = _happy_path(definition)
    return {"once": len(path), "per_poll": [len(loop) for loop in loops],
            "loops": loops, "states": path}
