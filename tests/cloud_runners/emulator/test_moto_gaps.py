"""moto's Step Functions interpreter, patched by cloud_runners.emulator.moto_gaps:
``glue:startJobRun.sync``, ``sagemaker:createTrainingJob.sync`` and
``createProcessingJob.sync`` run to the end, ``aws-sdk:s3:getObject`` gives its body
as a string that ``States.StringToJson`` parses (the gate of a pipeline), and a stopped
execution aborts the task that waits for its job, and ``states:startExecution`` starts a
child state machine with AWS's parameter names."""
from __future__ import annotations

import json
import time
import uuid

import pytest
from botocore.exceptions import ClientError
from emulator_support import failures, run_to_end

from cloud_runners.emulator import moto_gaps
from cloud_runners.emulator.server import EmbeddedEmulator

GLUE_SYNC = {"StartAt": "RunEtl", "States": {"RunEtl": {
    "Type": "Task", "Resource": "arn:aws:states:::glue:startJobRun.sync",
    "Parameters": {"JobName": "etl-job", "Arguments": {"--output_uri.$": "$.Out"}},
    "ResultSelector": {"JobRunState.$": "$.JobRunState", "Id.$": "$.Id"},
    "ResultPath": "$.Etl", "End": True}}}

TRAINING = {
    "TrainingJobName": "tj-1",
    "AlgorithmSpecification": {"TrainingImage": "img:latest", "TrainingInputMode": "File"},
    "RoleArn": "arn:aws:iam::123456789012:role/mlharness-sagemaker",
    "OutputDataConfig": {"S3OutputPath": "s3://emu-bucket/training"},
    "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
    "StoppingCondition": {"MaxRuntimeInSeconds": 600},
}


def _train_sync(params):
    return {"StartAt": "Train", "States": {"Train": {
        "Type": "Task", "Resource": "arn:aws:states:::sagemaker:createTrainingJob.sync",
        "Parameters": params, "ResultSelector": {
            "TrainingJobName.$": "$.TrainingJobName", "ModelArtifacts.$": "$.ModelArtifacts",
            "FinalMetricDataList.$": "$.FinalMetricDataList"},
        "ResultPath": "$.Training", "Next": "Model"},
        "Model": {"Type": "Task", "Resource": "arn:aws:states:::sagemaker:createModel",
                  "Parameters": {"ModelName": "m-1", "ExecutionRoleArn": TRAINING["RoleArn"],
                                 "PrimaryContainer": {
                                     "Image": "img:latest",
                                     "ModelDataUrl.$": "$.Training.ModelArtifacts"
                                                       ".S3ModelArtifacts"}},
                  "ResultSelector": {"ModelArn.$": "$.ModelArn"}, "ResultPath": "$.Model",
                  "End": True}}}


PROCESSING = {
    "ProcessingJobName": "pj-1",
    "AppSpecification": {"ImageUri": "img:latest",
                         "ContainerEntrypoint": ["python3", "/opt/ml/processing/input/code/e.py"]},
    "ProcessingInputs": [{"InputName": "code", "S3Input": {
        "S3Uri": "s3://emu-bucket/code", "LocalPath": "/opt/ml/processing/input/code",
        "S3DataType": "S3Prefix", "S3InputMode": "File"}}],
    "ProcessingOutputConfig": {"Outputs": [{"OutputName": "evaluation", "S3Output": {
        "S3Uri": "s3://emu-bucket/evaluation", "LocalPath": "/opt/ml/processing/evaluation",
        "S3UploadMode": "EndOfJob"}}]},
    "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge",
                                              "VolumeSizeInGB": 10}},
    "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    "RoleArn": TRAINING["RoleArn"],
}


def _processing_sync(params):
    return {"StartAt": "Evaluate", "States": {"Evaluate": {
        "Type": "Task", "Resource": "arn:aws:states:::sagemaker:createProcessingJob.sync",
        "Parameters": params, "ResultSelector": {
            "ProcessingJobName.$": "$.ProcessingJobName",
            "ProcessingJobStatus.$": "$.ProcessingJobStatus"},
        "ResultPath": "$.Evaluation", "End": True}}}


