"""The embedded emulator: moto in server mode on 127.0.0.1, Step Functions execution on."""
from __future__ import annotations

import json
import os

import pytest
from emulator_support import run_to_end
from support import port_is_free

from cloud_runners.emulator.server import EmbeddedEmulator, EmulatorError


def listening_here(port: int) -> bool:
    """This process has a listening socket on ``port`` (another process that took the
    freed port meanwhile -- a parallel test -- does not count)."""
    import psutil

    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
               for c in psutil.Process().net_connections(kind="tcp"))


def test_start_stop_releases_the_port_and_restores_moto_port(monkeypatch):
    monkeypatch.delenv("MOTO_PORT", raising=False)
    with EmbeddedEmulator(patch_gaps=False) as emu:
        port = emu.port
        assert emu.endpoint_url == f"http://127.0.0.1:{port}"
        assert os.environ["MOTO_PORT"] == str(port)
        assert not port_is_free(port) and listening_here(port)
    assert not emu.running
    assert "MOTO_PORT" not in os.environ
    assert not listening_here(port)


def test_stops_on_an_exception_and_only_one_runs_at_a_time(monkeypatch):
    monkeypatch.setenv("MOTO_PORT", "5999")
    with pytest.raises(RuntimeError, match="boom"):
        with EmbeddedEmulator(patch_gaps=False) as emu:
            port = emu.port
            with pytest.raises(EmulatorError, match="already running"):
                EmbeddedEmulator(patch_gaps=False).start()
            raise RuntimeError("boom")
    assert not listening_here(port)
    assert os.environ["MOTO_PORT"] == "5999"
    with EmbeddedEmulator(patch_gaps=False):  # a new one starts after the failure
        pass


def test_fake_credentials_stay_in_the_emulator_session(monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    with EmbeddedEmulator(patch_gaps=False) as emu:
        creds = emu.session().get_credentials()
        assert (creds.access_key, creds.secret_key) == ("testing", "testing")
        assert "AWS_ACCESS_KEY_ID" not in os.environ
        assert emu.client("s3").meta.endpoint_url == emu.endpoint_url


def test_s3_round_trip_and_a_state_machine_runs():
    with EmbeddedEmulator(patch_gaps=False) as emu:
        s3 = emu.client("s3")
        s3.create_bucket(Bucket="emu-bucket")
        s3.put_object(Bucket="emu-bucket", Key="a/b.txt", Body=b"hello")
        assert s3.get_object(Bucket="emu-bucket", Key="a/b.txt")["Body"].read() == b"hello"
        described, history = run_to_end(emu, {
            "StartAt": "P",
            "States": {"P": {"Type": "Pass", "Result": {"x": 1}, "ResultPath": "$.p",
                             "Next": "S"},
                       "S": {"Type": "Succeed"}}}, {"in": "put"})
        assert described["status"] == "SUCCEEDED"
        assert json.loads(described["output"]) == {"in": "put", "p": {"x": 1}}
        entered = [e["stateEnteredEventDetails"]["name"] for e in history
                   if e["type"].endswith("StateEntered")]
        assert entered == ["P", "S"]
