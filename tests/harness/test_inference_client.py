"""The endpoint client gives the in-process predictions over both HTTP transports."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from support import C, D, in_process, save_tiny_model

from harness.errors import HarnessError
from harness.inference_client import (
    EndpointClient,
    EndpointError,
    HttpInvocationsTransport,
    HttpTfServingTransport,
    client_for_endpoint,
    ping,
)
from local_runners.model_server import ModelServer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("model")
    save_tiny_model(d, seed=3)
    return d


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(2).random((250, D), dtype=np.float32)


@pytest.mark.parametrize("make", [
    lambda url: HttpInvocationsTransport(url),
    lambda url: HttpTfServingTransport(url, "tiny"),
    lambda url: HttpTfServingTransport(url, "tiny", version=1),
], ids=["invocations", "tf-serving", "tf-serving-version"])
def test_client_matches_in_process(server, model_dir, x, make):
    want = in_process(model_dir / "1", x)
    with EndpointClient(make(server.url)) as client:
        one = client.predict(x[:1])
        assert one["probabilities"].shape == (1, C) and one["classes"].shape == (1,)
        got = client.predict_batches(x, batch_size=64)
        assert client.requests == 1 + 4  # 250 rows in batches of 64
        assert client.mean_latency_ms > 0
    np.testing.assert_array_equal(got["classes"], want["classes"])
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=1e-6)
    assert got["probabilities"].dtype == np.float32 and got["classes"].dtype == np.int64


def test_progress_task_advances_per_row(server, x):
    class Task:
        done = 0

        def advance(self, n=1):
            self.done += n

    task = Task()
    with client_for_endpoint({"EndpointName": "e", "EndpointUrl": server.url}) as client:
        client.predict_batches(x[:30], batch_size=8, progress_task=task)
        assert client.requests == 4
    assert task.done == 30


def test_http_error_carries_the_server_message(server):
    with EndpointClient(HttpInvocationsTransport(server.url)) as client:
        with pytest.raises(EndpointError) as err:
            client.predict(np.zeros((2, D + 1), np.float32))
        assert err.value.status == 400
        assert f"expected [N, {D}]" in err.value.server_message
        assert "HTTP 400" in str(err.value) and "/invocations" in str(err.value)
        # the same kept-alive client still works afterwards
        assert client.predict(np.zeros((2, D), np.float32))["classes"].shape == (2,)
    with EndpointClient(HttpTfServingTransport(server.url, "other")) as client:
        with pytest.raises(EndpointError, match="HTTP 404.*model 'other'"):
            client.predict(np.zeros((1, D), np.float32))


def test_bad_local_input_is_refused_before_sending(server):
    with EndpointClient(HttpInvocationsTransport(server.url)) as client:
        with pytest.raises(HarnessError, match=r"shape \[0, 12\]"):
            client.predict(np.zeros((0, D), np.float32))
        assert client.requests == 0


def test_unreachable_endpoint_and_missing_url(model_dir):
    srv = ModelServer(model_dir, "tiny").start()
    url = srv.url
    srv.stop()
    with EndpointClient(HttpInvocationsTransport(url, timeout=5)) as client:
        with pytest.raises(EndpointError, match="cannot reach the endpoint"):
            client.predict(np.zeros((1, D), np.float32))
    start = time.monotonic()
    with pytest.raises(EndpointError, match="not ready"):
        ping(url, timeout=0.5)
    assert time.monotonic() - start < 5
    with pytest.raises(HarnessError, match="EndpointUrl"):
        client_for_endpoint({"EndpointName": "cloud-endpoint"})
