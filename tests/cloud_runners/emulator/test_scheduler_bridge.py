"""The EventBridge Scheduler bridge: schedules of the emulator fire their Step Functions
targets. The timing is tested as pure functions with fixed clocks; one emulator run (a
module fixture) holds an ``at()`` schedule that starts a state machine with the context
attributes substituted and is deleted after, and schedules that must not start anything
(missing role, disabled, unsupported target, cron)."""
from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from botocore.exceptions import ClientError

from cloud_runners.emulator import moto_gaps
from cloud_runners.emulator.scheduler_bridge import (
    SchedulerBridge,
    UnsupportedExpression,
    check,
    latest_due,
    next_firing,
    substitute_context,
    to_utc,
)
from harness.config import PipelineConfig

UTC = dt.timezone.utc
ACCOUNT = "123456789012"
BRIDGE = "cloud_runners.emulator.scheduler_bridge:SchedulerBridge"
INPUT = {"arn": "<aws.scheduler.schedule-arn>", "time": "<aws.scheduler.scheduled-time>",
         "id": "<aws.scheduler.execution-id>", "attempt": "<aws.scheduler.attempt-number>",
         "fixed": 7}


def t(h, m, s=0, day=1):
    return dt.datetime(2026, 12, day, h, m, s, tzinfo=UTC)


# ----------------------------------------------------------------------------- pure timing


def test_rate_first_fires_one_period_after_creation_then_every_period():
    created = t(15, 0, 10)
    assert next_firing("rate(1 minute)", created=created, after=None) == t(15, 1, 10)
    assert next_firing("rate(1 minute)", created=created, after=t(15, 1, 10)) == t(15, 2, 10)
    assert next_firing("rate(1 minute)", created=created, after=t(15, 1, 30)) == t(15, 2, 10)
    assert next_firing("rate(1 minute)", created=created, after=t(15, 0, 0)) == t(15, 1, 10)
    assert next_firing("rate(5 minutes)", created=created, after=t(15, 5, 10)) == t(15, 10, 10)
    assert next_firing("rate(2 hours)", created=created, after=None) == t(17, 0, 10)
    assert next_firing("rate(1 day)", created=created, after=None) == t(15, 0, 10, day=2)


def test_rate_honours_start_and_end_date():
    created = t(15, 0)
    assert next_firing("rate(1 minute)", created=created, after=None,
                       start=t(15, 30)) == t(15, 30)
    assert next_firing("rate(1 minute)", created=created, after=t(15, 30),
                       start=t(15, 30)) == t(15, 31)
    assert next_firing("rate(1 minute)", created=created, after=t(15, 2), end=t(15, 3)) == \
        t(15, 3)
    assert next_firing("rate(1 minute)", created=created, after=t(15, 3), end=t(15, 3, 30)) \
        is None


def test_latest_due_fires_once_for_missed_periods():
    created = t(15, 0)
    assert latest_due("rate(1 minute)", created=created, after=None, now=t(15, 0, 59)) is None
    assert latest_due("rate(1 minute)", created=created, after=None, now=t(15, 1)) == t(15, 1)
    assert latest_due("rate(1 minute)", created=created, after=t(15, 1),
                      now=t(15, 4, 30)) == t(15, 4)
    assert latest_due("rate(1 minute)", created=created, after=t(15, 4),
                      now=t(15, 4, 30)) is None


def test_at_fires_once_in_its_timezone_and_ignores_start_and_end():
    created = t(14, 0)
    assert next_firing("at(2026-12-01T15:00:00)", created=created, after=None) == t(15, 0)
    # 16:00 in Paris (UTC+1 in December) is 15:00 UTC
    assert next_firing("at(2026-12-01T16:00:00)", created=created, after=None,
                       timezone="Europe/Paris") == t(15, 0)
    assert next_firing("at(2026-07-01T16:00:00)", created=created, after=None,
                       timezone="America/New_York") == dt.datetime(2026, 7, 1, 20, 0,
                                                                   tzinfo=UTC)
    assert next_firing("at(2026-12-01T15:00:00)", created=created, after=t(15, 0)) is None
    assert next_firing("at(2026-12-01T15:00:00)", created=created, after=None,
                       start=t(16, 0), end=t(14, 30)) == t(15, 0)
    assert latest_due("at(2026-12-01T15:00:00)", created=created, after=None,
                      now=t(14, 59, 59)) is None
    assert latest_due("at(2026-12-01T15:00:00)", created=created, after=None,
                      now=t(15, 0)) == t(15, 0)


