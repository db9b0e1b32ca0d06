"""boto3 plumbing: the session, clients (``cloud.endpoint_url`` reaches every one), tags,
JSON-able responses, S3 transfers."""
import datetime as dt

import pytest
from cloud_support import REGION, training_only

from cloud_runners import aws as aws_mod
from cloud_runners.preflight import preflight
from cloud_runners.stack import bootstrap
from cloud_runners.teardown import teardown
from harness.errors import ConfigError, HarnessError


def test_session_client_and_tags(cfg, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    cfg.cloud.stack_name = "mlh-test"
    s = aws_mod.session_for(cfg)
    assert s.region_name == REGION == aws_mod.region(cfg, s)
    assert aws_mod.client(s, "s3", cfg).meta.endpoint_url == "https://s3.amazonaws.com"
    cfg.cloud.endpoint_url = "http://127.0.0.1:5000"
    assert aws_mod.client(s, "glue", cfg).meta.endpoint_url == "http://127.0.0.1:5000"
    assert aws_mod.tags(cfg, "r9") == [{"Key": "mlharness:project", "Value": "mlh-test"},
                                       {"Key": "mlharness:run", "Value": "r9"}]
    assert aws_mod.glue_tags(cfg, "r9") == {"mlharness:project": "mlh-test",
                                            "mlharness:run": "r9"}
    assert aws_mod.sfn_tags(cfg, "r9")[0] == {"key": "mlharness:project", "value": "mlh-test"}
    assert aws_mod.state_machine_name(cfg, "mnist") == "mlh-test-mnist"


def test_unknown_profile_names_the_field(no_aws, cfg):
    cfg.cloud.profile = "no-such-profile"
    with pytest.raises(ConfigError) as exc:
        aws_mod.session_for(cfg)
    assert exc.value.field == "cloud.profile"


class RecordingSession:
    """A session that records the endpoint of every client it makes, then hands the
    client to moto without it (moto's in-process mock answers the default endpoints)."""

    def __init__(self, session):
        self._session = session
        self.clients: list[tuple[str, str | None]] = []

    def client(self, service, **kw):
        self.clients.append((service, kw.pop("endpoint_url", None)))
        return self._session.client(service, **kw)

    def __getattr__(self, name):
        return getattr(self._session, name)


def test_endpoint_url_reaches_every_client(aws, cfg, wf):
    cfg.cloud.endpoint_url = "http://127.0.0.1:4566"
    session = RecordingSession(aws)
    bootstrap(cfg, session, wf)
    preflight(cfg, session, wf)
    teardown(cfg, session, wf)
    services = {s for s, _ in session.clients}
    assert {"sts", "cloudformation", "s3", "iam", "glue", "stepfunctions",
            "sagemaker"} <= services
    assert {url for _, url in session.clients} == {"http://127.0.0.1:4566"}


def test_jsonable_turns_datetimes_into_iso_strings():
    t = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    out = aws_mod.jsonable({"A": [t], "ResponseMetadata": {}, "B": {"C": t, "D": b"x"}})
    assert out == {"A": ["2026-01-02T03:04:05+00:00"],
                   "B": {"C": "2026-01-02T03:04:05+00:00", "D": "x"}}


def test_s3_transfers(aws, cfg, tmp_path):
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="bkt-x")
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "one.txt").write_text("1")
    (src / "two.txt").write_text("2")
    assert aws_mod.upload_dir(s3, src, "s3://bkt-x/p/x") == ["s3://bkt-x/p/x/a/one.txt",
                                                         "s3://bkt-x/p/x/two.txt"]
    assert aws_mod.prefix_exists(s3, "s3://bkt-x/p/x")
    assert not aws_mod.prefix_exists(s3, "s3://bkt-x/p/y")
    assert sorted(aws_mod.list_keys(s3, "s3://bkt-x/p")) == ["p/x/a/one.txt", "p/x/two.txt"]
    back = aws_mod.download_prefix(s3, "s3://bkt-x/p/x", tmp_path / "back")
    assert (back / "a" / "one.txt").read_text() == "1"
    with pytest.raises(HarnessError, match="object not found"):
        aws_mod.download_file(s3, "s3://bkt-x/p/nothing", tmp_path / "n")
    with pytest.raises(HarnessError, match="no data under this S3 prefix"):
        aws_mod.download_prefix(s3, "s3://bkt-x/q", tmp_path / "q")
    with pytest.raises(HarnessError, match="expected an s3:// URI"):
        aws_mod.split_s3("file:///tmp/x")


def test_poll_until_done_and_timeout():
    answers = iter([{"S": "InProgress"}, {"S": "InProgress"}, {"S": "Completed"}])
    seen = []
    out = aws_mod.poll(lambda: next(answers), lambda a: a["S"] == "Completed", 0.001,
                       seen.append)
    assert out == {"S": "Completed"} and len(seen) == 3
    with pytest.raises(HarnessError, match="job did not finish"):
        aws_mod.poll(lambda: {"S": "InProgress"}, lambda a: False, 0.001, timeout=0.01,
                     what="job")


def test_a_workflow_of_ones_own_uses_the_same_clients(aws, cfg):
    # bootstrap and teardown of another pipeline go through the same plumbing
    wf = training_only()
    session = RecordingSession(aws)
    cfg.cloud.endpoint_url = "http://127.0.0.1:4566"
    bootstrap(cfg, session, wf)
    teardown(cfg, session, wf)
    assert {url for _, url in session.clients} == {"http://127.0.0.1:4566"}
