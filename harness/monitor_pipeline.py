"""The drift monitoring workflow: one definition for the local backend, the emulator and
Step Functions, written with the same API as the training pipeline.

    stage (on the client: a local run's captures and model uploaded on the cloud backends)
      >> check (SageMaker Processing job: model/drift_check.py, Model Monitor's BYOC contract)
      >> drift-gate (violation_count <= 0; unmet: the execution fails with the count,
                     or, with ``retrain``, goes on to)
      >> retrain (states:startExecution of the training pipeline, a new run id)

The check reads the endpoint's capture prefix (``/opt/ml/processing/endpointdata``) and
the monitored model's ``model.tar.gz`` (``/opt/ml/processing/baseline``: the baseline
inside it, ``baseline_model``), over the ``window_minutes`` before the check (or the whole
capture, 0), with the ``monitor:`` thresholds of the configuration, and writes its results
to ``monitoring/<run id>/`` of the run (of the schedule's home: each scheduled execution
has its own run id, ``cloud_runners.monitor_schedule``); the gate reads
``drift_report.json`` as the training pipeline's gate reads ``evaluation.json``. A failed
monitoring execution is the signal (a CloudWatch alarm on ``ExecutionsFailed``, or the
exit code of ``harness run``).
"""
from __future__ import annotations

from typing import Any

from harness import uris
from harness.config import PROJECT_ROOT, PipelineConfig
from harness.placeholders import RUN_ID, run_path
from harness.steps import (Gate, ProcessingInput, ProcessingOutput, ProcessingStep,
                           StartExecutionStep, UploadStep)
from harness.workflow import Workflow, load_workflow

CONTAINER = "/opt/ml/processing"


def monitoring_workflow(cfg: PipelineConfig, *, capture_uri: str, model_data: str,
                        endpoint_name: str, window_minutes: float = 0,
                        job_name: str | None = None,
                        retrain: PipelineConfig | None = None,
                        retrain_from: dict[str, Any] | None = None,
                        name: str = "mnist-monitor") -> Workflow:
    """The workflow checking ``endpoint_name``'s traffic under ``capture_uri`` (the
    endpoint's DataCaptureConfig destination) against ``model_data``'s baseline.

    ``retrain``: on drift, start the pipeline of this configuration (its ``pipeline``)
    instead of failing (``StartExecutionStep``); ``retrain_from``: the monitored run's
    execution input, whose uploaded data and code the new run reuses in the cloud.
    The check's job name shares the evaluation job's prefix (default
    ``<evaluate.job_name>-drift``): one processing-job prefix scopes both pipelines'
    roles."""
    t = cfg.train
    job_name = job_name or f"{cfg.evaluate.job_name}-drift"
    environment: dict[str, Any] = {
        "dataset_source": f"{CONTAINER}/endpointdata",
        "output_path": f"{CONTAINER}/resultdata",
        "baseline_model": f"{CONTAINER}/baseline",
        "sagemaker_endpoint_name": endpoint_name,
    }
    if window_minutes:
        environment["window_minutes"] = window_minutes
    # the monitor: settings override the thresholds written at training time
    environment.update(cfg.monitor.model_dump())
    # a local run's captures and model go to S3 on the cloud backends (nothing moves locally)
    stage = UploadStep("stage", sources={"endpointdata": uris.join(capture_uri, endpoint_name),
                                         "baseline": model_data},
                       output_uri=run_path("monitored"),
                       comment="the captured traffic and the model with its baseline")
    check = ProcessingStep(
        "check", job_name=job_name, code="drift_check.py",
        source_dir=PROJECT_ROOT / t.source_dir,
        inputs=[ProcessingInput(stage.uri("endpointdata"), f"{CONTAINER}/endpointdata",
                                "endpointdata"),
                ProcessingInput(stage.uri("baseline"), f"{CONTAINER}/baseline", "baseline")],
        outputs=[ProcessingOutput(f"{CONTAINER}/resultdata", run_path("monitoring", RUN_ID),
                                  "result")],
        environment=environment, instance_type=cfg.evaluate.instance_type,
        framework_version=t.framework_version, py_version=t.py_version,
        comment="model/drift_check.py on the captured traffic (Model Monitor BYOC)")
    otherwise = None
    if retrain is not None:
        otherwise = StartExecutionStep(
            "retrain", workflow=load_workflow(retrain.pipeline, retrain), config=retrain,
            reuse=retrain_from, comment="drift found: start the training pipeline (the "
            "new model is deployed only if it passes that pipeline's gate)")
    gate = Gate("drift-gate", json_uri=run_path("monitoring", RUN_ID, "drift_report.json"),
                metric="violation_count", threshold=0, direction="<=", otherwise=otherwise,
                comment="no violation of the model's drift baseline")
    return Workflow(name, stage >> check >> gate,
                    comment=f"drift of {endpoint_name}'s captured traffic")