def _gate(threshold):
    """What the pipeline's gate compiles to: read a JSON file, parse it, compare."""
    return {"StartAt": "Read", "States": {
        "Read": {"Type": "Task", "Resource": "arn:aws:states:::aws-sdk:s3:getObject",
                 "Parameters": {"Bucket": "emu-bucket", "Key": "evaluation/evaluation.json"},
                 "ResultSelector": {"Body.$": "States.StringToJson($.Body)"},
                 "ResultPath": "$.Gate", "Next": "Check"},
        "Check": {"Type": "Choice", "Choices": [{
            "Variable": "$.Gate.Body.metrics.accuracy",
            "NumericGreaterThanEquals": threshold, "Next": "Passed"}], "Default": "Below"},
        "Passed": {"Type": "Succeed"},
        "Below": {"Type": "Fail", "Error": "GateNotPassed", "Cause": "below the threshold"}}}


def _put_evaluation(emu, accuracy=0.93):
    s3 = emu.client("s3")
    s3.create_bucket(Bucket="emu-bucket")
    s3.put_object(Bucket="emu-bucket", Key="evaluation/evaluation.json",
                  Body=json.dumps({"metrics": {"accuracy": accuracy}, "count": 3}).encode())


def _glue_job(emu):
    emu.client("glue").create_job(Name="etl-job", Role="arn:aws:iam::123456789012:role/g",
                                  Command={"Name": "glueetl",
                                           "ScriptLocation": "s3://emu-bucket/s.py"})


def test_guard_moto_internals_the_patch_relies_on_are_unchanged():
    problems = moto_gaps.check()
    assert not problems, ("moto changed under cloud_runners/emulator/moto_gaps.py; review "
                          "the patch for:\n" + "\n".join(problems))


def test_guard_names_the_changed_symbol(monkeypatch):
    symbol = next(iter(moto_gaps.FINGERPRINTS))
    monkeypatch.setitem(moto_gaps.FINGERPRINTS, symbol, "0" * 16)
    with pytest.raises(moto_gaps.MotoGapsError, match=symbol.replace(".", r"\.")):
        moto_gaps.apply()
    assert not moto_gaps.is_applied()


def test_apply_and_undo_swap_only_the_factory_reference():
    factory = moto_gaps._resolve(moto_gaps._FACTORY_MODULE)
    original = factory.state_task_service_for
    undo_a, undo_b = moto_gaps.apply(), moto_gaps.apply()
    patched = factory.state_task_service_for
    assert patched is not original and patched.__wrapped__ is original
    assert type(patched("glue")).__name__ == "EmulatorGlue"
    assert type(patched("aws-sdk")).__name__ == "EmulatorAwsSdk"
    assert type(patched("states")).__name__ == "EmulatorSfn"
    assert type(patched("sqs")).__name__ == "StateTaskServiceSqs"
    undo_a()
    undo_a()  # idempotent
    assert factory.state_task_service_for is patched  # still used by the other holder
    undo_b()
    assert factory.state_task_service_for is original


def test_unpatched_moto_still_has_the_gaps():
    """If this fails, moto fixed a gap: moto_gaps may be able to drop that part."""
    with EmbeddedEmulator(patch_gaps=False) as emu:
        _glue_job(emu)
        described, history = run_to_end(emu, GLUE_SYNC, {"Out": "s3://emu-bucket/out"})
        assert described["status"] == "FAILED"
        assert "interrupt_all" in json.dumps(failures(history))
        described, _ = run_to_end(emu, _train_sync(TRAINING))
        assert described["status"] == "FAILED"
        assert "Unsupported sync callback procedure" in described.get("cause", "")
        described, _ = run_to_end(emu, _processing_sync(PROCESSING))
        assert described["status"] == "FAILED"
        assert "Unsupported sync callback procedure" in described.get("cause", "")
        _put_evaluation(emu)
        described, history = run_to_end(emu, _gate(0.5))
        assert described["status"] == "FAILED"
        assert "'StreamingChecksumBody' object has no attribute 'strip'" in \
            json.dumps(failures(history))
        child = _child(emu)
        described, _ = run_to_end(emu, _start_child(child, "arn:aws:states:::states:startExecution",
                                                     {"a": 1}, "run-1"))
        assert described["status"] == "FAILED"
        assert "'StateMachineArn'" in described.get("cause", "")


