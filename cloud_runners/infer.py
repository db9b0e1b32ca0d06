"""Cloud ``infer``: the test split through the SageMaker endpoint, scored.

Downloads the test split from S3, sends it through the same ``EndpointClient`` as the
local infer (TF Serving request bodies, batches of ``BatchSize``) over sagemaker-runtime
``InvokeEndpoint``, and uploads ``predictions.parquet`` to the request's ``s3://``
OutputUri. The output has the local infer's shape.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from cloud_runners import aws
from cloud_runners.runtime_transport import SageMakerRuntimeTransport
from harness import uris
from harness.errors import DataError, HarnessError
from harness.inference_client import client_for_endpoint
from harness.stages import StageContext
from local_runners.infer import PREDICTIONS_FILE, _field, write_predictions
from model.data import DataFormatError, load_split


class CloudInferRunner(aws.CloudStageRunner):
    kind = "infer"

    def run(self, request: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        endpoint = _field(request, "Endpoint", dict)
        batch_size = _field(request, "BatchSize", int)
        test_uri = _field(request, "TestDataUri", str)
        output_uri = _field(request, "OutputUri", str)
        if batch_size < 1:
            raise HarnessError("batch size must be positive", field="BatchSize",
                               expected="an integer >= 1", got=batch_size)
        s3 = self.client(ctx, "s3")
        if aws.prefix_exists(s3, output_uri):
            raise HarnessError("inference output already exists in S3; refusing to overwrite "
                               "it", file=output_uri, hint="start a new run")
        runtime = self.client(ctx, "sagemaker-runtime")
        with tempfile.TemporaryDirectory(prefix="mlharness-infer-") as tmp:
            tmp_dir = Path(tmp)
            test_dir = aws.download_prefix(s3, test_uri, tmp_dir / "test")
            try:
                x, y = load_split(test_dir)
            except DataFormatError as e:
                raise DataError(e.problem, file=test_uri, field=e.field, expected=e.expected,
                                got=e.got) from None

            def transport(description: dict[str, Any]) -> SageMakerRuntimeTransport:
                return SageMakerRuntimeTransport(runtime, description["EndpointName"])

            with client_for_endpoint(endpoint, transport_factory=transport) as client:
                ctx.log.info("infer: %d rows from %s through endpoint %s in batches of %d",
                             len(x), test_uri, endpoint.get("EndpointName"), batch_size)
                with ctx.progress.task("infer", total=len(x)) as task:
                    result = client.predict_batches(x, batch_size, progress_task=task)
                requests, latency_ms = client.requests, client.mean_latency_ms

            predicted = result["classes"]
            correct = int((predicted == y).sum())
            accuracy = correct / len(y)
            out_dir = tmp_dir / "out"
            out_dir.mkdir()
            path = write_predictions(out_dir, y, predicted, result["probabilities"])
            predictions_uri = aws.upload_file(s3, path, uris.join(output_uri, PREDICTIONS_FILE))
        ctx.log.info("infer: accuracy %.6f (%d/%d), %d requests, mean latency %.2f ms",
                     accuracy, correct, len(y), requests, latency_ms)
        return {
            "Accuracy": accuracy,
            "Count": len(y),
            "Correct": correct,
            "PredictionsUri": predictions_uri,
            "Requests": requests,
            "MeanLatencyMs": round(latency_ms, 3),
            "EndpointUrl": endpoint.get("EndpointUrl"),
            "EndpointName": endpoint.get("EndpointName"),
        }
