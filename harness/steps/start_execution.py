"""``StartExecutionStep``: start another pipeline's run (Step Functions' ``states:startExecution``).

The drift monitoring workflow uses it to retrain when the traffic drifted: its gate's
``otherwise`` branch starts the training pipeline. One definition, three places:

- in the state machine: a Pass state draws a fresh run id (``States.UUID``), then a Task on
  ``arn:aws:states:::states:startExecution`` (request-response: the monitoring execution
  does not wait for the training) starts the project's state machine of ``workflow``
  (``<stack>-<workflow name>``, in the monitoring state machine's own partition, region and
  account) with an execution input in the shape ``harness.asl.execution_input`` gives a
  run: the new run id and location, and from ``reuse`` (the execution input of the run
  being retrained) its execution input values, the outputs of its client-side steps (the
  data it uploaded) and its ``CodeUri`` (the code it uploaded): the new run trains on them
  and writes only under its own location. The execution is named by the run id. The
  state machine role may start only the project's own state machines
  (``StartProjectPipelines`` in ``infrastructure.yaml``).
- locally (``local_runners.start_execution``): the pipeline runs as ``harness run`` with
  ``config`` in a child process, and the step waits for it (a laptop has no service to
  hand it to); its output names the new run and how it ended.

Whether the new model is deployed is the started pipeline's business: its own gate.
"""
from __future__ import annotations

from typing import Any, Mapping

from harness.errors import ConfigError
from harness.placeholders import BASE_URI_KEY, BUCKET_KEY, CODE_URI_KEY, code_uri_of
from harness.steps.base import BuildContext, Step, task_state

RESOURCE = "arn:aws:states:::states:startExecution"


def state_machine_name(stack_name: str, workflow_name: str) -> str:
    """The project's state machine of a workflow (created by bootstrap and by each run)."""
    return f"{stack_name}-{workflow_name}"[:80]


def _uuid_part(i: int) -> str:
    return f"States.ArrayGetItem(States.StringSplit(States.UUID(), '-'), {i})"


# A run id of 18 characters (8-4-4 hex digits of a UUID): a run id fits job names as the
# harness's own do (at most 20 characters, harness.steps.sagemaker_job.RUN_ID_SUFFIX).
FRESH_RUN_ID = f"States.Format('{{}}-{{}}-{{}}', {_uuid_part(0)}, {_uuid_part(1)}, {_uuid_part(2)})"


def _arn_part(i: int) -> str:
    return f"States.ArrayGetItem(States.StringSplit($$.StateMachine.Id, ':'), {i})"


class StartExecutionStep(Step):
    kind = "start-execution"
    title = "start a pipeline run"
    local_runner = "local_runners.start_execution:LocalStartExecutionRunner"
    resource = RESOURCE
    result_fields = ("ExecutionArn", "StartDate")

    def __init__(self, state_id: str, *, workflow: Any, config: Any,
                 reuse: Mapping[str, Any] | None = None, comment: str | None = None):
        """``workflow`` runs with ``config`` (a PipelineConfig); ``reuse``: the execution
        input of an earlier run of it, whose uploaded data and code the new run uses (the
        state machine needs it: the client-side steps cannot run there; locally the
        started run makes its own)."""
        super().__init__(state_id, comment=comment)
        from harness.workflow import Workflow
        if not isinstance(workflow, Workflow):
            raise ConfigError("a start-execution step starts a workflow",
                              field=f"{state_id}.workflow", got=type(workflow).__name__)
        reuse = dict(reuse or {})
        self.missing = [s.state_id for s in workflow.before_steps()
                        if not isinstance(reuse.get(s.result_key), dict)]
        if reuse and not (reuse.get(CODE_URI_KEY) or reuse.get(BASE_URI_KEY)):
            self.missing.append(CODE_URI_KEY)
        self.workflow = workflow
        self.config = config
        self.reused = {s.result_key: reuse[s.result_key] for s in workflow.before_steps()
                       if isinstance(reuse.get(s.result_key), dict)}
        self.reused.update({k: reuse[k] for k in workflow.execution_input.schema if k in reuse})
        if reuse:
            self.reused[CODE_URI_KEY] = reuse.get(CODE_URI_KEY) or code_uri_of(
                str(reuse[BASE_URI_KEY]))
        self.state_machine = state_machine_name(config.cloud.stack_name, workflow.name)
        self.key_prefix = config.cloud.prefix.strip("/")

    # -- definition -----------------------------------------------------------------------

    def request(self, ctx: BuildContext) -> dict[str, Any]:
        """What is started, as the local runner reads it (the ASL builds the rest)."""
        return {"StateMachineName": self.state_machine, "Pipeline": self.config.pipeline,
                "Config": self.config.model_dump(mode="json"),
                "Input": dict(self.reused)}

    def emulator_bridges(self) -> list[str]:
        return self.workflow.emulator_bridges()

    def name_prefixes(self) -> dict[str, str]:
        # The started pipeline's jobs run with the same roles: they are scoped to them too.
        return self.workflow.name_prefixes()

    def state_names(self) -> list[str]:
        return [self.state_id, f"{self.state_id}-start"]

    def states(self, ctx: BuildContext, next_state: str) -> dict[str, dict[str, Any]]:
        if self.missing:
            raise ConfigError(f"the started pipeline's client-side step(s) and code "
                              f"({', '.join(self.missing)}) cannot be made in a state machine",
                              field=f"{self.state_id}.reuse",
                              expected="the execution input of the run being retrained (its "
                              "uploaded data and code)")
        name, start = self.state_names()
        run = f"$.{self.result_key}Run.RunId"
        arn = (f"States.Format('arn:{{}}:states:{{}}:{{}}:stateMachine:{self.state_machine}', "
               f"{_arn_part(1)}, {_arn_part(3)}, {_arn_part(4)})")
        execution_input = {
            "RunId.$": run, f"{BUCKET_KEY}.$": f"$.{BUCKET_KEY}",
            "Prefix.$": f"States.Format('{self.key_prefix}/{{}}', {run})",
            "BaseUri.$": f"States.Format('s3://{{}}/{self.key_prefix}/{{}}', $.{BUCKET_KEY}, "
                         f"{run})",
            **self.reused}
        return {
            name: {"Type": "Pass", "Comment": f"a new run id for {self.workflow.name}",
                   "Parameters": {"RunId.$": FRESH_RUN_ID},
                   "ResultPath": f"$.{self.result_key}Run", "Next": start},
            start: task_state(RESOURCE, {"StateMachineArn.$": arn, "Name.$": run,
                                         "Input": execution_input},
                              self.result_key, next_state, self.state_comment(),
                              {"ExecutionArn.$": "$.ExecutionArn",
                               "StartDate.$": "$.StartDate"}),
        }

    # -- summary --------------------------------------------------------------------------

    def facts(self, output: dict[str, Any]) -> dict[str, Any]:
        # locally the run id and how it ended; on Step Functions the started execution
        facts = {"started run": output.get("RunId") or output.get("ExecutionArn")}
        if output.get("Status"):
            facts["its status"] = output["Status"]
        return facts
