"""harness/monitoring.py: a run's endpoint is found from its own requests, by their shape;
what `harness monitor` cannot check is said plainly."""
from __future__ import annotations

import json

import pytest

from harness.errors import HarnessError
from harness.monitoring import check, find_target
from harness.runs import RunStore

RUN = "20260101-000000-ab12"


def fake_run(root, capture: str, model: str):
    steps = root / RUN / "steps"
    for step, doc in (
            ("deploy-config", {"EndpointConfigName": "c1", "ProductionVariants": [
                {"VariantName": "AllTraffic", "ModelName": "m1"}],
                "DataCaptureConfig": {"EnableCapture": True, "DestinationS3Uri": capture}}),
            ("the-model", {"ModelName": "m1", "PrimaryContainer": {"ModelDataUrl": model}})):
        (steps / step).mkdir(parents=True)
        (steps / step / "input.json").write_text(json.dumps(doc))
    (steps / "the-endpoint").mkdir()
    (steps / "the-endpoint" / "output.json").write_text(json.dumps(
        {"EndpointName": "e1", "EndpointConfigName": "c1"}))
    (root / RUN / "record.json").write_text("{}")
    return RunStore(root)


def test_the_endpoint_is_found_by_run_id_or_by_its_name_whatever_the_steps_are_called(tmp_path):
    store = fake_run(tmp_path, "file:///x/capture", "file:///x/model.tar.gz")
    for ref in (RUN, "e1"):
        target = find_target(store, ref)
        assert (target.run_id, target.endpoint_name) == (RUN, "e1")
        assert (target.capture_uri, target.model_data) == ("file:///x/capture",
                                                           "file:///x/model.tar.gz")


def test_a_cloud_runs_endpoint_is_found_from_its_create_endpoint_request(tmp_path):
    """In the cloud the endpoint step's output keeps only EndpointName and EndpointStatus
    (its ResultSelector); the CreateEndpoint request names the config."""
    store = fake_run(tmp_path, "s3://b/runs/r/capture", "s3://b/m/model.tar.gz")
    step = tmp_path / RUN / "steps" / "the-endpoint"
    (step / "input.json").write_text(json.dumps({"EndpointName": "e2",
                                                 "EndpointConfigName": "c1"}))
    (step / "output.json").write_text(json.dumps({"EndpointName": "e2",
                                                  "EndpointStatus": "InService"}))
    for ref in (RUN, "e2"):
        assert find_target(store, ref).endpoint_name == "e2"


def test_a_cloud_runs_captures_are_not_checked_locally_and_it_says_where_they_are(tmp_path):
    store = fake_run(tmp_path, "s3://bucket/runs/r/capture", "s3://bucket/m/model.tar.gz")
    with pytest.raises(HarnessError) as e:
        check(find_target(store, RUN), {})
    assert "s3://bucket/runs/r/capture" in str(e.value)
    assert f"harness cloud monitor {RUN}" in str(e.value)
    assert not (tmp_path / RUN / "monitoring").exists()