def test_glue_start_job_run_sync_succeeds():
    with EmbeddedEmulator() as emu:
        _glue_job(emu)
        described, history = run_to_end(emu, GLUE_SYNC, {"Out": "s3://emu-bucket/out"})
        assert described["status"] == "SUCCEEDED", failures(history)
        out = json.loads(described["output"])
        assert out["Etl"]["JobRunState"] == "SUCCEEDED"
        run = emu.client("glue").get_job_run(JobName="etl-job", RunId=out["Etl"]["Id"])
        assert run["JobRun"]["Arguments"]["--output_uri"] == "s3://emu-bucket/out"
        submitted = [e for e in history if e["type"] == "TaskSubmitted"]
        assert len(submitted) == 1
        succeeded = next(e for e in history if e["type"] == "TaskSucceeded")
        # AWS gives the job run's timestamps as epoch milliseconds.
        assert isinstance(json.loads(succeeded["taskSucceededEventDetails"]["output"])
                          ["StartedOn"], int)


def test_sagemaker_create_training_job_sync_then_create_model():
    with EmbeddedEmulator() as emu:
        described, history = run_to_end(emu, _train_sync(TRAINING))
        assert described["status"] == "SUCCEEDED", failures(history)
        out = json.loads(described["output"])
        model_uri = "s3://emu-bucket/training/tj-1/output/model.tar.gz"
        assert out["Training"]["ModelArtifacts"] == {"S3ModelArtifacts": model_uri}
        assert out["Training"]["TrainingJobName"] == "tj-1"
        assert out["Model"]["ModelArn"].endswith(":model/m-1")
        sm = emu.client("sagemaker")
        assert sm.describe_training_job(TrainingJobName="tj-1")["TrainingJobStatus"] == \
            "Completed"
        assert sm.describe_model(ModelName="m-1")["PrimaryContainer"]["ModelDataUrl"] == model_uri


def test_sagemaker_api_error_is_a_sagemaker_task_failure():
    definition = {"StartAt": "E", "States": {"E": {
        "Type": "Task", "Resource": "arn:aws:states:::sagemaker:createEndpoint",
        "Parameters": {"EndpointName": "e-1", "EndpointConfigName": "no-such-config"},
        "End": True}}}
    with EmbeddedEmulator() as emu:
        described, history = run_to_end(emu, definition)
        assert described["status"] == "FAILED"
        (_, details), = [f for f in failures(history) if f[0] == "TaskFailed"]
        assert details["error"] == "SageMaker.ValidationException", details
        assert "no-such-config" in details["cause"]


def test_unsupported_sagemaker_sync_action_is_rejected():
    definition = {"StartAt": "M", "States": {"M": {
        "Type": "Task", "Resource": "arn:aws:states:::sagemaker:createModel.sync",
        "Parameters": {"ModelName": "m"}, "End": True}}}
    with EmbeddedEmulator() as emu:
        with pytest.raises(ClientError, match="createModel.sync not recognized"):
            run_to_end(emu, definition)


def test_guard_names_the_aws_sdk_symbol(monkeypatch):
    symbol = next(k for k in moto_gaps.FINGERPRINTS if "StateTaskServiceAwsSdk" in k)
    monkeypatch.setitem(moto_gaps.FINGERPRINTS, symbol, "0" * 16)
    with pytest.raises(moto_gaps.MotoGapsError, match=symbol.replace(".", r"\.")):
        moto_gaps.apply()
    assert not moto_gaps.is_applied()


def test_sagemaker_create_processing_job_sync():
    with EmbeddedEmulator() as emu:
        described, history = run_to_end(emu, _processing_sync(PROCESSING))
        assert described["status"] == "SUCCEEDED", failures(history)
        out = json.loads(described["output"])["Evaluation"]
        assert out == {"ProcessingJobName": "pj-1", "ProcessingJobStatus": "Completed"}
        scheduled = next(e for e in history if e["type"] == "TaskScheduled")
        assert scheduled["taskScheduledEventDetails"]["resource"] == "createProcessingJob.sync"


