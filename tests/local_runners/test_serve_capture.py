"""Data capture in SageMaker's format: JSON Lines under <endpoint>/<variant>/yyyy/mm/dd/hh."""
from __future__ import annotations

import base64
import datetime as dt
import json
import re
import uuid
from pathlib import Path

import numpy as np
import pytest
from support import D, call

from local_runners.model_server import ModelServer
from local_runners.serve_capture import DataCapture, capture_record


def records(root: Path) -> list[tuple[Path, dict]]:
    return [(f, json.loads(line)) for f in sorted(root.rglob("*.jsonl"))
            for line in f.read_text().splitlines()]


def test_every_request_captured_at_100_percent(model_dir, tmp_path):
    capture = DataCapture(tmp_path, "mnist-ep", "AllTraffic", sampling_percentage=100)
    x = np.random.default_rng(0).random((3, D), dtype=np.float32)
    sent = []
    start = dt.datetime.now(dt.timezone.utc)
    with ModelServer(model_dir, "tiny", data_capture=capture) as srv:
        for i in range(4):
            body = json.dumps({"instances": x[: i + 1].tolist()}).encode()
            path = "/invocations" if i % 2 else "/v1/models/tiny:predict"
            status, answer = call(srv.url, "POST", path, body)
            assert status == 200
            sent.append((body, answer))
        assert call(srv.url, "POST", "/invocations", b"{bad")[0] == 400   # errors: not captured
    # stop() closed the capture: everything is on disk
    got = records(tmp_path)
    assert len(got) == 4
    for (file, rec), (body, answer) in zip(sorted(got, key=lambda r: len(r[1]["captureData"][
            "endpointInput"]["data"])), sent):
        rel = file.relative_to(tmp_path).parts
        assert rel[:2] == ("mnist-ep", "AllTraffic")
        assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\d{2}", "/".join(rel[2:6])), rel
        assert abs(dt.datetime.strptime("/".join(rel[2:6]), "%Y/%m/%d/%H").replace(
            tzinfo=dt.timezone.utc) - start.replace(minute=0, second=0, microsecond=0)
        ) <= dt.timedelta(hours=1)
        assert set(rec) == {"captureData", "eventMetadata", "eventVersion"}
        assert rec["eventVersion"] == "0"
        inp, out = rec["captureData"]["endpointInput"], rec["captureData"]["endpointOutput"]
        assert inp == {"observedContentType": "application/json", "mode": "INPUT",
                       "data": body.decode(), "encoding": "JSON"}
        assert out["mode"] == "OUTPUT" and out["encoding"] == "JSON"
        assert out["observedContentType"] == "application/json"
        assert json.loads(out["data"]) == answer
        uuid.UUID(rec["eventMetadata"]["eventId"])
        when = dt.datetime.strptime(rec["eventMetadata"]["inferenceTime"], "%Y-%m-%dT%H:%M:%SZ")
        assert abs(when.replace(tzinfo=dt.timezone.utc) - start) < dt.timedelta(minutes=5)
    assert len({rec["eventMetadata"]["eventId"] for _, rec in got}) == 4


def test_zero_percent_writes_nothing(model_dir, tmp_path):
    capture = DataCapture(tmp_path, "ep", sampling_percentage=0)
    with ModelServer(model_dir, "tiny", data_capture=capture) as srv:
        for _ in range(5):
            assert call(srv.url, "POST", "/invocations", {"instances": [[0.5] * D]})[0] == 200
    assert capture.captured == 0 and list(tmp_path.iterdir()) == []


def test_sampling_percentage_is_respected(tmp_path):
    capture = DataCapture(tmp_path, "ep", "v1", sampling_percentage=30, seed=1)
    taken = sum(capture.capture(b"{}", "application/json", b"[]", "application/json")
                for _ in range(1000))
    capture.flush()
    assert 230 <= taken <= 370
    assert len(records(tmp_path)) == taken == capture.written
    capture.close()
    with pytest.raises(ValueError):
        DataCapture(tmp_path, "ep", sampling_percentage=101)


def test_binary_bodies_are_base64():
    rec = capture_record(b"\x89PNG\x00", "image/png", b"1,2\n", "text/csv")
    inp, out = rec["captureData"]["endpointInput"], rec["captureData"]["endpointOutput"]
    assert inp["encoding"] == "BASE64" and base64.b64decode(inp["data"]) == b"\x89PNG\x00"
    assert out == {"observedContentType": "text/csv", "mode": "OUTPUT", "data": "1,2\n",
                   "encoding": "CSV"}