@pytest.mark.parametrize("expression, timezone", [
    ("cron(0 12 * * ? *)", "UTC"), ("rate(0 minutes)", "UTC"), ("rate(3 weeks)", "UTC"),
    ("every day", "UTC"), ("at(2026-12-01T15:00:00)", "Mars/Olympus_Mons"),
    ("at(2026-02-30T15:00:00)", "UTC")])
def test_unsupported_expressions_are_refused(expression, timezone):
    with pytest.raises(UnsupportedExpression):
        next_firing(expression, created=t(15, 0), after=None, timezone=timezone)


def test_context_attributes_are_substituted():
    text = json.dumps(INPUT)
    out = json.loads(substitute_context(text, schedule_arn="arn:s", scheduled_time=t(15, 0),
                                        execution_id="e-1"))
    assert out == {"arn": "arn:s", "time": "2026-12-01T15:00:00Z", "id": "e-1",
                   "attempt": "1", "fixed": 7}


def test_to_utc_reads_what_moto_keeps():
    assert to_utc(None) is None
    assert to_utc(t(15, 0).timestamp()) == t(15, 0)
    assert to_utc("2026-12-01T15:00:00Z") == t(15, 0)


def test_guard_moto_internals_the_bridge_relies_on_are_unchanged():
    problems = check()
    assert not problems, "moto changed under scheduler_bridge.py:\n" + "\n".join(problems)


# ----------------------------------------------------------------------------- on the emulator


def _wait(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _at(seconds_ahead: float) -> str:
    when = dt.datetime.now(UTC) + dt.timedelta(seconds=seconds_ahead)
    when = when.replace(microsecond=0) + dt.timedelta(seconds=1)
    return when.strftime("%Y-%m-%dT%H:%M:%S")


@pytest.fixture(scope="module")
def fired(tmp_path_factory):
    """One emulator with the bridge; the schedules are created, the due ones have fired
    (and one more poll has passed) when the tests run; the emulator still runs."""
    from cloud_runners.emulator.backend import offline_cloud

    tmp = tmp_path_factory.mktemp("scheduler-bridge")
    with offline_cloud(PipelineConfig(), tmp, [BRIDGE]) as (emu, _cfg, bridges):
        (bridge,) = bridges
        role = emu.client("iam").create_role(
            RoleName="scheduler-role", AssumeRolePolicyDocument=json.dumps({
                "Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow", "Principal": {"Service": "scheduler.amazonaws.com"},
                    "Action": "sts:AssumeRole"}]}))["Role"]["Arn"]
        sfn = emu.client("stepfunctions")
        machine = sfn.create_state_machine(
            name="scheduled", roleArn=role, definition=json.dumps(
                {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}))[
            "stateMachineArn"]
        scheduler = emu.client("scheduler")
        at = _at(1.0)
        off = {"Mode": "OFF"}

        def create(name, target, expression=f"at({at})", **kw):
            return scheduler.create_schedule(Name=name, ScheduleExpression=expression,
                                             FlexibleTimeWindow=off, Target=target,
                                             **kw)["ScheduleArn"]

        arns = {
            "once": create("once", {"Arn": machine, "RoleArn": role,
                                    "Input": json.dumps(INPUT)},
                           ActionAfterCompletion="DELETE"),
            "no-role": create("no-role", {
                "Arn": machine, "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/nope"}),
            "disabled": create("disabled", {"Arn": machine, "RoleArn": role},
                               State="DISABLED"),
            "queue": create("queue", {"Arn": f"arn:aws:sqs:us-east-1:{ACCOUNT}:q",
                                      "RoleArn": role}),
            "cron": create("cron", {"Arn": machine, "RoleArn": role},
                           expression="cron(* * * * ? *)"),
            "rate": create("rate", {"Arn": machine, "RoleArn": role},
                           expression="rate(1 minute)"),
        }

        def names():
            return {f["schedule"] for f in bridge.firings_snapshot()}

        _wait(lambda: {"once", "no-role", "queue"} <= names(), 10, "the at() schedules")
        time.sleep(3 * bridge.poll_seconds)  # a fired at() schedule must not fire again
        yield {"emu": emu, "bridge": bridge, "machine": machine, "at": at, "arns": arns,
               "role": role}
    assert not bridge._thread.is_alive(), "the poller outlived the emulator"