def test_a_failed_processing_job_fails_the_task_with_the_describe_response(monkeypatch):
    from moto.sagemaker.models import SageMakerModelBackend

    original = SageMakerModelBackend.create_processing_job

    def failing(backend, *args, **kwargs):
        job = original(backend, *args, **kwargs)
        job.processing_job_status = "Failed"
        job.failure_reason = "AlgorithmError: model archive not found"
        return job

    monkeypatch.setattr(SageMakerModelBackend, "create_processing_job", failing)
    with EmbeddedEmulator() as emu:
        described, history = run_to_end(emu, _processing_sync(PROCESSING))
        assert described["status"] == "FAILED"
        (_, details), = [f for f in failures(history) if f[0] == "TaskFailed"]
        assert details["error"] == "States.TaskFailed"
        cause = json.loads(details["cause"])
        assert cause["ProcessingJobStatus"] == "Failed"
        assert cause["FailureReason"] == "AlgorithmError: model archive not found"
        assert cause["ProcessingJobName"] == "pj-1"


def test_a_stopped_execution_aborts_the_task_that_waits_for_its_job(monkeypatch):
    """Gap 5: StopExecution while a ``.sync`` task waits: TaskStateAborted, as on AWS,
    not a TaskSucceeded with no output."""
    from moto.sagemaker.models import SageMakerModelBackend

    original = SageMakerModelBackend.create_processing_job

    def never_ends(backend, *args, **kwargs):
        job = original(backend, *args, **kwargs)
        job.processing_job_status = "InProgress"
        return job

    monkeypatch.setattr(SageMakerModelBackend, "create_processing_job", never_ends)
    with EmbeddedEmulator() as emu:
        sfn = emu.client("stepfunctions")
        arn = sfn.create_state_machine(
            name="waits", definition=json.dumps(_processing_sync(PROCESSING)),
            roleArn=TRAINING["RoleArn"])["stateMachineArn"]
        execution = sfn.start_execution(stateMachineArn=arn, input="{}")["executionArn"]

        def events():
            return [e["type"] for e in sfn.get_execution_history(
                executionArn=execution, maxResults=1000)["events"]]

        deadline = time.monotonic() + 10
        while "TaskSubmitted" not in events():
            assert time.monotonic() < deadline, events()
            time.sleep(0.05)
        sfn.stop_execution(executionArn=execution)
        while sfn.describe_execution(executionArn=execution)["status"] == "RUNNING":
            assert time.monotonic() < deadline + 10
            time.sleep(0.05)
        assert sfn.describe_execution(executionArn=execution)["status"] == "ABORTED"
        assert events()[-3:] == ["TaskSubmitted", "TaskStateAborted", "ExecutionAborted"]


@pytest.mark.parametrize("threshold, status", [(0.9, "SUCCEEDED"), (0.95, "FAILED")])
def test_s3_get_object_body_is_a_string_that_string_to_json_parses(threshold, status):
    with EmbeddedEmulator() as emu:
        _put_evaluation(emu, accuracy=0.93)
        described, history = run_to_end(emu, _gate(threshold))
        assert described["status"] == status, failures(history)
        entered = [e["stateEnteredEventDetails"]["name"] for e in history
                   if e["type"].endswith("StateEntered")]
        assert entered == ["Read", "Check", "Passed" if status == "SUCCEEDED" else "Below"]
        if status == "FAILED":
            assert described["error"] == "GateNotPassed"
        succeeded = next(e for e in history if e["type"] == "TaskSucceeded")
        raw = json.loads(succeeded["taskSucceededEventDetails"]["output"])
        assert json.loads(raw["Body"]) == {"metrics": {"accuracy": 0.93}, "count": 3}
        assert raw["ContentLength"] == len(raw["Body"])


CHILD = {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}


