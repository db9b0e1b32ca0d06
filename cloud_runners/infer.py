"""Cloud ``infer``: the test split through the SageMaker endpoint, scored.

Downloads the test split from S3, sends it through the same ``EndpointClient`` as the
local infer (TF Serving request bodies, batches of ``BatchSize``) over sagemaker-runtime
``InvokeEndpoint``, checks the accuracy against ``ExpectedAccuracy`` when the request has
it (as the local infer does), and uploads ``predictions.parquet`` to the request's ``s3://``
OutputUri. The output has the local infer's shape.
"""
from __future__ import annotations

from typing import Any

from cloud_runners import aws
from cloud_runners.runtime_transport import SageMakerRuntimeTransport
from cloud_runners.s3_staging import PREFIX, S3Staging
from harness import uris
from harness.errors import HarnessError
from harness.inference_client import client_for_endpoint
from harness.stages import StageContext
from local_runners.infer import (
    PREDICTIONS_FILE,
    check_expected_accuracy,
    infer_output,
    load_test_split,
    request_fields,
    score_through_endpoint,
    write_predictions,
)


class CloudInferRunner(aws.CloudStageRunner):
    kind = "infer"

    def run(self, request: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        endpoint, batch_size, test_uri, output_uri = request_fields(request)
        s3 = self.client(ctx, "s3")
        if aws.prefix_exists(s3, output_uri):
            raise HarnessError("inference output already exists in S3; refusing to overwrite "
                               "it", file=output_uri, hint="start a new run")
        runtime = self.client(ctx, "sagemaker-runtime")

        def transport(description: dict[str, Any]) -> SageMakerRuntimeTransport:
            return SageMakerRuntimeTransport(runtime, description["EndpointName"])

        with S3Staging(s3, prefix="mlharness-infer-") as staging:
            x, y = load_test_split(staging.download(test_uri, "test", kind=PREFIX), test_uri)
            with client_for_endpoint(endpoint, transport_factory=transport) as client:
                scored = score_through_endpoint(client, x, y, batch_size, ctx,
                                                f"endpoint {endpoint.get('EndpointName')}")
            check_expected_accuracy(request, scored, ctx)
            out_dir = staging.path("out")
            out_dir.mkdir()
            path = write_predictions(out_dir, y, scored["predicted"], scored["probabilities"])
            predictions_uri, = staging.upload(path, uris.join(output_uri, PREDICTIONS_FILE))
        return infer_output(scored, len(y), predictions_uri, endpoint)
