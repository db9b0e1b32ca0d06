"""Cloud ``infer`` on moto: the test split through sagemaker-runtime InvokeEndpoint in
batches (the request the inference step builds from the endpoint's output), scored; the
endpoint must answer as well as the evaluation said; predictions uploaded to S3."""
import json

import numpy as np
import pytest
from cloud_support import ACCOUNT, REGION, capture, resolved_request, stage_context, workflow
from support import write_split

from cloud_runners import aws as aws_mod
from cloud_runners.infer import CloudInferRunner
from harness.errors import HarnessError, StepFailed

BUCKET = "mlharness-test-bucket"
RUN = "20261129-120000-ab12"
BASE = f"s3://{BUCKET}/mlharness/runs/{RUN}"
N, K, BATCH = 23, 3, 10


@pytest.fixture
def split(aws, tmp_path):
    """A test split in S3 and the labels an endpoint answers (some wrong)."""
    rng = np.random.default_rng(0)
    x = rng.random((N, 6), dtype=np.float32)
    y = rng.integers(0, K, N)
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    aws_mod.upload_dir(s3, write_split(tmp_path / "test", x, y), f"{BASE}/data/processed/test")
    predicted = y.copy()
    predicted[::4] = (predicted[::4] + 1) % K
    return y, predicted


def queue_answers(predicted):
    """moto answers InvokeEndpoint from a queue: one canned answer per request, in order."""
    from moto.sagemakerruntime.models import sagemakerruntime_backends

    queue = sagemakerruntime_backends[ACCOUNT][REGION].results_queue
    for start in range(0, len(predicted), BATCH):
        rows = [{"probabilities": np.eye(K)[c].tolist(), "classes": int(c)}
                for c in predicted[start:start + BATCH]]
        queue.append((json.dumps({"predictions": rows}), "application/json", "AllTraffic", ""))


def request(cfg, accuracy):
    cfg.infer.batch_size = BATCH
    doc = {"RunId": RUN, "BaseUri": BASE,
           "Endpoint": {"EndpointName": f"mnist-endpoint-{RUN}", "EndpointStatus": "InService"},
           "Gate": {"Body": {"metrics": {"accuracy": accuracy}}}}
    return resolved_request(workflow(cfg), "infer", doc)


def test_infer_sends_the_test_split_through_invoke_endpoint(aws, cfg, split):
    y, predicted = split
    accuracy = float((predicted == y).mean())
    req = request(cfg, accuracy)
    assert req["EndpointName"] == f"mnist-endpoint-{RUN}" and req["ExpectedAccuracy"] == accuracy
    queue_answers(predicted)
    sent = capture(aws, "sagemaker-runtime.InvokeEndpoint")
    out = CloudInferRunner(aws).run(req, stage_context(cfg, "infer", RUN))
    assert out["Requests"] == 3 and out["Count"] == N
    assert out["Correct"] == int((predicted == y).sum())
    assert out["Accuracy"] == pytest.approx(accuracy)
    assert out["EndpointName"] == f"mnist-endpoint-{RUN}" and out["EndpointUrl"] is None
    assert {c["EndpointName"] for c in sent} == {f"mnist-endpoint-{RUN}"}
    assert all(c["ContentType"] == "application/json" for c in sent)
    assert sum(len(json.loads(c["Body"])["instances"]) for c in sent) == N
    assert out["PredictionsUri"] == f"{BASE}/inference/predictions.parquet"
    assert aws_mod.list_keys(aws.client("s3"), f"{BASE}/inference") == [
        f"mlharness/runs/{RUN}/inference/predictions.parquet"]
    # The output is never overwritten.
    with pytest.raises(HarnessError, match="already exists in S3"):
        CloudInferRunner(aws).run(req, stage_context(cfg, "infer", RUN))


def test_an_endpoint_that_answers_worse_than_the_evaluation_fails(aws, cfg, split):
    y, predicted = split
    queue_answers(predicted)
    with pytest.raises(StepFailed, match="differs from the evaluation's") as exc:
        CloudInferRunner(aws).run(request(cfg, 1.0), stage_context(cfg, "infer", RUN))
    assert exc.value.step == "infer" and exc.value.field == "ExpectedAccuracy"
    assert not aws_mod.prefix_exists(aws.client("s3"), f"{BASE}/inference")