def _firings(fired, name):
    return [f for f in fired["bridge"].firings_snapshot() if f["schedule"] == name]


def test_at_schedule_starts_the_state_machine_once_with_the_context(fired):
    (firing,) = _firings(fired, "once")
    assert firing["error"] is None, firing
    assert firing["group"] == "default"
    assert firing["scheduled_time"] == fired["at"] + "Z"
    sfn = fired["emu"].client("stepfunctions")
    (execution,) = sfn.list_executions(stateMachineArn=fired["machine"])["executions"]
    assert execution["executionArn"] == firing["execution_arn"]
    got = json.loads(sfn.describe_execution(executionArn=firing["execution_arn"])["input"])
    assert got == {"arn": fired["arns"]["once"], "time": fired["at"] + "Z",
                   "id": firing["execution_id"], "attempt": "1", "fixed": 7}


def test_a_fired_at_schedule_with_delete_is_deleted_the_others_stay(fired):
    scheduler = fired["emu"].client("scheduler")
    with pytest.raises(ClientError, match="ResourceNotFound"):
        scheduler.get_schedule(Name="once")
    assert scheduler.get_schedule(Name="no-role")["Name"] == "no-role"  # NONE: kept


def test_a_missing_role_is_a_recorded_failure(fired):
    (firing,) = _firings(fired, "no-role")
    assert firing["execution_arn"] is None
    assert "role/nope does not exist" in firing["error"]
    assert "could not assume" in firing["error"]
    assert fired["bridge"]._thread.is_alive()  # the poller goes on


def test_a_disabled_schedule_never_fires(fired):
    assert _firings(fired, "disabled") == []


def test_an_unsupported_target_and_a_cron_expression_are_recorded(fired):
    (firing,) = _firings(fired, "queue")
    assert firing["error"].startswith("unsupported target")
    unsupported = {(u["schedule"], u["what"]) for u in fired["bridge"].unsupported_snapshot()}
    assert unsupported == {("queue", "target"), ("cron", "expression")}
    assert _firings(fired, "cron") == []


def test_a_rate_schedule_fires_one_period_after_its_creation(fired):
    """Not due before its first period; then (a poll at a later time rather than a minute
    of waiting) it starts the state machine with its scheduled time."""
    bridge = fired["bridge"]
    assert _firings(fired, "rate") == []
    created = to_utc(fired["emu"].client("scheduler").get_schedule(Name="rate")["CreationDate"])
    bridge.poll(now=created + dt.timedelta(seconds=61))
    (firing,) = _firings(fired, "rate")
    assert firing["error"] is None, firing
    assert firing["scheduled_time"] == (created + dt.timedelta(seconds=60)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    bridge.poll(now=created + dt.timedelta(seconds=119))
    assert len(_firings(fired, "rate")) == 1
    bridge.poll(now=created + dt.timedelta(seconds=121))
    assert len(_firings(fired, "rate")) == 2


def test_the_bridge_refuses_a_changed_moto(monkeypatch):
    from cloud_runners.emulator import scheduler_bridge

    symbol = "moto.scheduler.models.Schedule.__init__"
    monkeypatch.setitem(scheduler_bridge.FINGERPRINTS, symbol, "0" * 16)
    bridge = SchedulerBridge()
    with pytest.raises(moto_gaps.MotoGapsError, match=symbol.replace(".", r"\.")):
        bridge.install(emulator=None)
    assert bridge._thread is None
