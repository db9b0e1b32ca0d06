"""The Step Functions service tasks that close the gaps of moto's ASL interpreter.

Built lazily (``build_classes()``): importing this module must not import moto's
interpreter. ``cloud_runners.emulator.moto_gaps`` checks what of moto they rely on and
installs them (``apply()``); the gaps are reproduced in
``tests/cloud_runners/emulator/test_moto_gaps.py``. Gap by gap, what they fix:

1. ``glue:startJobRun.sync`` fails with ``'NoneType' object has no attribute
   'interrupt_all'``: ``StateTaskServiceCallback._eval_integration_pattern`` calls
   ``callback_endpoint.interrupt_all()`` in a ``finally`` although the endpoint exists
   only for ``.waitForTaskToken`` integrations (Glue supports ``.sync`` only). Fixed by
   ``_SyncIntegration._eval_integration_pattern``: the same steps for ``.sync`` without a
   callback endpoint (pop the task output, evaluate the timeout, build the sync resolver,
   poll it with ``_eval_sync``, push the result).
2. Once that passes, the execution's output holds the ``GetJobRun`` datetimes and
   ``DescribeExecution`` fails (``moto/stepfunctions/responses.py`` ``json.dumps``es the
   output). AWS Step Functions gives these fields as epoch milliseconds; the service
   clients of the patched tasks convert every datetime of a response to that
   (botocore ``after-call`` hook), which also keeps failure causes JSON.
3. ``sagemaker`` is in ``_UNSUPPORTED_SERVICE_NAMES``: its tasks are forwarded as plain
   calls and ``.sync`` raises ``Unsupported sync callback procedure``. Fixed by
   ``StateTaskServiceSageMaker``: request-response for the optimised SageMaker actions,
   ``.sync`` for ``createTrainingJob`` (polls ``DescribeTrainingJob``; ``Completed`` is the
   output, ``Failed``/``Stopped`` fail the task with ``States.TaskFailed`` and the
   describe response, ``FailureReason`` included, as the cause, as AWS does), and the
   same for ``createProcessingJob`` (polls ``DescribeProcessingJob``) and
   ``createHyperParameterTuningJob`` (polls ``DescribeHyperParameterTuningJob``;
   ``Stopping`` is still running). These re-use no more of moto than the callback
   machinery fingerprinted in ``moto_gaps``; what the bridges rely on in moto's SageMaker they
   fingerprint themselves.
4. ``aws-sdk:s3:getObject`` gives the botocore ``StreamingBody`` as ``Body``, so
   ``States.StringToJson($.Body)`` fails (``'StreamingChecksumBody' object has no
   attribute 'strip'``) and a task output holding it cannot be copied ("cannot pickle
   '_io.BufferedReader' object"). AWS Step Functions gives the body as a string. Fixed by
   ``EmulatorAwsSdk``: moto's aws-sdk task, whose response has every streaming body read
   into a str, and every timestamp (``copyObject``'s ``CopyObjectResult.LastModified``,
   which would make ``DescribeExecution`` fail as in gap 2) an ISO 8601 string, the form
   AWS SDK integrations give.

5. An execution stopped (``StopExecution``) while a ``.sync`` task waits for its job ends
   the wait loop, and moto then records ``TaskSucceeded`` (with no output) before
   ``ExecutionAborted``. AWS records the task state as aborted: the fixed services record
   ``TaskStateAborted`` instead (``_AbortedWhenStopped._after_eval_execution``). The job
   itself is stopped when the emulator stops (``cloud_runners.emulator.workers``).

6. ``states:startExecution`` (request-response, ``.sync``, ``.sync:2``,
   ``.waitForTaskToken``) fails with ``States.Runtime`` and the cause ``'StateMachineArn'``:
   ``StateTaskServiceSfn._eval_service_task`` hands the Task's parameters, in the names
   AWS documents for the integration (``StateMachineArn``, ``Input``, ``Name``), to
   boto3's ``start_execution`` unconverted, whose serializer wants ``stateMachineArn``
   (moto's base ``_normalise_parameters`` is a no-op). The response would come back as
   boto3 gives it (``executionArn``, ``startDate`` a datetime: gap 2 again), and the
   ``.sync`` resolvers read ``ExecutionArn`` from it. Fixed by ``EmulatorSfn``: the
   parameters are matched case-insensitively to the StartExecution request's members
   (``Input`` as an object is JSON-encoded by moto's own ``_normalise_parameters``, a
   string is passed as it is, ``Name`` is optional: without it the execution gets a UUID
   as its name, as on AWS, where moto's backend would name it ``None``), and the result
   is AWS's:
   ``{"ExecutionArn", "StartDate"}`` (epoch milliseconds); the ``.sync``/``.sync:2``
   results (``DescribeExecution``) get AWS's capitalised field names
   (``ExecutionArn``, ``Status``, ``Output``, ``StartDate``...) and epoch milliseconds too.

``build_classes()`` maps the service names to the fixed classes (``glue``, ``sagemaker``,
``aws-sdk``, ``states``), which ``moto_gaps.apply()`` hands out from its wrapper around
``state_task_factory.state_task_service_for``.
"""
from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable
from typing import Any

