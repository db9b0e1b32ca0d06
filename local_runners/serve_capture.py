"""Data capture for the embedded model server, in SageMaker's data capture format.

Each sampled request/response becomes one JSON Lines record::

    {"captureData": {"endpointInput":  {"observedContentType": "application/json",
                                        "mode": "INPUT",  "data": "...", "encoding": "JSON"},
                     "endpointOutput": {"observedContentType": "application/json",
                                        "mode": "OUTPUT", "data": "...", "encoding": "JSON"}},
     "eventMetadata": {"eventId": "<uuid>", "inferenceTime": "2024-05-01T12:00:00Z"},
     "eventVersion": "0"}

under ``<directory>/<endpoint>/<variant>/yyyy/mm/dd/hh/<mm-ss-mmm>-<uuid>.jsonl`` (UTC), as
SageMaker writes it under ``DestinationS3Uri``. JSON and CSV bodies are stored as text
(encoding ``JSON``/``CSV``), anything else base64 (``BASE64``). ``capture`` only samples
and enqueues; one writer thread appends the records (flushed when the queue runs dry, never
fsynced), so the request path never touches the disk.
"""
from __future__ import annotations

import base64
import datetime as dt
import logging
import queue
import random
import threading
import uuid
from pathlib import Path
from typing import IO, Any

import orjson

log = logging.getLogger(__name__)

_TEXT_ENCODINGS = {"application/json": "JSON", "application/jsonlines": "JSON",
                   "text/csv": "CSV"}


def _section(mode: str, body: bytes, content_type: str | None) -> dict[str, str]:
    ctype = (content_type or "application/octet-stream").split(";")[0].strip().lower()
    encoding = _TEXT_ENCODINGS.get(ctype)
    if encoding is not None:
        try:
            data = body.decode("utf-8")
        except UnicodeDecodeError:
            encoding = None
    if encoding is None:
        encoding, data = "BASE64", base64.b64encode(body).decode("ascii")
    return {"observedContentType": content_type or "application/octet-stream",
            "mode": mode, "data": data, "encoding": encoding}


def capture_record(request: bytes, request_type: str | None, response: bytes,
                   response_type: str | None, when: dt.datetime | None = None,
                   event_id: str | None = None) -> dict[str, Any]:
    when = when or dt.datetime.now(dt.timezone.utc)
    return {"captureData": {"endpointInput": _section("INPUT", request, request_type),
                            "endpointOutput": _section("OUTPUT", response, response_type)},
            "eventMetadata": {"eventId": event_id or str(uuid.uuid4()),
                              "inferenceTime": when.strftime("%Y-%m-%dT%H:%M:%SZ")},
            "eventVersion": "0"}


def capture_file_name(when: dt.datetime) -> str:
    """``yyyy/mm/dd/hh/<mm-ss-mmm>-<uuid>.jsonl``: where SageMaker puts a capture file
    (under ``<destination>/<endpoint>/<variant>/``), by its first record's UTC time."""
    return (f"{when.strftime('%Y/%m/%d/%H')}/{when.strftime('%M-%S-')}"
            f"{when.microsecond // 1000:03d}-{uuid.uuid4()}.jsonl")


def sampled(percentage: float, rng: random.Random) -> bool:
    """Whether one request is captured at ``InitialSamplingPercentage`` ``percentage``."""
    return percentage >= 100 or (percentage > 0 and rng.random() * 100 < percentage)


class DataCapture:
    """Sample and write request/response pairs for one endpoint variant."""

    _STOP = object()

    def __init__(self, directory: str | Path, endpoint_name: str, variant_name: str = "AllTraffic",
                 sampling_percentage: float = 100.0, seed: int | None = None):
        if not 0 <= sampling_percentage <= 100:
            raise ValueError(f"sampling_percentage must be in [0, 100], got {sampling_percentage}")
        self.root = Path(directory) / endpoint_name / variant_name
        self.sampling_percentage = float(sampling_percentage)
        self._random = random.Random(seed)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.captured = 0          # records enqueued
        self.written = 0           # records written
        self.dropped = 0           # write failures
        self.files: list[Path] = []

    def sampled(self) -> bool:
        return sampled(self.sampling_percentage, self._random)

    def capture(self, request: bytes, request_type: str | None, response: bytes,
                response_type: str | None) -> bool:
        """Enqueue one record if sampled; returns whether it was."""
        if not self.sampled():
            return False
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._write_loop, daemon=True,
                                                    name="data-capture")
                    self._thread.start()
        self.captured += 1
        self._queue.put((dt.datetime.now(dt.timezone.utc), request, request_type, response,
                         response_type))
        return True

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every record enqueued so far is written (and flushed to the OS)."""
        if self._thread is None:
            return
        done = threading.Event()
        self._queue.put(done)
        if not done.wait(timeout):
            raise TimeoutError("data capture writer did not catch up")

    def close(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        self._queue.put(self._STOP)
        self._thread.join(timeout)
        self._thread = None

    # -- writer thread
    def _write_loop(self) -> None:
        out: IO[bytes] | None = None
        hour: tuple | None = None
        try:
            while True:
                item = self._queue.get()
                batch = [item]
                while True:                      # drain what is there: one flush per burst
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = False
                events = []
                for item in batch:
                    if item is self._STOP:
                        stop = True
                        continue
                    if isinstance(item, threading.Event):
                        events.append(item)
                        continue
                    when, req, req_type, resp, resp_type = item
                    try:
                        key = (when.year, when.month, when.day, when.hour)
                        if key != hour or out is None:
                            if out is not None:
                                out.close()
                            out, hour = self._open(when), key
                        out.write(orjson.dumps(capture_record(req, req_type, resp, resp_type,
                                                              when)) + b"\n")
                        self.written += 1
                    except Exception as e:  # a full disk must not take the server down
                        self.dropped += 1
                        log.warning("data capture record dropped: %s", e)
                if out is not None:
                    out.flush()
                for e in events:
                    e.set()
                if stop:
                    return
        finally:
            if out is not None:
                out.close()

    def _open(self, when: dt.datetime) -> IO[bytes]:
        path = self.root / capture_file_name(when)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.files.append(path)
        return open(path, "ab")