def _child(emu, name="child"):
    from emulator_support import ROLE

    return emu.client("stepfunctions").create_state_machine(
        name=name, definition=json.dumps(CHILD), roleArn=ROLE)["stateMachineArn"]


def _start_child(child_arn, resource, child_input, name=None):
    params = {"StateMachineArn": child_arn, "Input": child_input}
    if name is not None:
        params["Name"] = name
    return {"StartAt": "Start", "States": {"Start": {
        "Type": "Task", "Resource": resource, "Parameters": params,
        "ResultPath": "$.Child", "End": True}}}


@pytest.mark.parametrize("child_input", [{"a": 1, "b": {"c": [1, 2]}}, '{"a": 1}'])
def test_states_start_execution_starts_the_child_state_machine(child_input):
    """Gap 6: AWS's parameter names (Input as an object or a JSON string, Name), AWS's
    result: ExecutionArn and StartDate (epoch milliseconds)."""
    with EmbeddedEmulator() as emu:
        child = _child(emu)
        described, history = run_to_end(emu, _start_child(
            child, "arn:aws:states:::states:startExecution", child_input, "run-1"))
        assert described["status"] == "SUCCEEDED", failures(history)
        out = json.loads(described["output"])["Child"]
        assert set(out) == {"ExecutionArn", "StartDate"}
        assert out["ExecutionArn"].endswith(":execution:child:run-1")
        assert isinstance(out["StartDate"], int)
        sfn = emu.client("stepfunctions")
        (execution,) = sfn.list_executions(stateMachineArn=child)["executions"]
        assert execution["executionArn"] == out["ExecutionArn"]
        assert execution["name"] == "run-1"
        child_described = sfn.describe_execution(executionArn=out["ExecutionArn"])
        expected = child_input if isinstance(child_input, dict) else json.loads(child_input)
        assert json.loads(child_described["input"]) == expected


def test_states_start_execution_without_a_name():
    with EmbeddedEmulator() as emu:
        child = _child(emu)
        described, history = run_to_end(emu, _start_child(
            child, "arn:aws:states:::states:startExecution", {"a": 1}))
        assert described["status"] == "SUCCEEDED", failures(history)
        arn = json.loads(described["output"])["Child"]["ExecutionArn"]
        prefix = child.replace(":stateMachine:", ":execution:") + ":"
        assert arn.startswith(prefix)
        uuid.UUID(arn[len(prefix):])  # a generated name, as on AWS (moto's would be "None")
        # a second one gets its own name
        described, history = run_to_end(emu, _start_child(
            child, "arn:aws:states:::states:startExecution", {"a": 2}))
        assert described["status"] == "SUCCEEDED", failures(history)
        assert json.loads(described["output"])["Child"]["ExecutionArn"] != arn


@pytest.mark.parametrize("suffix", [".sync", ".sync:2"])
def test_states_start_execution_sync_waits_for_the_child(suffix):
    with EmbeddedEmulator() as emu:
        child = _child(emu)
        described, history = run_to_end(emu, _start_child(
            child, f"arn:aws:states:::states:startExecution{suffix}", {"a": 1}, "run-2"))
        assert described["status"] == "SUCCEEDED", failures(history)
        out = json.loads(described["output"])["Child"]
        assert out["Status"] == "SUCCEEDED"
        assert out["ExecutionArn"].endswith(":execution:child:run-2")
        assert isinstance(out["StartDate"], int) and isinstance(out["StopDate"], int)
        # .sync gives the child's output as a JSON string, .sync:2 as JSON
        output = out["Output"] if suffix == ".sync:2" else json.loads(out["Output"])
        assert output == {"a": 1}


def test_states_start_execution_of_a_missing_state_machine_fails_the_task():
    with EmbeddedEmulator() as emu:
        missing = f"arn:aws:states:us-east-1:{'123456789012'}:stateMachine:nope"
        described, history = run_to_end(emu, _start_child(
            missing, "arn:aws:states:::states:startExecution", {}))
        assert described["status"] == "FAILED"
        (_, details), = [f for f in failures(history) if f[0] == "TaskFailed"]
        assert details["error"].startswith("StepFunctions."), details