import botocore.session

# ``.sync`` SageMaker actions: the describe call polled, its name field, its status field.
_SAGEMAKER_SYNC = {
    "create_training_job": ("describe_training_job", "TrainingJobName", "TrainingJobStatus"),
    "create_processing_job": ("describe_processing_job", "ProcessingJobName",
                              "ProcessingJobStatus"),
    "create_hyper_parameter_tuning_job": ("describe_hyper_parameter_tuning_job",
                                          "HyperParameterTuningJobName",
                                          "HyperParameterTuningJobStatus"),
}
_SAGEMAKER_SYNC_ACTIONS = set(_SAGEMAKER_SYNC)
# The optimised SageMaker integrations of AWS Step Functions (request-response).
_SAGEMAKER_ACTIONS = {"create_endpoint", "create_endpoint_config", "create_hyper_parameter_tuning_job",
                      "create_labeling_job", "create_model", "create_processing_job",
                      "create_training_job", "create_transform_job", "update_endpoint"}
_JOB_TERMINAL = {"Completed", "Failed", "Stopped"}
_JOB_FAILED = {"Failed", "Stopped"}


def _epoch_millis(value: Any) -> Any:
    """Every datetime in a response as epoch milliseconds (what Step Functions outputs)."""
    if isinstance(value, dict):
        return {k: _epoch_millis(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_epoch_millis(v) for v in value]
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return int(value.timestamp() * 1000)
    return value


def _convert_response(parsed: Any, **_: Any) -> None:
    if isinstance(parsed, dict):
        converted = _epoch_millis(parsed)
        parsed.clear()
        parsed.update(converted)


def _read_streams(value: Any) -> Any:
    """Every botocore streaming body in a response read into a str (UTF-8), every
    timestamp an ISO 8601 string (``2026-12-01T06:13:51.000Z``): what AWS SDK
    integrations of Step Functions give."""
    from botocore.response import StreamingBody

    if isinstance(value, StreamingBody):
        return value.read().decode("utf-8", "replace")
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds") \
            .replace("+00:00", "Z")
    if isinstance(value, dict):
        return {k: _read_streams(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_read_streams(v) for v in value]
    return value


def _to_request_members(service: str, action: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """The Task's parameters (``StateMachineArn``, ``Input``, ``Name``: the names AWS
    documents for its optimised integrations) under the request members' names of the
    boto3 operation (``stateMachineArn``...), matched case-insensitively; a parameter
    that matches no member is kept as it is (botocore's validation then names it)."""
    model = botocore.session.get_session().get_service_model(service)
    operation = next(name for name in model.operation_names
                     if botocore.xform_name(name) == action)
    members = {m.lower(): m for m in model.operation_model(operation).input_shape.members}
    return {members.get(key.lower(), key): value for key, value in parameters.items()}


def _sfn_cased(response: dict[str, Any]) -> dict[str, Any]:
    """A Step Functions API answer as the optimised integration gives it: field names
    capitalised (``executionArn`` -> ``ExecutionArn``; also inside the ``...Details``
    objects, never inside ``Input``/``Output``), datetimes as epoch milliseconds."""
    def cap(key: str) -> str:
        return key[:1].upper() + key[1:]

    out: dict[str, Any] = {}
    for key, value in _epoch_millis(response).items():
        if isinstance(value, dict) and key.endswith("Details"):
            value = {cap(k): v for k, v in value.items()}
        out[cap(key)] = value
    return out


def _with_epoch_millis(client: Any) -> Any:
    client.meta.events.register("after-call.*.*", _convert_response)
    return client


# ----------------------------------------------------------------------------- the classes

_classes: dict[str, type] = {}
_classes_lock = threading.Lock()


def build_classes() -> dict[str, type]:
    with _classes_lock:
        if _classes:
            return _classes
        from moto.stepfunctions.parser.api import HistoryEventType, TaskFailedEventDetails
        from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import (
            CustomErrorName,
        )
        from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
            FailureEvent,
            FailureEventException,
        )
        from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import (
            StatesErrorName,
        )
        from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (  # noqa: E501
            StatesErrorNameType,
        )
        from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.resource import (  # noqa: E501
            ResourceCondition,
        )
        from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_callback import (  # noqa: E501
            StateTaskServiceCallback,
        )
        from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_aws_sdk import (  # noqa: E501
            StateTaskServiceAwsSdk,
        )
        from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_glue import (  # noqa: E501
            StateTaskServiceGlue,
        )
        from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service import (  # noqa: E501
            StateTaskService,
        )
        from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sfn import (  # noqa: E501
            StateTaskServiceSfn,
        )
        from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
        from moto.stepfunctions.parser.asl.utils.boto_client import boto_client_for
        from moto.stepfunctions.parser.asl.utils.encoding import to_json_str
        from botocore.exceptions import ClientError

        class _SyncIntegration:
            """``.sync`` without the callback endpoint that only ``.waitForTaskToken`` has."""

            def _eval_integration_pattern(self, env, resource_runtime_part,
                                          normalised_parameters, state_credentials) -> None:
                if (self.resource.condition != ResourceCondition.Sync
                        or ResourceCondition.WaitForTaskToken
                        in self._supported_integration_patterns):
                    return super()._eval_integration_pattern(
                        env, resource_runtime_part, normalised_parameters, state_credentials)
                task_output = env.stack.pop()
                self.timeout.eval(env=env)
                timeout_seconds = env.stack.pop()
                env.stack.append(task_output)  # the sync resolver pops it
                sync_resolver = self._build_sync_resolver(
                    env=env, resource_runtime_part=resource_runtime_part,
                    normalised_parameters=normalised_parameters,
                    state_credentials=state_credentials)
                outcome = self._eval_sync(env=env, sync_resolver=sync_resolver,
                                          timeout_seconds=timeout_seconds,
                                          callback_endpoint=None, heartbeat_endpoint=None)
                env.stack.append(outcome)

        class _AbortedWhenStopped(StateTaskService):
            """Gap 5: comes after StateTaskServiceCallback in the MRO, whose
            ``_after_eval_execution`` waits for the job and then calls this one."""

            def _after_eval_execution(self, env, *args, **kwargs) -> None:
                if env.is_running():
                    return super()._after_eval_execution(env, *args, **kwargs)
                env.event_manager.add_event(context=env.event_history_context,
                                            event_type=HistoryEventType.TaskStateAborted)

        class EmulatorGlue(_SyncIntegration, StateTaskServiceGlue, _AbortedWhenStopped):
            @staticmethod
            def _get_glue_client(resource_runtime_part, state_credentials):
                return _with_epoch_millis(boto_client_for(
                    service="glue", region=resource_runtime_part.region,
                    state_credentials=state_credentials))

        class StateTaskServiceSageMaker(_SyncIntegration, StateTaskServiceCallback,
                                        _AbortedWhenStopped):
            def __init__(self):
                super().__init__(supported_integration_patterns={ResourceCondition.Sync})

            def _action(self) -> str:
                return self._get_boto_service_action()

            def _get_supported_parameters(self) -> set[str] | None:
                action = self._action()
                if action not in _SAGEMAKER_ACTIONS:
                    return None
                if self.resource.condition == ResourceCondition.Sync \
                        and action not in _SAGEMAKER_SYNC_ACTIONS:
                    return None
                model = botocore.session.get_session().get_service_model("sagemaker")
                op = model.operation_model(self.resource.api_action[:1].upper()
                                           + self.resource.api_action[1:])
                return set(op.input_shape.members)

            def _client(self, resource_runtime_part, state_credentials):
                return _with_epoch_millis(boto_client_for(
                    service="sagemaker", region=resource_runtime_part.region,
                    state_credentials=state_credentials))

            def _from_error(self, env, ex):
                if isinstance(ex, ClientError):
                    name = f"SageMaker.{ex.response['Error']['Code']}"
                    return FailureEvent(
                        env=env, error_name=CustomErrorName(name),
                        event_type=HistoryEventType.TaskFailed,
                        event_details=EventDetails(taskFailedEventDetails=TaskFailedEventDetails(
                            error=name, cause=ex.response["Error"]["Message"],
                            resource=self._get_sfn_resource(),
                            resourceType=self._get_sfn_resource_type())))
                return super()._from_error(env=env, ex=ex)

            def _eval_service_task(self, env, resource_runtime_part, normalised_parameters,
                                   state_credentials):
                client = self._client(resource_runtime_part, state_credentials)
                response = getattr(client, self._action())(**normalised_parameters)
                response.pop("ResponseMetadata", None)
                env.stack.append(response)

            def _build_sync_resolver(self, env, resource_runtime_part, normalised_parameters,
                                     state_credentials) -> Callable[[], Any] | None:
                if self._action() not in _SAGEMAKER_SYNC:
                    return super()._build_sync_resolver(env, resource_runtime_part,
                                                        normalised_parameters, state_credentials)
                describe, name_field, status_field = _SAGEMAKER_SYNC[self._action()]
                env.stack.pop()  # the Create* answer: {"TrainingJobArn"}, {"ProcessingJobArn"}...
                name = normalised_parameters[name_field]
                client = self._client(resource_runtime_part, state_credentials)

                def resolve() -> Any | None:
                    job = getattr(client, describe)(**{name_field: name})
                    job.pop("ResponseMetadata", None)
                    status = job.get(status_field)
                    if status not in _JOB_TERMINAL:
                        return None
                    if status not in _JOB_FAILED:
                        return job
                    raise FailureEventException(FailureEvent(
                        env=env, error_name=StatesErrorName(typ=StatesErrorNameType.StatesTaskFailed),
                        event_type=HistoryEventType.TaskFailed,
                        event_details=EventDetails(taskFailedEventDetails=TaskFailedEventDetails(
                            resource=self._get_sfn_resource(),
                            resourceType=self._get_sfn_resource_type(),
                            error=StatesErrorNameType.StatesTaskFailed.to_name(),
                            cause=to_json_str(job)))))

                return resolve

        class EmulatorAwsSdk(StateTaskServiceAwsSdk):
            """moto's aws-sdk task; streaming bodies in the response are read into str
            (``s3:getObject``'s ``Body``), as AWS Step Functions gives them."""

            def _eval_service_task(self, env, resource_runtime_part, normalised_parameters,
                                   state_credentials):
                super()._eval_service_task(env, resource_runtime_part, normalised_parameters,
                                           state_credentials)
                env.stack.append(_read_streams(env.stack.pop()))

        class EmulatorSfn(StateTaskServiceSfn, _AbortedWhenStopped):
            """Gap 6: ``states:startExecution`` with AWS's parameter names, AWS's result."""

            def _eval_service_task(self, env, resource_runtime_part, normalised_parameters,
                                   state_credentials):
                client = _with_epoch_millis(boto_client_for(
                    region=resource_runtime_part.region, service="stepfunctions",
                    state_credentials=state_credentials))
                action = self._get_boto_service_action()
                request = _to_request_members("stepfunctions", action, normalised_parameters)
                if action == "start_execution" and not request.get("name"):
                    # moto's backend would name it "None" (a second one then fails with
                    # ExecutionAlreadyExists); AWS generates a UUID.
                    request["name"] = str(uuid.uuid4())
                response = getattr(client, action)(**request)
                response.pop("ResponseMetadata", None)
                env.stack.append(_sfn_cased(response))

            def _normalise_response(self, response, boto_service_name=None,
                                    service_action_name=None) -> None:
                # The resolvers of .sync/.sync:2 call it on DescribeExecution's answer (a
                # dict whose keys are boto3's, its dates datetimes): AWS's result.
                if service_action_name == "describe_execution" and isinstance(response, dict):
                    converted = _sfn_cased(response)
                    response.clear()
                    response.update(converted)

        _classes.update({"glue": EmulatorGlue, "sagemaker": StateTaskServiceSageMaker,
                         "aws-sdk": EmulatorAwsSdk, "states": EmulatorSfn})
        return _classes
