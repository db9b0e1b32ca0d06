"""Local ``infer``: send the test split through the deployed endpoint and score it.

Every request goes over the endpoint's real transport (HTTP ``/invocations`` locally), in
batches of ``BatchSize``. Predictions (label, predicted class, max probability per row)
are written atomically as Parquet under ``OutputUri``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from harness import uris
from harness.errors import DataError, HarnessError, StepFailed
from harness.inference_client import client_for_endpoint
from harness.stages import StageContext, StageRunner
from harness.storage import atomic_dir
from model.data import DataFormatError, load_split

PREDICTIONS_FILE = "predictions.parquet"


def _field(request: dict[str, Any], name: str, kind: type | tuple) -> Any:
    value = request.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise HarnessError("missing or wrong field in the infer request", field=name,
                           expected=f"a {getattr(kind, '__name__', kind)}", got=value)
    return value


def write_predictions(directory: Path, labels: np.ndarray, predicted: np.ndarray,
                      probabilities: np.ndarray) -> Path:
    table = pa.table({
        "label": pa.array(labels, pa.int64()),
        "predicted": pa.array(predicted, pa.int64()),
        "probability": pa.array(probabilities.max(axis=1), pa.float32()),
    })
    path = directory / PREDICTIONS_FILE
    pq.write_table(table, path)
    return path


def request_fields(request: dict[str, Any]) -> tuple[dict[str, Any], int, str, str]:
    """(Endpoint, BatchSize, TestDataUri, OutputUri) of an infer request, checked."""
    endpoint = _field(request, "Endpoint", dict)
    batch_size = _field(request, "BatchSize", int)
    test_uri = _field(request, "TestDataUri", str)
    output_uri = _field(request, "OutputUri", str)
    if batch_size < 1:
        raise HarnessError("batch size must be positive", field="BatchSize",
                           expected="an integer >= 1", got=batch_size)
    return endpoint, batch_size, test_uri, output_uri


def load_test_split(directory: Path, uri: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        return load_split(directory)
    except DataFormatError as e:
        raise DataError(e.problem, file=uri, field=e.field, expected=e.expected,
                        got=e.got) from None


def score_through_endpoint(client, x: np.ndarray, y: np.ndarray, batch_size: int,
                           ctx: StageContext, where: str) -> dict[str, Any]:
    """Send every row through ``client`` in batches; the predictions and their score."""
    ctx.log.info("infer: %d rows through %s in batches of %d", len(x), where, batch_size)
    with ctx.progress.task("infer", total=len(x)) as task:
        result = client.predict_batches(x, batch_size, progress_task=task)
    predicted = result["classes"]
    correct = int((predicted == y).sum())
    scored = {"predicted": predicted, "probabilities": result["probabilities"],
              "correct": correct, "accuracy": correct / len(y),
              "requests": client.requests, "latency_ms": client.mean_latency_ms}
    ctx.log.info("infer: accuracy %.6f (%d/%d), %d requests, mean latency %.2f ms",
                 scored["accuracy"], correct, len(y), scored["requests"], scored["latency_ms"])
    return scored


def check_expected_accuracy(request: dict[str, Any], scored: dict[str, Any],
                            ctx: StageContext) -> None:
    """With ``ExpectedAccuracy`` (the evaluation of the same model on the same data), the
    endpoint must answer exactly as well: anything else means it serves another model or
    transforms the input differently."""
    expected = request.get("ExpectedAccuracy")
    if expected is None:
        return
    if isinstance(expected, bool) or not isinstance(expected, (int, float)):
        raise HarnessError("the expected accuracy is not a number", field="ExpectedAccuracy",
                           got=expected)
    if abs(scored["accuracy"] - float(expected)) > 1e-9:
        raise StepFailed(ctx.step, f"accuracy through the endpoint ({scored['accuracy']:.6f}) "
                         f"differs from the evaluation's ({float(expected):.6f}) on the same "
                         "test split", field="ExpectedAccuracy")
    ctx.log.info("accuracy through the endpoint equals the evaluation's (%.6f)", expected)


def infer_output(scored: dict[str, Any], count: int, predictions_uri: str,
                 endpoint: dict[str, Any]) -> dict[str, Any]:
    return {
        "Accuracy": scored["accuracy"],
        "Count": count,
        "Correct": scored["correct"],
        "PredictionsUri": predictions_uri,
        "Requests": scored["requests"],
        "MeanLatencyMs": round(scored["latency_ms"], 3),
        "EndpointUrl": endpoint.get("EndpointUrl"),
        "EndpointName": endpoint.get("EndpointName"),
    }


class LocalInferRunner(StageRunner):
    kind = "infer"

    def run(self, request: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        endpoint, batch_size, test_uri, output_uri = request_fields(request)
        x, y = load_test_split(uris.local_path(test_uri), test_uri)
        with client_for_endpoint(endpoint) as client:
            scored = score_through_endpoint(client, x, y, batch_size, ctx,
                                            endpoint.get("EndpointUrl") or "the endpoint")
        check_expected_accuracy(request, scored, ctx)
        with atomic_dir(uris.local_path(output_uri)) as tmp:
            write_predictions(tmp, y, scored["predicted"], scored["probabilities"])
        return infer_output(scored, len(y), uris.join(output_uri, PREDICTIONS_FILE), endpoint)
