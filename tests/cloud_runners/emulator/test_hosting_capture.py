"""The emulated SageMaker endpoint executes its ``DataCaptureConfig``: sampled
InvokeEndpoint traffic lands in the emulated S3 in SageMaker's data capture format and
layout, readable by ``model.drift_capture``.

One emulator and one model archive serve the module; each test has its own endpoint
(``ENDPOINTS``, all started at once by the module fixture). The bridge delivers only when
told (``capture_flush_s`` stretched), except in the test of the periodic delivery, so
what each test sees is deterministic."""
from __future__ import annotations

import datetime as dt
import json
import logging
import random
import re
import time
from types import SimpleNamespace

import numpy as np
import pytest
from hosting_support import host, tiny_model_archive, wait_for_endpoint
from support import C, D

from cloud_runners import aws
from cloud_runners.emulator import capture_delivery
from cloud_runners.emulator.capture_delivery import CAPTURE_FLUSH_S, EndpointCapture
from cloud_runners.emulator.hosting_bridge import HostingBridge
from cloud_runners.emulator.server import EmbeddedEmulator
from model.drift_capture import read_window

MODELS, CAPTURE = "emu-capture-models", "emu-capture-data"
SEED = 11
KEY = re.compile(r"(?P<hour>\d{4}/\d{2}/\d{2}/\d{2})/(?P<mmss>\d{2}-\d{2})-\d{3}-"
                 r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.jsonl")


def _capture(destination: str, percentage: int = 100, modes=("Input", "Output")) -> dict:
    return {"EnableCapture": True, "InitialSamplingPercentage": percentage,
            "DestinationS3Uri": destination,
            "CaptureOptions": [{"CaptureMode": m} for m in modes],
            "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]}}


GONE = "emu-capture-gone"  # deleted by the test of a failed delivery
ENDPOINTS = {
    "cap-full": _capture(f"s3://{CAPTURE}/monitoring/capture"),
    "cap-sampled": _capture(f"s3://{CAPTURE}/sampled", 25),
    "cap-input": _capture(f"s3://{CAPTURE}/input", modes=("Input",)),
    "cap-off": None,
    "cap-deleted": _capture(f"s3://{CAPTURE}/deleted"),
    "cap-gone": _capture(f"s3://{GONE}/capture"),
    "cap-periodic": _capture(f"s3://{CAPTURE}/periodic"),
}


@pytest.fixture(scope="module")
def hosting(tmp_path_factory):
    root = tmp_path_factory.mktemp("capture")
    archive, _ = tiny_model_archive(root)
    bridge = HostingBridge(workdir=root, capture_seed=SEED, capture_flush_s=3600)
    with EmbeddedEmulator(bridge=bridge) as emu:
        s3 = emu.client("s3")
        for bucket in (MODELS, CAPTURE, GONE):
            s3.create_bucket(Bucket=bucket)
        uri = aws.upload_file(s3, archive, f"s3://{MODELS}/training/out/model.tar.gz")
        for name, capture in ENDPOINTS.items():  # the servers start side by side
            host(emu, name, uri, capture)
        for name in ENDPOINTS:
            assert wait_for_endpoint(emu, name)[-1] == "InService", name
        yield SimpleNamespace(emu=emu, bridge=bridge, s3=s3, model_uri=uri,
                              runtime=emu.client("sagemaker-runtime"))


def _invoke(hosting, name: str, x: np.ndarray) -> tuple[bytes, bytes]:
    body = json.dumps({"instances": x.tolist()}).encode()
    answer = hosting.runtime.invoke_endpoint(EndpointName=name, Body=body,
                                             ContentType="application/json",
                                             Accept="application/json")
    return body, answer["Body"].read()


def _objects(s3, uri: str) -> dict[str, list[dict]]:
    """key -> its JSON Lines records, for every object under ``uri``."""
    bucket, _ = aws.split_s3(uri)
    return {key: [json.loads(line) for line in
                  s3.get_object(Bucket=bucket, Key=key)["Body"].read().splitlines()]
            for key in aws.list_keys(s3, uri)}


def _batches(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    return [rng.random((int(rng.integers(1, 4)), D), dtype=np.float32) for _ in range(n)]


def test_captured_invocations_land_in_s3_in_sagemaker_layout_and_format(hosting, tmp_path):
    t0 = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    batches = _batches(np.random.default_rng(0), 5)
    sent = [_invoke(hosting, "cap-full", x) for x in batches]
    with pytest.raises(hosting.runtime.exceptions.ModelError):  # a failed answer: not captured
        _invoke(hosting, "cap-full", np.zeros((1, D + 1), np.float32))
    t1 = dt.datetime.now(dt.timezone.utc)

    assert hosting.bridge.flush_captures("cap-full") == len(sent)
    prefix = f"s3://{CAPTURE}/monitoring/capture/cap-full/AllTraffic"
    objects = _objects(hosting.s3, prefix)
    assert objects, "nothing delivered"
    records = []
    for key, lines in objects.items():
        match = KEY.fullmatch(key.removeprefix("monitoring/capture/cap-full/AllTraffic/"))
        assert match, key
        first = dt.datetime.strptime(lines[0]["eventMetadata"]["inferenceTime"],
                                     "%Y-%m-%dT%H:%M:%SZ")
        assert match["mmss"] == first.strftime("%M-%S"), key  # named after its first record
        for record in lines:
            when = record["eventMetadata"]["inferenceTime"]
            assert match["hour"] == when[:13].replace("-", "/").replace("T", "/"), (key, when)
            assert t0 <= dt.datetime.fromisoformat(when.replace("Z", "+00:00")) <= t1
        records += lines
    assert len(records) == len(sent)
    records.sort(key=lambda r: [b for b, _ in sent].index(
        r["captureData"]["endpointInput"]["data"].encode()))
    for record, (body, answer) in zip(records, sent):
        assert set(record) == {"captureData", "eventMetadata", "eventVersion"}
        assert record["eventVersion"] == "0" and record["eventMetadata"]["eventId"]
        request, response = (record["captureData"]["endpointInput"],
                             record["captureData"]["endpointOutput"])
        assert request == {"observedContentType": "application/json", "mode": "INPUT",
                           "data": body.decode(), "encoding": "JSON"}
        assert response["mode"] == "OUTPUT" and response["encoding"] == "JSON"
        assert response["observedContentType"].startswith("application/json")
        assert json.loads(response["data"]) == json.loads(answer)

    # harness's own reader takes them from a folder where they are downloaded
    folder = aws.download_prefix(hosting.s3, f"s3://{CAPTURE}/monitoring/capture",
                                 tmp_path / "capture")
    window = read_window(folder, D, C, start=t0 - dt.timedelta(minutes=1),
                         end=t1 + dt.timedelta(minutes=1))
    assert window.files == len(objects) and not window.malformed, window.first_at
    assert window.well_formed == len(sent) and window.outside_window == 0
    # the reader goes file by file: compare the rows in one order
    expected_x = np.concatenate(batches)
    expected_p = np.concatenate([[p["probabilities"] for p in json.loads(a)["predictions"]]
                                 for _, a in sent])
    got = sorted(zip(window.images.tolist(), window.probabilities.tolist()))
    want = sorted(zip(expected_x.tolist(), expected_p.tolist()))
    np.testing.assert_allclose([g[0] for g in got], [w[0] for w in want], rtol=1e-6)
    np.testing.assert_allclose([g[1] for g in got], [w[1] for w in want], rtol=1e-5)


def test_sampling_percentage_captures_that_share_of_the_invocations(hosting):
    n, percentage = 30, ENDPOINTS["cap-sampled"]["InitialSamplingPercentage"]
    sent = [_invoke(hosting, "cap-sampled", x)
            for x in _batches(np.random.default_rng(1), n)]
    hosting.bridge.flush_captures("cap-sampled")
    records = [r for lines in _objects(hosting.s3, f"s3://{CAPTURE}/sampled").values()
               for r in lines]
    # capture_seed makes the draw reproducible: exactly the requests it picked
    draws = random.Random(SEED)
    picked = [body.decode() for body, _ in sent if draws.random() * 100 < percentage]
    assert 3 <= len(picked) <= 15  # roughly 25 % of 30
    assert sorted(r["captureData"]["endpointInput"]["data"] for r in records) == sorted(picked)


def test_input_only_capture_has_no_endpoint_output(hosting):
    sent = [_invoke(hosting, "cap-input", x) for x in _batches(np.random.default_rng(2), 3)]
    assert hosting.bridge.flush_captures("cap-input") == 3
    records = [r for lines in _objects(hosting.s3, f"s3://{CAPTURE}/input").values()
               for r in lines]
    assert len(records) == 3
    for record in records:
        assert list(record["captureData"]) == ["endpointInput"]
        assert set(record) == {"captureData", "eventMetadata", "eventVersion"}
    assert sorted(r["captureData"]["endpointInput"]["data"] for r in records) == \
        sorted(body.decode() for body, _ in sent)


def test_without_data_capture_config_nothing_is_written(hosting):
    before = set(aws.list_keys(hosting.s3, f"s3://{CAPTURE}"))
    for x in _batches(np.random.default_rng(3), 3):
        _invoke(hosting, "cap-off", x)
    assert hosting.bridge.flush_captures("cap-off") == 0
    hosting.bridge.flush_captures()
    assert set(aws.list_keys(hosting.s3, f"s3://{CAPTURE}")) == before
    assert not [k for k in before if "/cap-off/" in k]


def test_records_buffered_at_delete_endpoint_are_delivered(hosting):
    sent = [_invoke(hosting, "cap-deleted", x) for x in _batches(np.random.default_rng(4), 4)]
    assert not aws.list_keys(hosting.s3, f"s3://{CAPTURE}/deleted")  # still buffered
    hosting.emu.client("sagemaker").delete_endpoint(EndpointName="cap-deleted")
    records = [r for lines in _objects(hosting.s3, f"s3://{CAPTURE}/deleted").values()
               for r in lines]
    assert sorted(r["captureData"]["endpointInput"]["data"] for r in records) == \
        sorted(body.decode() for body, _ in sent)


def test_a_failed_delivery_is_counted_and_never_fails_invoke_endpoint(hosting, caplog):
    dropped = hosting.bridge.captures_dropped
    batches = _batches(np.random.default_rng(5), 4)
    for x in batches[:3]:
        _invoke(hosting, "cap-gone", x)
    hosting.s3.delete_bucket(Bucket=GONE)
    with caplog.at_level(logging.WARNING, logger="mlharness.emulator.capture"):
        _, answer = _invoke(hosting, "cap-gone", batches[3])
        assert json.loads(answer)["predictions"]
        assert hosting.bridge.flush_captures("cap-gone") == 0
    assert hosting.bridge.captures_dropped - dropped == 4
    assert "4 records not delivered" in caplog.text and GONE in caplog.text
    # the endpoint still serves and captures
    _invoke(hosting, "cap-gone", batches[0])
    status = hosting.emu.client("sagemaker").describe_endpoint(EndpointName="cap-gone")
    assert status["EndpointStatus"] == "InService"
    hosting.s3.create_bucket(Bucket=GONE)
    assert hosting.bridge.flush_captures("cap-gone") == 1


def test_captures_are_delivered_every_capture_flush_s_without_a_flush(hosting, monkeypatch):
    monkeypatch.setattr(hosting.bridge, "capture_flush_s", CAPTURE_FLUSH_S)
    for x in _batches(np.random.default_rng(6), 2):
        _invoke(hosting, "cap-periodic", x)
    deadline = time.monotonic() + 4 * CAPTURE_FLUSH_S + 2
    records: list = []
    while time.monotonic() < deadline and len(records) < 2:
        time.sleep(0.1)
        records = [r for lines in _objects(hosting.s3, f"s3://{CAPTURE}/periodic").values()
                   for r in lines]
    assert len(records) == 2


# -- EndpointCapture alone (no emulator) -----------------------------------------------------

class _FakeS3:
    def __init__(self):
        self.objects: dict[str, bytes] = {}

    def put_object(self, Bucket, Key, Body):
        self.objects[f"{Bucket}/{Key}"] = Body


def test_output_only_records_and_one_object_per_hour_folder():
    capture = EndpointCapture("ep", "Blue", _capture("s3://bkt/pre/", modes=("Output",)))
    hour = dt.datetime(2026, 3, 4, 10, 59, 59, 500_000, tzinfo=dt.timezone.utc)
    for when in (hour, hour + dt.timedelta(seconds=1), hour + dt.timedelta(seconds=2)):
        capture.offer(b'{"instances": [[0.5]]}', "application/json",
                      b'{"predictions": [1]}', "application/json", when)
    s3 = _FakeS3()
    assert capture.flush(s3) == 3 and capture.flush(s3) == 0
    keys = sorted(s3.objects)
    assert [k.rsplit("/", 1)[0] for k in keys] == ["bkt/pre/ep/Blue/2026/03/04/10",
                                                   "bkt/pre/ep/Blue/2026/03/04/11"]
    assert keys[0].rsplit("/", 1)[1].startswith("59-59-500-")
    assert keys[1].rsplit("/", 1)[1].startswith("00-00-500-")
    lines = [json.loads(line) for k in keys for line in s3.objects[k].splitlines()]
    assert [len(s3.objects[k].splitlines()) for k in keys] == [1, 2]
    assert all(list(r["captureData"]) == ["endpointOutput"] for r in lines)
    assert lines[0]["eventMetadata"]["inferenceTime"] == "2026-03-04T10:59:59Z"


def test_capture_config_off_or_invalid(monkeypatch):
    assert EndpointCapture.from_config(None, "ep", "v") is None
    assert EndpointCapture.from_config({**_capture("s3://b/p"), "EnableCapture": False},
                                       "ep", "v") is None
    with pytest.raises(Exception, match="DestinationS3Uri"):
        EndpointCapture.from_config(_capture("/local/folder"), "ep", "v")
    with pytest.raises(Exception, match="InitialSamplingPercentage"):
        EndpointCapture.from_config(_capture("s3://b/p", 101), "ep", "v")
    capture = EndpointCapture.from_config(_capture("s3://b/p"), "ep", "v")
    monkeypatch.setattr(capture_delivery, "MAX_BUFFERED", 2)
    assert [capture.offer(b"{}", None, b"{}", None) for _ in range(3)] == [True, True, False]
    assert capture.dropped == 1 and capture.buffered == 2
