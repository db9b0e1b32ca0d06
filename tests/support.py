"""Helpers shared by several test modules: a tiny real SavedModel with the serving
contract, an in-process reference call, a raw HTTP call, and real digits written as the
ETL writes them."""
from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from harness.idx import read_idx

D, C = 12, 3
SAMPLE = Path(__file__).resolve().parent.parent / "fixtures" / "mnist-sample"


def save_tiny_model(model_dir: Path, version: int = 1, seed: int = 0) -> Path:
    """A real SavedModel with the serving contract: pixels [N, D] -> probabilities, classes."""
    import keras
    import tensorflow as tf

    net = keras.Sequential([keras.Input((D,)), keras.layers.Dense(C, activation="softmax")])
    rng = np.random.default_rng(seed)
    net.layers[0].set_weights([rng.normal(0, 3, (D, C)).astype(np.float32),
                               np.zeros(C, np.float32)])

    class Serving(tf.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        @tf.function(input_signature=[tf.TensorSpec([None, D], tf.float32, name="pixels")])
        def serve(self, pixels):
            p = self.net(pixels)
            return {"probabilities": p, "classes": tf.argmax(p, axis=1)}

    module = Serving(net)
    out = model_dir / str(version)
    tf.saved_model.save(module, str(out), signatures={"serving_default": module.serve})
    return out


def in_process(version_dir: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    import tensorflow as tf
    fn = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    return {k: v.numpy() for k, v in fn(pixels=tf.constant(x)).items()}


def call(url: str, method: str, path: str, body: bytes | dict | None = None,
         headers: dict | None = None) -> tuple[int, object]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    conn.request(method, path, body=body, headers=headers or {"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, (json.loads(data) if data else None)


def sample_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` shuffled real digits from the bundled sample, normalised as the ETL does."""
    x = read_idx(SAMPLE / "train-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255
    y = read_idx(SAMPLE / "train-labels-idx1-ubyte.gz").astype(np.int64)
    idx = np.random.default_rng(seed).permutation(len(y))[:n]
    return x[idx], y[idx]


def write_split(directory: Path, x: np.ndarray, y: np.ndarray, parts: int = 2) -> Path:
    """Write a split the way the ETL's Spark job does: part files plus _SUCCESS."""
    directory.mkdir(parents=True)
    pixels = pa.array(list(x), type=pa.list_(pa.float32()))
    table = pa.table({"pixels": pixels, "label": pa.array(y, type=pa.int32())})
    step = -(-len(y) // parts)
    for i in range(parts):
        pq.write_table(table.slice(i * step, step), directory / f"part-{i:05d}-x.snappy.parquet")
    (directory / "_SUCCESS").write_text("")
    return directory


@contextlib.contextmanager
def moto_session(monkeypatch, region: str = "us-east-1", **session_kw) -> Iterator:
    """A boto3 session on moto's in-process mock: fake keys (or ``session_kw``), no profile,
    no endpoint override; moto's CloudFormation warning about BucketPolicy silenced."""
    import boto3
    import moto

    for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Tried to parse")
        with moto.mock_aws():
            yield boto3.session.Session(region_name=region, **session_kw)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Whether ``port`` on 127.0.0.1 can be bound (a stopped server released it)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_until_answering(url: str, proc, timeout: float = 60.0) -> None:
    """Poll ``GET url`` until it answers 200; fail the test with the output of ``proc``
    (a ``subprocess.Popen`` with text stdout) if it exits first or ``timeout`` passes."""
    import time
    import urllib.request

    import pytest

    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"the server exited ({proc.returncode}) before {url} answered: "
                            + proc.stdout.read())
            if time.monotonic() > deadline:
                pytest.fail(f"{url} did not answer within {timeout:g} s")
            time.sleep(0.3)


def predicted_classes(stdout: str) -> list[int]:
    """The class column of `harness predict`'s table (rows: # │ class │ probability)."""
    rows = [line.split("│") for line in stdout.splitlines() if line.count("│") == 4]
    return [int(r[2]) for r in rows]


class TaskUpdates:
    """A harness Progress that keeps each task's (completed, total) updates, by task
    description (what an image pull's progress bar was told)."""

    def __init__(self):
        self.updates: dict[str, list[tuple]] = {}

    def task(self, description, total=None):
        updates = self.updates.setdefault(description, [])

        class Task:
            def advance(self, amount=1):
                pass

            def update(self, *, completed=None, total=None, description=None):
                updates.append((completed, total))
        return contextlib.nullcontext(Task())


class RecordingProgress:
    """A harness Progress (and announce) that keeps every task, table and message,
    thread-safe: ``tasks`` [{description, total, advanced, updates}], ``tables``
    [{title, columns, rows: {key: cells}, updates: [(key, cells)]}], ``messages``."""

    def __init__(self):
        import threading

        self.tasks, self.tables, self.messages = [], [], []
        self._lock = threading.Lock()

    def table(self, title, columns):
        rec = {"title": title, "columns": list(columns), "rows": {}, "updates": []}
        lock = self._lock
        with lock:
            self.tables.append(rec)

        class Handle:
            def row(self, key, cells):
                with lock:
                    rec["rows"].setdefault(key, {}).update(cells)
                    rec["updates"].append((key, dict(cells)))

        return contextlib.nullcontext(Handle())

    def announce(self, msg):
        with self._lock:
            self.messages.append(msg)

    def task(self, description, total=None):
        rec = {"description": description, "total": total, "advanced": 0, "updates": []}
        with self._lock:
            self.tasks.append(rec)

        class Handle:
            def advance(self, amount=1):
                rec["advanced"] += amount

            def update(self, **kw):
                rec["updates"].append(kw)

        return contextlib.nullcontext(Handle())


class LogLines(logging.Handler):
    """A logging handler that keeps each record's message (``.lines``): what a step logged."""

    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())
