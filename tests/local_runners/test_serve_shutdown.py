"""Graceful shutdown: stop() (and SIGTERM in the foreground server) refuses new connections,
answers every request already in flight, then frees the port.

Requests are kept in flight deterministically: the model call is gated (it blocks until the
test releases it), so nothing here depends on timing guesses."""
from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
from support import D, call, free_port, in_process

from harness.config import PROJECT_ROOT
from local_runners.model_server import ModelServer


def wait_for(condition, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def can_listen_on(port: int) -> None:
    """Bind and listen as a server would (SO_REUSEADDR, as the model server itself does:
    the closed connections' TIME_WAIT entries do not block it, a live listener would)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()


def check_answers(answers: list, x: np.ndarray, model_dir: Path) -> None:
    want = in_process(model_dir / "1", x)
    assert [status for status, _ in answers] == [200] * len(x), answers
    for i, (_, body) in enumerate(answers):
        (row,) = body["predictions"]
        assert row["classes"] == int(want["classes"][i])
        np.testing.assert_allclose(row["probabilities"], want["probabilities"][i],
                                   rtol=1e-5, atol=1e-7)


def test_stop_answers_requests_in_flight_then_frees_the_port(model_dir):
    x = np.random.default_rng(11).random((6, D), dtype=np.float32)
    srv = ModelServer(model_dir, "tiny", max_batch_size=16, batch_timeout_micros=0).start()
    port = srv.port
    sig = srv.model.signatures["serving_default"]
    real, entered, gate = sig.fn, threading.Event(), threading.Event()

    def gated(**kw):                    # the model call waits until the test releases it
        entered.set()
        assert gate.wait(30), "the test never released the model"
        return real(**kw)

    sig.fn = gated
    pool = concurrent.futures.ThreadPoolExecutor(len(x))
    stopper = None
    try:
        futures = [pool.submit(call, srv.url, "POST", "/v1/models/tiny:predict",
                               {"instances": [row]}) for row in x.tolist()]
        entered.wait(20)
        # every request has reached the server: one is in the model, the rest queued
        wait_for(lambda: srv.batcher.stats.requests == len(x), what="all requests queued")
        stopper = threading.Thread(target=srv.stop)
        stopper.start()
        wait_for(lambda: refuses_connections(port), what="the listener to close")
        assert stopper.is_alive()                   # still waiting for the requests
        assert not any(f.done() for f in futures)
        gate.set()
        stopper.join(30)
        assert not stopper.is_alive()
        answers = [f.result(30) for f in futures]
    finally:
        gate.set()
        if stopper is None:
            srv.stop()
        pool.shutdown()
    check_answers(answers, x, model_dir)
    assert srv.batcher.stats.requests == len(x)
    assert refuses_connections(port)
    can_listen_on(port)                             # the port is free again


def test_stop_closes_idle_keep_alive_connections_and_is_idempotent(model_dir):
    srv = ModelServer(model_dir, "tiny").start()
    idle = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    try:
        idle.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(4096).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        srv.stop()
        assert time.monotonic() - started < srv.shutdown_timeout   # nothing to wait for
        assert idle.recv(4096) == b""                              # closed by the server
    finally:
        idle.close()
    srv.stop()
    with ModelServer(model_dir, "tiny", port=srv.port) as again:   # the same port, at once
        assert call(again.url, "GET", "/ping")[0] == 200


# The foreground server with a gate on the model call, driven through stdin/stdout: it
# prints "queued" for each request handed to the batcher and "entered" when the model is
# called, and the call waits for a line on stdin. Everything else is main() unchanged.
GATED_MAIN = textwrap.dedent("""
    import os
    import sys
    import local_runners.serve_batching as sb
    from local_runners import serve_foreground

    real_call, real_submit = sb._call_batch, sb.MicroBatcher.submit

    def say(line):  # one write(2) per line: lines from two threads never interleave
        sys.stdout.flush()
        os.write(1, (line + "\\n").encode())

    def gated_call(batch):
        say(f"entered {len(batch)}")
        sys.stdin.readline()
        return real_call(batch)

    async def announcing_submit(self, *args, **kw):
        say("queued")
        return await real_submit(self, *args, **kw)

    sb._call_batch, sb.MicroBatcher.submit = gated_call, announcing_submit
    sys.exit(serve_foreground.main(sys.argv[1:]))
""")


def test_sigterm_finishes_requests_in_flight_and_exits_0(model_dir, tmp_path):
    x = np.random.default_rng(12).random((4, D), dtype=np.float32)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", GATED_MAIN, "--model-dir", str(model_dir), "--model-name",
         "tiny", "--host", "127.0.0.1", "--port", str(port), "--batch-timeout-micros", "0"],
        cwd=PROJECT_ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True)
    pool = concurrent.futures.ThreadPoolExecutor(len(x))
    try:
        assert "serving model" in proc.stdout.readline()
        url = f"http://127.0.0.1:{port}"
        futures = [pool.submit(call, url, "POST", "/v1/models/tiny:predict",
                               {"instances": [row]}) for row in x.tolist()]
        lines = [proc.stdout.readline().split()[0] for _ in range(len(x) + 1)]
        assert sorted(lines) == ["entered"] + ["queued"] * len(x), lines
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: refuses_connections(port), what="the listener to close")
        assert proc.poll() is None and not any(f.done() for f in futures)
        proc.stdin.write("go\n" * len(x))           # release every model call
        proc.stdin.flush()
        assert proc.wait(30) == 0
        answers = [f.result(30) for f in futures]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        pool.shutdown()
    check_answers(answers, x, model_dir)
    can_listen_on(port)
