"""Data capture of an emulated SageMaker endpoint, delivered to the emulated S3.

One ``EndpointCapture`` per endpoint whose endpoint config has a ``DataCaptureConfig``
with ``EnableCapture`` (absent means enabled, as on AWS):

- ``offer`` samples a successful InvokeEndpoint with ``InitialSamplingPercentage``
  (``seed`` makes the draw reproducible) and buffers it (at most ``MAX_BUFFERED``
  records; beyond that a record is dropped and counted, as SageMaker stops capturing
  rather than slow the endpoint down). Nothing touches S3 on the request path.
- ``flush`` delivers the buffered records as SageMaker lays them out under
  ``DestinationS3Uri``: ``<prefix>/<EndpointName>/<VariantName>/yyyy/mm/dd/hh/
  <mm-ss-mmm>-<uuid>.jsonl`` (UTC, the hour of each record's time, the file named after
  its first record's time, as ``local_runners.serve_capture.DataCapture`` names its
  files), one JSON record per line, in SageMaker's data capture format
  (``serve_capture.capture_record``). ``CaptureOptions`` decides the sections:
  ``Input`` only -> no ``endpointOutput``, ``Output`` only -> no ``endpointInput``
  (``eventMetadata``/``eventVersion`` always); both when absent.
  A batch that cannot be written (no such bucket, ...) is logged and counted in
  ``dropped``; it is not retried and never raises.

Not emulated: ``CaptureContentTypeHeader`` (JSON and CSV bodies are stored as text,
anything else base64, whatever the header lists), ``KmsKeyId``, ``inferenceId`` in the
event metadata, and changing the sampling of a running endpoint (UpdateEndpoint).
"""
from __future__ import annotations

import datetime as dt
import logging
import random
import threading
from typing import Any

import orjson

from cloud_runners.aws import split_s3
from harness.errors import HarnessError
from local_runners.serve_capture import capture_file_name, capture_record, sampled

LOG = logging.getLogger("mlharness.emulator.capture")

CAPTURE_FLUSH_S = 1.0       # how often the hosting bridge delivers the buffered records
MAX_BUFFERED = 10_000       # records held per endpoint between two deliveries
_MODES = {"input": {"endpointInput"}, "output": {"endpointOutput"},
          "inputandoutput": {"endpointInput", "endpointOutput"}}


def capture_sections(options: Any) -> set[str]:
    """The ``captureData`` sections ``CaptureOptions`` asks for (both when absent)."""
    if not options:
        return {"endpointInput", "endpointOutput"}
    sections: set[str] = set()
    for option in options:
        mode = str((option or {}).get("CaptureMode", "")).lower()
        if mode not in _MODES:
            raise HarnessError(f"unknown CaptureMode {option!r}",
                               field="DataCaptureConfig.CaptureOptions",
                               expected='[{"CaptureMode": "Input"}, {"CaptureMode": "Output"}]')
        sections |= _MODES[mode]
    return sections


class EndpointCapture:
    """Sampler, buffer and S3 delivery of one endpoint variant's data capture."""

    def __init__(self, endpoint_name: str, variant_name: str, config: dict[str, Any], *,
                 seed: int | None = None):
        self.endpoint_name, self.variant_name = endpoint_name, variant_name
        destination = config.get("DestinationS3Uri") or ""
        try:
            self.bucket, prefix = split_s3(destination)
        except HarnessError:
            raise HarnessError(f"DataCaptureConfig.DestinationS3Uri is {destination!r}",
                               field="DataCaptureConfig.DestinationS3Uri",
                               expected="s3://BUCKET[/PREFIX]") from None
        self.prefix = "/".join(p for p in (prefix.strip("/"), endpoint_name, variant_name) if p)
        percentage = config.get("InitialSamplingPercentage", 100)
        if not isinstance(percentage, (int, float)) or not 0 <= percentage <= 100:
            raise HarnessError(f"InitialSamplingPercentage is {percentage!r}",
                               field="DataCaptureConfig.InitialSamplingPercentage",
                               expected="an integer from 0 to 100")
        self.sampling_percentage = float(percentage)
        self.sections = capture_sections(config.get("CaptureOptions"))
        self._random = random.Random(seed)
        self._buffer: list[tuple] = []
        self._lock = threading.Lock()          # the buffer and the sampler
        self._flushing = threading.Lock()      # one delivery at a time
        self.captured = 0      # records sampled and buffered
        self.delivered = 0     # records written to S3
        self.dropped = 0       # records lost: buffer full or delivery failed
        self.keys: list[str] = []              # the objects written, in order

    @classmethod
    def from_config(cls, config: dict[str, Any] | None, endpoint_name: str,
                    variant_name: str, *, seed: int | None = None) -> EndpointCapture | None:
        """The capture of ``DataCaptureConfig`` (None when there is none or it is off)."""
        if not config or config.get("EnableCapture", True) is False:
            return None
        return cls(endpoint_name, variant_name, config, seed=seed)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def offer(self, request: bytes, request_type: str | None, response: bytes,
              response_type: str | None, when: dt.datetime | None = None) -> bool:
        """Buffer one answered request if it is sampled; whether it was."""
        when = when or dt.datetime.now(dt.timezone.utc)
        with self._lock:
            if not sampled(self.sampling_percentage, self._random):
                return False
            if len(self._buffer) >= MAX_BUFFERED:
                self.dropped += 1
                full = True
            else:
                self._buffer.append((when, request, request_type, response, response_type))
                self.captured += 1
                full = False
        if full:
            LOG.warning("data capture of %s: buffer full (%d records), record dropped",
                        self.endpoint_name, MAX_BUFFERED)
        return not full

    def flush(self, s3: Any, timeout: float = 10.0) -> int:
        """Deliver the records buffered now (after a delivery in progress ends, waiting up
        to ``timeout`` for it); the number delivered."""
        if not self._flushing.acquire(timeout=max(0.0, timeout)):
            LOG.warning("data capture of %s: a delivery still runs after %.1f s",
                        self.endpoint_name, timeout)
            return 0
        try:
            with self._lock:
                batch, self._buffer = self._buffer, []
            delivered = 0
            for records in _by_hour(batch).values():
                key = self._key(records[0][0])
                try:
                    body = b"".join(orjson.dumps(self._record(*r)) + b"\n" for r in records)
                    s3.put_object(Bucket=self.bucket, Key=key, Body=body)
                except Exception as e:  # noqa: BLE001 - capture never fails the endpoint
                    with self._lock:
                        self.dropped += len(records)
                    LOG.warning("data capture of %s: %d records not delivered to "
                                "s3://%s/%s: %s", self.endpoint_name, len(records),
                                self.bucket, key, e)
                    continue
                self.keys.append(key)
                delivered += len(records)
            self.delivered += delivered
            return delivered
        finally:
            self._flushing.release()

    def _record(self, when: dt.datetime, request: bytes, request_type: str | None,
                response: bytes, response_type: str | None) -> dict[str, Any]:
        record = capture_record(request, request_type, response, response_type, when)
        data = record["captureData"]
        for section in list(data):
            if section not in self.sections:
                del data[section]
        return record

    def _key(self, when: dt.datetime) -> str:
        return f"{self.prefix}/{capture_file_name(when)}"


def _by_hour(batch: list[tuple]) -> dict[tuple, list[tuple]]:
    """The records of a batch by the UTC hour of their time, each hour's in time order."""
    hours: dict[tuple, list[tuple]] = {}
    for record in sorted(batch, key=lambda r: r[0]):
        when = record[0]
        hours.setdefault((when.year, when.month, when.day, when.hour), []).append(record)
    return hours
