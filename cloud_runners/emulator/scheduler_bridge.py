"""The EventBridge Scheduler bridge: the emulator's schedules fire.

moto keeps EventBridge Scheduler's schedules (``CreateSchedule``, ``GetSchedule``...) but
never invokes their targets. ``SchedulerBridge.install(emulator)`` starts a poller thread
(every ``POLL_SECONDS``) that reads the schedules of moto's scheduler backend (every
account and region the emulator holds) and fires the ``ENABLED`` ones when they are due:

- ``at(yyyy-mm-ddThh:mm:ss)``: once, at that wall-clock time in
  ``ScheduleExpressionTimezone`` (UTC by default; any IANA zone, through ``zoneinfo``).
  As on AWS, ``StartDate`` and ``EndDate`` are ignored for one-time schedules. A time
  already past when the schedule is first seen fires at once (once).
- ``rate(N minute|minutes|hour|hours|day|days)``: first at ``StartDate`` if given, else
  one period after the schedule's creation; then every period, never after ``EndDate``.
  When the poller finds more than one firing due (it was late), it fires only the
  latest one.
- ``cron(...)``: not emulated (no cron library is installed in the project's venv and
  none is added); such a schedule is logged once and recorded in ``bridge.unsupported``,
  never fired. So is any expression the bridge cannot parse.
- ``FlexibleTimeWindow``: the schedule fires at the start of its window (the scheduled
  time itself), never later in the window.
- A schedule that is ``DISABLED`` when it is due does not fire, and its missed firings
  are not caught up when it is enabled again.

Firing a schedule whose target is a Step Functions state machine
(``arn:aws:states:<region>:<account>:stateMachine:<name>``):

1. the target's ``RoleArn`` is assumed (STS ``AssumeRole`` on the emulator, which gives
   keys of the role's account) and must name a role that exists in the emulated IAM
   (``GetRole``); else the firing fails, as on AWS where Scheduler could not assume it:
   logged, and recorded with the reason;
2. ``StartExecution`` is called on the emulator (``emulator.client("stepfunctions")``,
   with the role's keys, in the target's region) with the target's ``Input`` (``"{}"``
   by default) in which EventBridge Scheduler's context attributes are replaced:
   ``<aws.scheduler.schedule-arn>``, ``<aws.scheduler.scheduled-time>`` (ISO 8601 UTC,
   ``2026-12-01T15:00:00Z``), ``<aws.scheduler.execution-id>`` (a UUID here),
   ``<aws.scheduler.attempt-number>`` (``1``: there are no retries). The execution is
   named by that execution id (AWS's would be generated; moto's backend would name an
   unnamed execution ``None``, and a second one would then fail).

Any other target (other services, universal ``aws-sdk`` targets) is recorded in
``bridge.unsupported`` (logged once per schedule) and as a failed firing each time the
schedule is due. After the last firing of a schedule (an ``at()`` one, or a ``rate()``
one whose ``EndDate`` is reached) with ``ActionAfterCompletion: DELETE``, the schedule is
deleted, as AWS does.

Every firing is recorded in ``bridge.firings`` (a list of dicts: ``schedule``, ``group``,
``schedule_arn``, ``scheduled_time``, ``execution_id``, ``target``, ``execution_arn`` or
``error``); read it with ``bridge.firings_snapshot()`` from other threads.

Not emulated: cron expressions, retries (``RetryPolicy``), dead-letter queues, the random
offset within a flexible window, KMS, schedule groups' state, targets other than Step
Functions, the role's permissions (only its existence is checked).

The poller stops when the function ``install`` returns is called (the emulator calls it
when it stops). What the bridge reads in moto is fingerprinted in ``FINGERPRINTS``;
``install()`` refuses to start when it changed.
"""
from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import traceback
import uuid
from typing import Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cloud_runners.emulator.bridge import Bridge
from cloud_runners.emulator.moto_gaps import check_fingerprints, resolve_attr

LOG = logging.getLogger("mlharness.emulator.scheduler")
POLL_SECONDS = 0.5
UTC = dt.timezone.utc

_MODELS = "moto.scheduler.models"
# sha256 (first 16 hex) of the moto code the bridge reads, from moto 5.2.5.
FINGERPRINTS = {
    # the attributes read: name, group_name, arn, schedule_expression(_timezone), target,
    # state, start_date, end_date (epoch seconds, as the request gave them),
    # action_after_completion, creation_date (epoch seconds)
    f"{_MODELS}.Schedule.__init__": "f2a7a7e228fe0fab",
    f"{_MODELS}.Schedule.update": "f67172d2d5ef1ca6",
    # backend.schedule_groups: {name: ScheduleGroup}; group.schedules: {name: Schedule}
    f"{_MODELS}.EventBridgeSchedulerBackend.__init__": "9e3eb81f0bde0029",
    f"{_MODELS}.ScheduleGroup.__init__": "fcd40f393cd90468",
    # ActionAfterCompletion DELETE
    f"{_MODELS}.EventBridgeSchedulerBackend.delete_schedule": "4569544648c9a8c4",
    # StartDate/EndDate reach the backend as the request's numbers
    "moto.scheduler.responses.EventBridgeSchedulerResponse.create_schedule":
        "3c305b38fca75449",
}

