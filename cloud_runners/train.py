"""Cloud ``train``: send the ``CreateTrainingJob`` request and wait for the job.

The request is the very body the local trainer executes (``harness.requests.
training_request``); only the layout's base URI (``s3://``) and the image differ. The
runner adds the project's tags, polls ``DescribeTrainingJob`` every
``cloud.poll_seconds`` (progress from ``SecondaryStatus``) and returns the describe
response, JSON-able (``ModelArtifacts.S3ModelArtifacts``, ``FinalMetricDataList``).

Distributed training (``ResourceConfig.InstanceCount`` > 1): without a distribution
hyperparameter the TensorFlow container starts the entry point on every host as an
independent single-worker job (valid, but not data-parallel: every host trains the whole
model on the full, ``FullyReplicated`` channels and writes ``/opt/ml/model``). For real
data-parallel training the request needs the hyperparameter
``sagemaker_multi_worker_mirrored_strategy_enabled = "true"`` (what the SageMaker SDK's
``distribution={"multi_worker_mirrored_strategy": {"enabled": True}}`` adds): the
container then sets ``TF_CONFIG`` on every host, and the script must build its model
under ``tf.distribute.MultiWorkerMirroredStrategy`` and export the SavedModel only on the
chief (``SM_CURRENT_HOST == SM_HOSTS[0]``). The parameter-server mode
(``sagemaker_parameter_server_enabled``) is not used.
"""
from __future__ import annotations

from typing import Any

from cloud_runners import aws
from harness.errors import HarnessError, StepFailed
from harness.stages import StageContext

TERMINAL = ("Completed", "Failed", "Stopped")


def check_distribution(request: dict[str, Any]) -> str | None:
    """A warning when several instances would each train alone (no distribution set)."""
    count = int(request.get("ResourceConfig", {}).get("InstanceCount", 1))
    hps = request.get("HyperParameters") or {}
    flags = ("sagemaker_multi_worker_mirrored_strategy_enabled", "sagemaker_mpi_enabled",
             "sagemaker_parameter_server_enabled", "sagemaker_distributed_dataparallel_enabled")
    if count > 1 and not any(str(hps.get(f, "")).lower() == "true" for f in flags):
        return (f"InstanceCount {count} without a distribution hyperparameter: each host "
                "trains independently (set sagemaker_multi_worker_mirrored_strategy_enabled)")
    return None


class CloudTrainingRunner(aws.CloudStageRunner):
    kind = "train"

    def run(self, request: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        name = request.get("TrainingJobName")
        if not name:
            raise HarnessError("the training request lacks a required field",
                               field="TrainingJobName",
                               expected="a CreateTrainingJob request (harness.requests."
                               "training_request)")
        if not request.get("RoleArn"):
            raise HarnessError("the training request has no execution role", field="RoleArn",
                               expected="the stack's SageMaker role ARN",
                               hint="the cloud backend builds requests with the stack's role")
        warning = check_distribution(request)
        if warning:
            ctx.log.warning("%s", warning)
        sm = self.client(ctx, "sagemaker")
        aws.aws_call(ctx.step, f"SageMaker CreateTrainingJob {name}", sm.create_training_job,
                     **request)
        ctx.log.info("training job %s created (image %s, %s x %s)", name,
                     request["AlgorithmSpecification"]["TrainingImage"],
                     request["ResourceConfig"]["InstanceCount"],
                     request["ResourceConfig"]["InstanceType"])
        seen: set[tuple[str, str]] = set()
        with ctx.progress.task(f"training job {name}", total=None) as task:
            def on_update(answer: dict[str, Any]) -> None:
                for tr in answer.get("SecondaryStatusTransitions", []):
                    key = (tr.get("Status", ""), tr.get("StatusMessage", ""))
                    if key not in seen:
                        seen.add(key)
                        ctx.log.info("training job %s: %s - %s", name, *key)
                status = f"{answer.get('TrainingJobStatus')}/{answer.get('SecondaryStatus')}"
                task.update(description=f"  training job {name}: {status}")

            answer = aws.poll(
                lambda: aws.aws_call(ctx.step, f"SageMaker DescribeTrainingJob {name}",
                                     sm.describe_training_job, TrainingJobName=name),
                lambda a: a.get("TrainingJobStatus") in TERMINAL,
                ctx.config.cloud.poll_seconds, on_update)
        out = aws.jsonable(answer)
        status = out.get("TrainingJobStatus")
        if status != "Completed":
            raise StepFailed(ctx.step, f"training job {name} {status}: "
                             f"{out.get('FailureReason') or '(no failure reason)'}",
                             hint="the job's logs are in CloudWatch under "
                             "/aws/sagemaker/TrainingJobs")
        out.setdefault("FinalMetricDataList", [])
        for m in out["FinalMetricDataList"]:
            ctx.log.info("final metric %s = %s", m.get("MetricName"), m.get("Value"))
        return out
