"""Adaptive micro-batching: concurrent requests share model calls, each gets its own answer."""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import numpy as np
from support import D, call, in_process

from local_runners.model_server import ModelServer
from local_runners.serve_batching import MicroBatcher

SENTINEL = 7.0   # a pixel value the patched model refuses


def count_model_calls(server: ModelServer, delay: float = 0.0,
                      gate: threading.Event | None = None) -> list[int]:
    """Wrap the served signature: record the rows of each real model call, optionally slow
    it down (so requests pile up while it runs) or hold the first call until ``gate`` is
    set, and fail on the SENTINEL value."""
    sig = server.model.signatures["serving_default"]
    real, calls = sig.fn, []

    def counting(**kw):
        pixels = kw["pixels"]
        calls.append(int(pixels.shape[0]))
        if gate is not None and len(calls) == 1:
            assert gate.wait(60), "the test never opened the gate"
        time.sleep(delay)
        if np.any(pixels.numpy() == SENTINEL):
            raise RuntimeError("the model refuses this input")
        return real(**kw)

    sig.fn = counting
    return calls


def _wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def concurrently(url: str, bodies: list, path: str = "/v1/models/tiny:predict") -> list:
    """Send every body at once from its own thread; answers in order."""
    barrier = threading.Barrier(len(bodies))

    def send(body):
        barrier.wait()
        return call(url, "POST", path, body)

    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(send, bodies))


def test_concurrent_single_images_share_model_calls(model_dir):
    x = np.random.default_rng(3).random((16, D), dtype=np.float32)
    want = in_process(model_dir / "1", x)
    with ModelServer(model_dir, "tiny", max_batch_size=16, batch_timeout_micros=0) as srv:
        calls = count_model_calls(srv, delay=0.1)
        answers = concurrently(srv.url, [{"instances": [row]} for row in x.tolist()])
    assert all(status == 200 for status, _ in answers), answers
    assert sum(calls) == 16 and len(calls) < 16 and max(calls) > 1, calls
    for i, (_, body) in enumerate(answers):
        (row,) = body["predictions"]
        assert row["classes"] == int(want["classes"][i])
        np.testing.assert_allclose(row["probabilities"], want["probabilities"][i],
                                   rtol=1e-5, atol=1e-7)
    assert srv.batcher.stats.requests == 16 and srv.batcher.stats.model_calls == len(calls)


def test_request_larger_than_max_batch_runs_alone(model_dir):
    x = np.random.default_rng(4).random((10, D), dtype=np.float32)
    singles = np.random.default_rng(5).random((6, D), dtype=np.float32)
    with ModelServer(model_dir, "tiny", max_batch_size=4, batch_timeout_micros=0) as srv:
        calls = count_model_calls(srv, delay=0.1)
        bodies = [{"instances": x.tolist()}] + [{"instances": [r]} for r in singles.tolist()]
        answers = concurrently(srv.url, bodies)
    assert [s for s, _ in answers] == [200] * 7
    assert calls.count(10) == 1 and all(c <= 4 for c in calls if c != 10), calls
    assert sum(calls) == 16
    want = in_process(model_dir / "1", x)
    assert [r["classes"] for r in answers[0][1]["predictions"]] == want["classes"].tolist()
    want = in_process(model_dir / "1", singles)
    assert [b["predictions"][0]["classes"] for _, b in answers[1:]] == want["classes"].tolist()


def test_a_failing_request_does_not_affect_the_others_in_its_batch(model_dir):
    x = np.random.default_rng(6).random((12, D), dtype=np.float32)
    want = in_process(model_dir / "1", x)
    bodies: list = [{"instances": [row]} for row in x.tolist()]
    bad = {3: {"instances": [[SENTINEL] * D]},               # the model call fails
           5: {"instances": [[0.5] * 3]},                    # wrong shape
           8: b"{not json"}                                  # malformed
    for i, body in bad.items():
        bodies[i] = body
    path = "/v1/models/tiny:predict"
    with ModelServer(model_dir, "tiny", max_batch_size=16, batch_timeout_micros=0) as srv, \
            concurrent.futures.ThreadPoolExecutor(2) as pool:
        # Hold the model on a first request until the others are all queued, so the
        # failing one is merged with the good ones (else it might run alone by chance).
        gate = threading.Event()
        calls = count_model_calls(srv, gate=gate)
        blocker = pool.submit(call, srv.url, "POST", path, {"instances": x[:1].tolist()})
        _wait_until(lambda: calls == [1])
        sent = pool.submit(concurrently, srv.url, bodies)
        _wait_until(lambda: srv.batcher.stats.requests == 1 + len(bodies) - 2)  # 2 never parse
        gate.set()
        answers = sent.result(60)
        assert blocker.result(60)[0] == 200
        after = call(srv.url, "POST", path, {"instances": x[:2].tolist()})
    assert answers[3][0] == 500 and "refuses this input" in answers[3][1]["error"]
    assert answers[5][0] == 400 and "expected [N, 12]" in answers[5][1]["error"]
    assert answers[8][0] == 400 and "malformed JSON" in answers[8][1]["error"]
    for i, (status, body) in enumerate(answers):
        if i not in bad:
            assert status == 200, body
            assert body["predictions"][0]["classes"] == int(want["classes"][i])
    assert calls[:2] == [1, 10], calls           # the blocker, then all 10 merged
    assert srv.batcher.stats.fallbacks == 1     # the merged call failed and was split
    assert after[0] == 200 and len(after[1]["predictions"]) == 2


def test_batch_timeout_waits_only_for_requests_being_received():
    """The knob in isolation: the head waits up to batch_timeout_micros while another
    request is still being decoded; without one (or with 0) it runs at once."""
    calls: list[int] = []

    def model(arrays):
        calls.append(len(arrays["x"]))
        return {"y": arrays["x"] * 2}

    async def scenario(timeout_micros: int, announce: bool) -> list:
        loop = asyncio.get_running_loop()
        b = MicroBatcher(lambda fn, *a: loop.run_in_executor(None, fn, *a),
                         max_batch_size=8, batch_timeout_micros=timeout_micros)
        one = {"x": np.ones((1, 2), np.float32)}
        if announce:
            b.arrive()
        first = asyncio.ensure_future(b.submit("k", model, one))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(b.submit("k", model, {"x": np.full((2, 2), 3.0, np.float32)},
                                                arrived=announce))
        return [await first, await second]

    calls.clear()
    out = asyncio.run(scenario(2_000_000, announce=True))
    assert calls == [3]                                     # waited for the second
    np.testing.assert_array_equal(out[0]["y"], np.full((1, 2), 2.0))
    np.testing.assert_array_equal(out[1]["y"], np.full((2, 2), 6.0))
    calls.clear()
    asyncio.run(scenario(2_000_000, announce=False))
    assert calls == [1, 2]                                  # nobody announced: no wait
    calls.clear()
    asyncio.run(scenario(0, announce=True))
    assert calls == [1, 2]                                  # 0 = never wait


def test_batching_off_calls_the_model_per_request(model_dir):
    x = np.random.default_rng(7).random((4, D), dtype=np.float32)
    with ModelServer(model_dir, "tiny", max_batch_size=None) as srv:
        assert srv.batcher is None
        calls = count_model_calls(srv, delay=0.05)
        answers = concurrently(srv.url, [{"instances": [r]} for r in x.tolist()])
    assert [s for s, _ in answers] == [200] * 4 and calls == [1, 1, 1, 1]
