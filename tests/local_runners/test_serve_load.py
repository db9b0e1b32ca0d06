"""A bounded load test of the foreground model server (``python -m local_runners.model_server``
in its own process): 20,000 1-image predicts at concurrency 64 over keep-alive connections,
no 5xx, no dropped or reset connection, one prediction per answer, and no memory growth."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import orjson
import psutil
import pytest
from support import D, free_port, in_process

from harness.config import PROJECT_ROOT
from local_runners.http_load import run_load

PATH = "/v1/models/tiny:predict"


@pytest.fixture
def server(model_dir):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "local_runners.model_server",
                             "--model-dir", str(model_dir), "--model-name", "tiny",
                             "--host", "127.0.0.1", "--port", str(port)],
                            cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert "serving model" in line, line
        yield proc, port
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def test_20000_requests_at_concurrency_64(server, model_dir):
    proc, port = server
    x = np.random.default_rng(21).random((1, D), dtype=np.float32)
    want = in_process(model_dir / "1", x)
    body = orjson.dumps({"instances": x}, option=orjson.OPT_SERIALIZE_NUMPY)

    def one_prediction(status: int, answer: bytes) -> bool:
        rows = orjson.loads(answer)["predictions"]
        return (len(rows) == 1 and rows[0]["classes"] == int(want["classes"][0])
                and np.allclose(rows[0]["probabilities"], want["probabilities"][0],
                                rtol=1e-5, atol=1e-7))

    warm = run_load("127.0.0.1", port, PATH, body, 64, total=640, check=one_prediction)
    assert warm.requests == 640, warm.summary()
    ps = psutil.Process(proc.pid)
    rss_before = ps.memory_info().rss

    started = time.monotonic()
    r = run_load("127.0.0.1", port, PATH, body, 64, total=20_000, check=one_prediction,
                 timeout=30)
    took = time.monotonic() - started
    rss_after = ps.memory_info().rss

    assert r.errors == {"http": 0, "connection": 0, "bad_answers": 0}, r.summary()
    assert r.requests == 20_000 and dict(r.statuses) == {200: 20_000}, r.summary()
    assert proc.poll() is None                          # still serving
    assert rss_after <= rss_before * 1.10, (
        f"RSS grew from {rss_before / 2**20:.1f} MiB to {rss_after / 2**20:.1f} MiB")
    assert took < 40, f"20,000 requests took {took:.1f} s"
    print(f"\n20,000 requests in {took:.1f} s ({r.req_per_s:.0f} req/s, p50 "
          f"{r.percentile_ms(50):.1f} ms, p99 {r.percentile_ms(99):.1f} ms); RSS "
          f"{rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB")
