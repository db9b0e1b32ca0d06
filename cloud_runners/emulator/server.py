"""``EmbeddedEmulator``: moto in server mode, in this process, on 127.0.0.1 and a free port.

- Step Functions executions really run (moto's ``stepfunctions.execute_state_machine``,
  set through ``POST /moto-api/config``).
- ``MOTO_PORT`` is set to the server's port while it runs: moto's state-machine
  interpreter sends the Task states' service calls to ``localhost:$MOTO_PORT``; without
  it they would go to the wrong server (5000 by default). The previous value is restored.
- Credentials are fake and never leave the emulator: ``session()`` is a boto3 session with
  explicit keys (nothing is written to the process environment), and every client it
  makes points at ``endpoint_url``.
- ``stop()`` (or leaving the ``with`` block, also on an exception) stops the executions
  still running (StopExecution) and, through the bridges, the jobs they started (see
  ``workers``), shuts the server down, closes its socket, restores moto's config and
  ``MOTO_PORT`` and undoes the patches.
- ``bridge``: a compute bridge (``bridge.GlueBridge``, ``training_bridge.TrainingBridge``,
  ``processing_bridge.ProcessingBridge``, ``hosting_bridge.HostingBridge``,
  ``scheduler_bridge.SchedulerBridge``) or a list of them; each is installed after the
  patches and uninstalled first.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import traceback
import urllib.request
from typing import Any

import boto3.session

from harness.errors import HarnessError

FAKE_ACCESS_KEY = "testing"
FAKE_SECRET_KEY = "testing"
DEFAULT_REGION = "us-east-1"
# moto's default account (any access key that is not an account-mapped one lands there).
ACCOUNT_ID = "123456789012"

LOG = logging.getLogger("mlharness.emulator")
_lock = threading.Lock()
_running: "EmbeddedEmulator | None" = None  # moto's backends and config are process-wide


class EmulatorError(HarnessError):
    """The embedded emulator cannot do what was asked (not running, or already running)."""


class EmbeddedEmulator:
    """Start with ``with EmbeddedEmulator() as emu:`` (or ``start()``/``stop()``)."""

    def __init__(self, *, region: str = DEFAULT_REGION, host: str = "127.0.0.1",
                 port: int = 0, patch_gaps: bool = True, bridge: Any = None):
        self.region = region
        self.host = host
        self.requested_port = port
        self.patch_gaps = patch_gaps
        self.bridge = bridge
        self._server: Any = None
        self._port: int | None = None
        self._saved_moto_port: str | None = None
        self._undo: list[Any] = []

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmulatorError("the emulator is not running")
        return self._port

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "EmbeddedEmulator":
        global _running
        from moto.server import ThreadedMotoServer

        with _lock:
            if _running is not None:
                where = f" at {_running.endpoint_url}" if _running.running else ""
                raise EmulatorError(f"an embedded emulator is already running in this "
                                    f"process{where}; moto's state is process-wide, so one "
                                    "at a time")
            _running = self
        try:
            # One access-log line per request would drown the test output.
            werkzeug_log = logging.getLogger("werkzeug")
            saved_level = werkzeug_log.level
            werkzeug_log.setLevel(logging.WARNING)
            self._undo.append(lambda: werkzeug_log.setLevel(saved_level))
            server = ThreadedMotoServer(ip_address=self.host, port=self.requested_port,
                                        verbose=False)
            server.start()
            self._server = server
            self._port = int(server.get_host_and_port()[1])
            self._saved_moto_port = os.environ.get("MOTO_PORT")
            os.environ["MOTO_PORT"] = str(self._port)
            self._moto_api("reset")
            self._moto_api("config", {"stepfunctions": {"execute_state_machine": True}})
            if self.patch_gaps:
                from cloud_runners.emulator import moto_gaps
                self._undo.append(moto_gaps.apply())
            bridges = self.bridge if isinstance(self.bridge, (list, tuple)) else [self.bridge]
            for bridge in bridges:
                if bridge is not None:
                    self._undo.append(bridge.install(self))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        global _running
        try:
            if self._server is not None:
                self._stop_executions()
            while self._undo:  # the bridges first: they stop the jobs still running
                undo = self._undo.pop()
                undo()
            if self._server is not None:
                try:
                    self._moto_api("config", {"stepfunctions": {"execute_state_machine": False}})
                except OSError:
                    pass
                self._server.stop()
                inner = getattr(self._server, "_server", None)
                if inner is not None:
                    inner.server_close()  # release the port now
        finally:
            if self._port is not None:
                if self._saved_moto_port is None:
                    if os.environ.get("MOTO_PORT") == str(self._port):
                        os.environ.pop("MOTO_PORT", None)
                else:
                    os.environ["MOTO_PORT"] = self._saved_moto_port
            self._server = None
            self._port = None
            with _lock:
                if _running is self:
                    _running = None

    def __enter__(self) -> "EmbeddedEmulator":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _stop_executions(self) -> list[str]:
        """StopExecution for every execution still running (its interpreter thread ends at
        its next step, instead of calling a server that is gone); their ARNs."""
        stopped: list[str] = []
        try:
            sfn = self.client("stepfunctions")
            for page in sfn.get_paginator("list_state_machines").paginate():
                for machine in page.get("stateMachines", []):
                    running = sfn.list_executions(stateMachineArn=machine["stateMachineArn"],
                                                  statusFilter="RUNNING")
                    for ex in running.get("executions", []):
                        sfn.stop_execution(executionArn=ex["executionArn"],
                                           error="EmulatorStopped",
                                           cause="the embedded emulator stopped")
                        stopped.append(ex["executionArn"])
        except Exception:  # noqa: BLE001 - stopping the emulator goes on regardless
            LOG.warning("stopping the executions still running failed:\n%s",
                        traceback.format_exc())
        return stopped

    # -- clients -----------------------------------------------------------------------------

    def session(self) -> boto3.session.Session:
        """A boto3 session with the emulator's fake keys (never the environment's)."""
        return boto3.session.Session(aws_access_key_id=FAKE_ACCESS_KEY,
                                     aws_secret_access_key=FAKE_SECRET_KEY,
                                     aws_session_token=None, region_name=self.region)

    def client(self, service: str, **kw: Any) -> Any:
        kw.setdefault("endpoint_url", self.endpoint_url)
        return self.session().client(service, **kw)

    def _moto_api(self, what: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else b""
        req = urllib.request.Request(f"{self.endpoint_url}/moto-api/{what}", data=data,
                                     method="POST",
                                     headers={"Content-Type": "application/json"})
        # The emulator is local: never route its control calls through a proxy.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=10) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None