_AT = re.compile(r"^at\((\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\)$")
_RATE = re.compile(r"^rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_STATE_MACHINE = re.compile(r"^arn:[\w-]+:states:([\w-]+):(\d{12}):stateMachine:[^:]+$")


class UnsupportedExpression(ValueError):
    """A schedule expression the bridge does not emulate (cron) or cannot parse."""


def check() -> list[str]:
    """What the bridge relies on in moto and no longer finds as it was (empty: all good)."""
    return check_fingerprints(FINGERPRINTS, "the scheduler bridge", resolve_attr)


# ----------------------------------------------------------------------------- pure timing


def to_utc(value: Any) -> dt.datetime | None:
    """A schedule's ``StartDate``/``EndDate``/``CreationDate`` as moto keeps it (epoch
    seconds; an ISO 8601 string or a datetime are accepted too) as an aware UTC datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(float(value), UTC)
    text = str(value)
    try:
        return dt.datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _zone(timezone: str | None) -> dt.tzinfo:
    if not timezone or timezone.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise UnsupportedExpression(f"unknown ScheduleExpressionTimezone {timezone!r}") from e


def next_firing(expression: str, *, created: dt.datetime, after: dt.datetime | None,
                timezone: str | None = "UTC", start: dt.datetime | None = None,
                end: dt.datetime | None = None) -> dt.datetime | None:
    """The first time (aware, UTC) a schedule is due strictly after ``after`` (``None``:
    its first time ever); ``None`` when it is never due again. Pure: no clock is read.

    ``created`` is the schedule's creation time (``rate()`` without ``StartDate`` first
    fires one period after it); ``start``/``end`` are ``StartDate``/``EndDate`` (ignored
    by ``at()``, as on AWS). Raises ``UnsupportedExpression`` for ``cron()`` and anything
    it cannot parse."""
    expression = (expression or "").strip()
    m = _AT.match(expression)
    if m:
        y, mo, d, h, mi, s = (int(g) for g in m.groups())
        try:
            local = dt.datetime(y, mo, d, h, mi, s, tzinfo=_zone(timezone))
        except ValueError as e:
            raise UnsupportedExpression(f"invalid date in {expression!r}: {e}") from e
        when = local.astimezone(UTC)
        return when if after is None or when > after else None
    m = _RATE.match(expression)
    if m:
        value, unit = int(m.group(1)), m.group(2).rstrip("s")
        if value < 1:
            raise UnsupportedExpression(f"the rate of {expression!r} must be at least 1")
        period = dt.timedelta(seconds=value * _UNIT_SECONDS[unit])
        first = start if start is not None else created + period
        if after is None or after < first:
            when = first
        else:
            periods = (after - first) // period + 1
            when = first + periods * period
        return None if end is not None and when > end else when
    if expression.startswith("cron("):
        raise UnsupportedExpression(f"{expression!r}: cron expressions are not emulated "
                                    "(no cron library in the venv)")
    raise UnsupportedExpression(f"{expression!r}: not an at(), rate() or cron() expression")


def latest_due(expression: str, *, created: dt.datetime, after: dt.datetime | None,
               now: dt.datetime, timezone: str | None = "UTC",
               start: dt.datetime | None = None,
               end: dt.datetime | None = None) -> dt.datetime | None:
    """The latest time due at ``now`` strictly after ``after`` (``None``: nothing due).
    Pure, like ``next_firing``."""
    due = None
    when = next_firing(expression, created=created, after=after, timezone=timezone,
                       start=start, end=end)
    while when is not None and when <= now:
        due = when
        when = next_firing(expression, created=created, after=when, timezone=timezone,
                           start=start, end=end)
    return due


def substitute_context(text: str, *, schedule_arn: str, scheduled_time: dt.datetime,
                       execution_id: str, attempt_number: int = 1) -> str:
    """EventBridge Scheduler's context attributes in a target's ``Input`` replaced."""
    values = {
        "<aws.scheduler.schedule-arn>": schedule_arn,
        "<aws.scheduler.scheduled-time>": iso_utc(scheduled_time),
        "<aws.scheduler.execution-id>": execution_id,
        "<aws.scheduler.attempt-number>": str(attempt_number),
    }
    for key, value in values.items():
        text = text.replace(key, value)
    return text


def iso_utc(when: dt.datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ----------------------------------------------------------------------------- the bridge


class SchedulerBridge(Bridge):
    """Fire the emulator's EventBridge Scheduler schedules (see the module doc)."""

    def __init__(self, cfg: Any = None, *, workdir: Any = None,
                 poll_seconds: float = POLL_SECONDS,
                 clock: Callable[[], dt.datetime] | None = None):
        super().__init__(cfg, workdir=workdir)
        self.poll_seconds = poll_seconds
        self.clock = clock or (lambda: dt.datetime.now(UTC))
        self.firings: list[dict[str, Any]] = []
        self.unsupported: list[dict[str, Any]] = []
        self._lock = threading.Lock()  # firings, unsupported
        self._poll_lock = threading.Lock()  # one poll at a time (the poller's, or a caller's)
        self._last: dict[str, dt.datetime | None] = {}  # schedule ARN -> last scheduled time
        self._seen: dict[str, tuple] = {}  # schedule ARN -> what its timing depends on
        self._reported: set[tuple[str, str]] = set()  # (schedule ARN, what) logged once
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- install / uninstall ------------------------------------------------------------------

    def install(self, emulator: Any) -> Callable[[], None]:
        self.refuse_changed_moto(check(), "the scheduler bridge", __file__)
        self._emulator = emulator
        self._stop.clear()
        thread = threading.Thread(target=self._poll_loop, name="scheduler-bridge",
                                  daemon=True)
        self._thread = thread
        thread.start()

        def uninstall() -> None:
            self._stop.set()
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(timeout=10)
                if thread.is_alive():
                    LOG.warning("the scheduler bridge's poller did not stop within 10 s")

        return uninstall

    def firings_snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(f) for f in self.firings]

    def unsupported_snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(u) for u in self.unsupported]

    # -- polling ------------------------------------------------------------------------------

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            if not getattr(self._emulator, "running", True):
                return
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the poller survives one bad poll
                LOG.error("the scheduler bridge's poll failed:\n%s", traceback.format_exc())
            self._stop.wait(self.poll_seconds)

    @staticmethod
    def _schedules() -> list[tuple[Any, Any]]:
        """(backend, schedule) of every account and region moto holds (a copy)."""
        from moto.scheduler.models import scheduler_backends

        out = []
        for _account, regions in list(dict.items(scheduler_backends)):
            for _region, backend in list(dict.items(regions)):
                for group in list(backend.schedule_groups.values()):
                    out.extend((backend, s) for s in list(group.schedules.values()))
        return out

    def poll(self, now: dt.datetime | None = None) -> None:
        """One pass: fire every schedule due at ``now`` (the clock's time by default; a
        test may pass a later time to fire a schedule without waiting for it)."""
        with self._poll_lock:
            now = now or self.clock()
            live = set()
            for backend, schedule in self._schedules():
                if self._stop.is_set():
                    return
                live.add(schedule.arn)
                self._poll_one(backend, schedule, now)
            for arn in set(self._last) - live:  # deleted: one created again starts afresh
                self._last.pop(arn, None)
                self._seen.pop(arn, None)

    def _poll_one(self, backend: Any, schedule: Any, now: dt.datetime) -> None:
        arn = schedule.arn
        created = to_utc(schedule.creation_date) or now
        signature = (created, schedule.schedule_expression,
                     schedule.schedule_expression_timezone, schedule.start_date,
                     schedule.end_date)
        if self._seen.get(arn, (created,))[0] != created:  # deleted and created again
            self._last.pop(arn, None)
        self._seen[arn] = signature
        after = self._last.get(arn)
        try:
            start, end = to_utc(schedule.start_date), to_utc(schedule.end_date)
            due = latest_due(schedule.schedule_expression, created=created, after=after,
                             now=now, timezone=schedule.schedule_expression_timezone,
                             start=start, end=end)
        except (UnsupportedExpression, ValueError, TypeError) as e:
            self._report_unsupported(schedule, "expression", str(e))
            return
        if due is None:
            return
        self._last[arn] = due
        if (schedule.state or "ENABLED") != "ENABLED":
            return  # due while disabled: skipped, not caught up later
        self._fire(schedule, due)
        more = next_firing(schedule.schedule_expression, created=created, after=due,
                           timezone=schedule.schedule_expression_timezone,
                           start=start, end=end)
        if more is None and (schedule.action_after_completion or "NONE") == "DELETE":
            try:
                backend.delete_schedule(schedule.group_name, schedule.name)
                LOG.info("schedule %s/%s completed: deleted (ActionAfterCompletion DELETE)",
                         schedule.group_name, schedule.name)
            except Exception:  # noqa: BLE001 - already deleted by a client
                LOG.info("schedule %s/%s was already deleted", schedule.group_name,
                         schedule.name)

    def _report_unsupported(self, schedule: Any, what: str, reason: str) -> None:
        key = (schedule.arn, what)
        with self._lock:
            if key in self._reported:
                return
            self._reported.add(key)
            self.unsupported.append({"schedule": schedule.name, "group": schedule.group_name,
                                     "schedule_arn": schedule.arn, "what": what,
                                     "reason": reason})
        LOG.warning("schedule %s/%s is not emulated (%s): %s", schedule.group_name,
                    schedule.name, what, reason)

    # -- firing -------------------------------------------------------------------------------

    def _fire(self, schedule: Any, scheduled: dt.datetime) -> None:
        target = dict(schedule.target or {})
        execution_id = str(uuid.uuid4())
        record: dict[str, Any] = {
            "schedule": schedule.name, "group": schedule.group_name,
            "schedule_arn": schedule.arn, "scheduled_time": iso_utc(scheduled),
            "execution_id": execution_id, "target": target.get("Arn"),
            "execution_arn": None, "error": None}
        try:
            record["execution_arn"] = self._invoke(schedule, target, scheduled, execution_id)
            LOG.info("schedule %s/%s fired (%s): %s", schedule.group_name, schedule.name,
                     record["scheduled_time"], record["execution_arn"])
        except _FiringFailed as e:
            record["error"] = str(e)
            LOG.warning("schedule %s/%s could not invoke its target at %s: %s",
                        schedule.group_name, schedule.name, record["scheduled_time"], e)
        except Exception as e:  # noqa: BLE001 - recorded, never a crash of the poller
            record["error"] = f"{type(e).__name__}: {e}"
            LOG.error("schedule %s/%s failed to fire:\n%s", schedule.group_name, schedule.name,
                      traceback.format_exc())
        with self._lock:
            self.firings.append(record)

    def _invoke(self, schedule: Any, target: dict[str, Any], scheduled: dt.datetime,
                execution_id: str) -> str:
        from botocore.exceptions import ClientError

        target_arn = target.get("Arn") or ""
        m = _STATE_MACHINE.match(target_arn)
        if not m:
            reason = (f"target {target_arn!r} is not emulated (only Step Functions state "
                      "machines are)")
            self._report_unsupported(schedule, "target", reason)
            raise _FiringFailed(f"unsupported target: {reason}")
        region = m.group(1)
        credentials = self._assume(target.get("RoleArn") or "", region)
        text = target.get("Input")
        text = "{}" if text is None else str(text)
        text = substitute_context(text, schedule_arn=schedule.arn, scheduled_time=scheduled,
                                  execution_id=execution_id)
        sfn = self._emulator.client("stepfunctions", region_name=region, **credentials)
        try:
            # named by the firing's execution id: moto would name an unnamed one "None"
            return sfn.start_execution(stateMachineArn=target_arn, name=execution_id,
                                       input=text)["executionArn"]
        except ClientError as e:
            err = e.response.get("Error", {})
            raise _FiringFailed(f"StartExecution failed: {err.get('Code')}: "
                                f"{err.get('Message')}") from e

    def _assume(self, role_arn: str, region: str) -> dict[str, str]:
        """The role's keys (its account's, on the emulator), after checking it exists."""
        from botocore.exceptions import ClientError

        if not re.match(r"^arn:[\w-]+:iam::\d{12}:role/.+", role_arn):
            raise _FiringFailed(f"the target's RoleArn {role_arn!r} is not an IAM role ARN: "
                                "EventBridge Scheduler could not assume it")
        try:
            sts = self._emulator.client("sts", region_name=region)
            creds = sts.assume_role(RoleArn=role_arn,
                                    RoleSessionName="mlharness-scheduler")["Credentials"]
            keys = {"aws_access_key_id": creds["AccessKeyId"],
                    "aws_secret_access_key": creds["SecretAccessKey"],
                    "aws_session_token": creds["SessionToken"]}
            iam = self._emulator.client("iam", region_name=region, **keys)
            iam.get_role(RoleName=role_arn.rsplit("/", 1)[-1])
        except ClientError as e:
            raise _FiringFailed(f"the target's role {role_arn} does not exist in IAM "
                                f"({e.response.get('Error', {}).get('Code')}): EventBridge "
                                "Scheduler could not assume it") from e
        return keys


class _FiringFailed(RuntimeError):
    """A firing that failed for a reason to record (not a bug of the bridge)."""
