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
from harness.errors import DataError, HarnessError
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


class LocalInferRunner(StageRunner):
    kind = "infer"

    def run(self, request: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        endpoint = _field(request, "Endpoint", dict)
        batch_size = _field(request, "BatchSize", int)
        test_uri = _field(request, "TestDataUri", str)
        output_uri = _field(request, "OutputUri", str)
        if batch_size < 1:
            raise HarnessError("batch size must be positive", field="BatchSize",
                               expected="an integer >= 1", got=batch_size)
        try:
            x, y = load_split(uris.local_path(test_uri))
        except DataFormatError as e:
            raise DataError(e.problem, file=e.directory, field=e.field, expected=e.expected,
                            got=e.got) from None

        with client_for_endpoint(endpoint) as client:
            ctx.log.info("infer: %d rows from %s through %s in batches of %d", len(x),
                         test_uri, endpoint.get("EndpointUrl"), batch_size)
            with ctx.progress.task("infer", total=len(x)) as task:
                result = client.predict_batches(x, batch_size, progress_task=task)
            requests, latency_ms = client.requests, client.mean_latency_ms

        predicted = result["classes"]
        correct = int((predicted == y).sum())
        accuracy = correct / len(y)
        with atomic_dir(uris.local_path(output_uri)) as tmp:
            write_predictions(tmp, y, predicted, result["probabilities"])
        ctx.log.info("infer: accuracy %.6f (%d/%d), %d requests, mean latency %.2f ms",
                     accuracy, correct, len(y), requests, latency_ms)
        return {
            "Accuracy": accuracy,
            "Count": len(y),
            "Correct": correct,
            "PredictionsUri": uris.join(output_uri, PREDICTIONS_FILE),
            "Requests": requests,
            "MeanLatencyMs": round(latency_ms, 3),
            "EndpointUrl": endpoint.get("EndpointUrl"),
        }
