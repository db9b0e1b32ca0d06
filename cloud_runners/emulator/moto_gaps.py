"""Close the gaps of moto's Step Functions interpreter that the pipeline's ASL meets.

This is the one place where the emulator reaches into moto (pinned: 5.2.5). Nothing
installed is edited: ``apply()`` swaps one function reference at runtime and returns the
function that undoes it; ``check()`` lists what of moto's internals the patch relies on
and has changed (``tests/cloud_runners/emulator/test_moto_gaps.py`` fails naming the symbol).

The gaps (reproduced in ``tests/cloud_runners/emulator/test_moto_gaps.py``; what fixes
each, in detail, in ``cloud_runners.emulator.moto_gap_tasks``):

1. ``glue:startJobRun.sync`` fails (``'NoneType' object has no attribute
   'interrupt_all'``): moto's callback task assumes a ``.waitForTaskToken`` endpoint.
2. Task outputs holding datetimes make ``DescribeExecution`` fail; AWS gives epoch
   milliseconds.
3. ``sagemaker`` tasks are unsupported (no optimised integration, no ``.sync`` for
   training, processing and tuning jobs).
4. ``aws-sdk:s3:getObject`` gives a ``StreamingBody`` as ``Body`` instead of a string.
5. An execution stopped during a ``.sync`` wait records ``TaskSucceeded`` instead of
   ``TaskStateAborted``.
6. ``states:startExecution`` fails with ``States.Runtime`` (AWS's parameter names are
   passed to boto3 unconverted) and its results are not AWS's.

The fixed services (the classes of ``moto_gap_tasks``, built lazily: importing this
module must not import moto's interpreter) are handed out by a wrapper around
``state_task_factory.state_task_service_for`` (the name the ASL parser calls); every other
service goes to moto's own factory.
"""
from __future__ import annotations

import hashlib
import inspect
import threading
from collections.abc import Callable
from typing import Any

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
    # gap 6: EmulatorSfn replaces the first, relies on the second JSON-encoding an object
    # Input, on the resolvers reading submission_output["ExecutionArn"] and calling
    # _normalise_response(service_action_name="describe_execution"), and on the base
    # _normalise_response being a no-op it may replace
    f"{_SERVICE_PKG}.state_task_service_sfn.StateTaskServiceSfn._eval_service_task":
        "dc94f9e92201e833",
    f"{_SERVICE_PKG}.state_task_service_sfn.StateTaskServiceSfn._normalise_parameters":
        "d75d3da19aad01fb",
    f"{_SERVICE_PKG}.state_task_service_sfn.StateTaskServiceSfn._build_sync_resolver":
        "0a833c2f9a9ce0aa",
    f"{_SERVICE_PKG}.state_task_service_sfn.StateTaskServiceSfn._build_sync2_resolver":
        "fbbf50b684b90a7e",
    f"{_SERVICE_PKG}.state_task_service.StateTaskService._normalise_response":
        "00e0b0a50b1dd4ba",
}


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
    from cloud_runners.emulator.moto_gap_tasks import build_classes

    classes = build_classes()
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
