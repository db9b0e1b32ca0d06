"""``InferenceStep``: send a test split through the deployed endpoint and score it.

Runs on the client after the endpoint is up (``AFTER`` the state machine on the cloud
backends): over HTTP to the local model server, over ``InvokeEndpoint`` to a SageMaker
endpoint, with the same request bodies. With ``expected_accuracy`` (e.g. the gate's
figure from ``evaluation.json``) the step fails when the endpoint answers differently
from the evaluation of the same model on the same data.
"""
from __future__ import annotations

from typing import Any

from harness.errors import ConfigError
from harness.placeholders import Placeholder
from harness.steps.base import AFTER, BuildContext, Step


class InferenceStep(Step):
    kind = "infer"
    title = "test split through the endpoint"
    placement = AFTER
    local_runner = "local_runners.infer:LocalInferRunner"
    cloud_runner = "cloud_runners.infer:CloudInferRunner"

    def __init__(self, state_id: str, *, endpoint: Step | Placeholder, test_data_uri: str,
                 output_uri: str, batch_size: int = 100,
                 expected_accuracy: Any = None, comment: str | None = None):
        super().__init__(state_id, comment=comment)
        self.endpoint = endpoint.output() if isinstance(endpoint, Step) else endpoint
        if not isinstance(self.endpoint, Placeholder):
            raise ConfigError("the inference step needs the endpoint step (or its output)",
                              field=f"{state_id}.endpoint", got=endpoint)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) \
                or not 1 <= batch_size <= 500:
            raise ConfigError("bad batch size", field=f"{state_id}.batch_size",
                              expected="1..500 (SageMaker takes at most 6 MB per request)",
                              got=batch_size)
        self.test_data_uri = test_data_uri
        self.output_uri = output_uri
        self.batch_size = batch_size
        self.expected_accuracy = expected_accuracy

    def request(self, ctx: BuildContext) -> dict[str, Any]:
        body: dict[str, Any] = {
            "EndpointName": self.endpoint["EndpointName"],
            "Endpoint": self.endpoint,
            "TestDataUri": self.test_data_uri,
            "OutputUri": self.output_uri,
            "BatchSize": self.batch_size,
        }
        if self.expected_accuracy is not None:
            body["ExpectedAccuracy"] = self.expected_accuracy
        return body

    def facts(self, output: dict[str, Any]) -> dict[str, Any]:
        return {"accuracy through the endpoint": output.get("Accuracy"),
                "requests": output.get("Requests"), "predictions": output.get("PredictionsUri")}

    def headline(self, output: dict[str, Any]) -> dict[str, float]:
        acc = output.get("Accuracy")
        return {"endpoint accuracy": acc} if isinstance(acc, (int, float)) else {}
