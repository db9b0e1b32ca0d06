"""Close the gaps of moto's Step Functions interpreter that the pipeline's ASL meets.

This is the one place where the emulator reaches into moto (pinned: 5.2.5). Nothing
installed is edited: ``apply()`` swaps one function reference at runtime and returns the
function that undoes it; ``check()`` lists what of moto's internals the patch relies on
and has changed (``tests/cloud_runners/emulator/test_moto_gaps.py`` fails naming the symbol).

The gaps (reproduced in ``tests/cloud_runners/emulator/test_moto_gaps.py``):

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
   ``Stopping`` is still running). These re-use no more of moto than the fingerprinted
   callback machinery below; what the bridges rely on in moto's SageMaker they
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

The fixed services are handed out by a wrapper around
``state_task_factory.state_task_service_for`` (the name the ASL parser calls); every other
service goes to moto's own factory.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import inspect
import threading
from collections.abc import Callable
from typing import Any

import botocore.session

MOTO_VERSION = "5.2.5"

_FACTORY_MODULE = "moto.stepfunctions.parser.asl.component.state.exec.state_task.state_task_factory"
_SERVICE_PKG = "moto.stepfunctions.parser.asl.component.state.exec.state_task.service"

# sha256 (first 16 hex) of the moto functions whose behaviour the patch re-implements or
# depends on, recorded from moto 5.2.5: a change upstream means the patch must be
# reviewed (and maybe dropped).
FINGERPRINTS = {
    f"{_SERVICE_PKG}.state_task_service_callback.StateTaskServiceCallback"
    "._eval_integration_pattern": "3b97ada1d4cb7280",
    f"{_SERVICE_PKG}.state_task_service_callback.StateTaskServiceCallback._eval_sync": "b8f76de4d5142da1",
    f"{_SERVICE_PKG}.state_task_service_glue.StateTaskServiceGlue._sync_to_start_job_run": "82d1956dae211d54",
    f"{_SERVICE_PKG}.state_task_service_factory.state_task_service_for": "a21a16afc5f63679",
    # gap 5: the callback's waits for the job, then calls the service's, which records
    # TaskSucceeded (_AbortedWhenStopped comes between the two)
    f"{_SERVICE_PKG}.state_task_service_callback.StateTaskServiceCallback"
    "._after_eval_execution": "baf0479ea012517d",
    f"{_SERVICE_PKG}.state_task_service.StateTaskService._after_eval_execution":
        "118261fe0a626bff",
    # EmulatorAwsSdk relies on it pushing the call's response on env.stack, unconverted
    f"{_SERVICE_PKG}.state_task_service_aws_sdk.StateTaskServiceAwsSdk._eval_service_task":
        "e68dc9e06e6ae0ce",
}

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


class MotoGapsError(RuntimeError):
    pass


def _resolve(dotted: str) -> Any:
    import importlib

    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def fingerprint(obj: Any) -> str:
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]


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


def _with_epoch_millis(client: Any) -> Any:
    client.meta.events.register("after-call.*.*", _convert_response)
    return client


# ----------------------------------------------------------------------------- the classes
# Built lazily: importing this module must not import moto's interpreter.

_classes: dict[str, type] = {}
_classes_lock = threading.Lock()


def _build_classes() -> dict[str, type]:
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

        _classes.update({"glue": EmulatorGlue, "sagemaker": StateTaskServiceSageMaker,
                         "aws-sdk": EmulatorAwsSdk})
        return _classes


# ----------------------------------------------------------------------------- guard, patch


def resolve_attr(dotted: str) -> Any:
    """Like ``_resolve`` for ``module.Class.attr`` but keeps properties as they are."""
    module, cls, attr = dotted.rsplit(".", 2)
    return inspect.getattr_static(_resolve(f"{module}.{cls}"), attr)


def check_fingerprints(fingerprints: dict[str, str], who: str,
                       resolve: Callable[[str], Any] = _resolve) -> list[str]:
    """The moto version and every fingerprinted symbol ``who`` relies on, as problems
    naming the symbol (empty: all as expected)."""
    problems: list[str] = []
    try:
        import moto
        if moto.__version__ != MOTO_VERSION:
            problems.append(f"moto.__version__ is {moto.__version__}, {who} was written "
                            f"for {MOTO_VERSION}")
    except Exception as e:  # pragma: no cover
        return [f"moto: cannot import ({e})"]
    for dotted, expected in fingerprints.items():
        try:
            obj = resolve(dotted)
            got = fingerprint(obj.fget if isinstance(obj, property) else obj)
        except Exception as e:
            problems.append(f"{dotted}: missing ({type(e).__name__}: {e})")
            continue
        if got != expected:
            problems.append(f"{dotted}: source changed (fingerprint {got}, expected {expected})")
    return problems


def check() -> list[str]:
    """What the patch relies on in moto and no longer finds as it was (empty: all good)."""
    problems = check_fingerprints(FINGERPRINTS, "the patch")
    if problems and problems[0].startswith("moto: cannot import"):  # pragma: no cover
        return problems
    try:
        factory = _resolve(_FACTORY_MODULE)
        if not callable(getattr(factory, "state_task_service_for", None)):
            problems.append(f"{_FACTORY_MODULE}.state_task_service_for: missing")
        unsupported = _resolve(f"{_SERVICE_PKG}.state_task_service_factory"
                               "._UNSUPPORTED_SERVICE_NAMES")
        if "sagemaker" not in unsupported:
            problems.append(f"{_SERVICE_PKG}.state_task_service_factory._UNSUPPORTED_SERVICE_NAMES"
                            ": no longer lists 'sagemaker' (moto integrates it now: review)")
        callback = _resolve(f"{_SERVICE_PKG}.state_task_service_callback.StateTaskServiceCallback")
        params = list(inspect.signature(callback._eval_sync).parameters)
        want = ["self", "env", "sync_resolver", "timeout_seconds", "callback_endpoint",
                "heartbeat_endpoint"]
        if params != want:
            problems.append(f"{_SERVICE_PKG}.state_task_service_callback.StateTaskServiceCallback"
                            f"._eval_sync: parameters {params}, expected {want}")
        boto_client_for = _resolve("moto.stepfunctions.parser.asl.utils.boto_client.boto_client_for")
        params = list(inspect.signature(boto_client_for).parameters)
        if params != ["region", "service", "state_credentials"]:
            problems.append("moto.stepfunctions.parser.asl.utils.boto_client.boto_client_for: "
                            f"parameters {params}")
    except Exception as e:
        problems.append(f"moto symbol missing: {type(e).__name__}: {e}")
    return problems


_applied_lock = threading.Lock()
_applied = 0
_original: Any = None


def apply() -> Callable[[], None]:
    """Install the fixes (idempotent, counted); return the function that removes them."""
    global _applied, _original
    problems = check()
    if problems:
        raise MotoGapsError("moto changed under the emulator's patch "
                            "(cloud_runners/emulator/moto_gaps.py): " + "; ".join(problems))
    classes = _build_classes()
    factory = _resolve(_FACTORY_MODULE)
    with _applied_lock:
        if _applied == 0:
            _original = factory.state_task_service_for
            original = _original

            def state_task_service_for(service_name: str):
                cls = classes.get(service_name)
                return cls() if cls is not None else original(service_name=service_name)

            state_task_service_for.__wrapped__ = original  # type: ignore[attr-defined]
            factory.state_task_service_for = state_task_service_for
        _applied += 1
    done = False

    def undo() -> None:
        global _applied, _original
        nonlocal done
        with _applied_lock:
            if done:
                return
            done = True
            _applied -= 1
            if _applied == 0 and _original is not None:
                factory.state_task_service_for = _original
                _original = None

    return undo


def is_applied() -> bool:
    return _applied > 0
