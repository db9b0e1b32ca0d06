"""Preflight: no credentials -> exit 2 and nothing created; no stack -> bootstrap first;
after bootstrap -> what the run creates and costs, without ever showing a secret."""
import io
import json

import pytest
from rich.console import Console
from support import moto_session

from cloud_runners import aws as aws_mod
from cloud_runners import infrastructure as infra
from cloud_runners import preflight as pf
from harness.config import PipelineConfig
from harness.errors import ConfigError

boto3 = pytest.importorskip("boto3")
moto = pytest.importorskip("moto")

REGION = "us-east-1"
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYzzSECRETzz"


def _console():
    return Console(file=io.StringIO(), width=200, color_system=None)


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    """An environment with no AWS credentials anywhere, and no API call allowed."""
    import os

    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    empty_creds = tmp_path / "credentials"
    empty_config = tmp_path / "config"
    empty_creds.write_text("")
    empty_config.write_text("")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty_creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty_config))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata probe
    calls = []

    def no_call(self, operation, params):
        calls.append(operation)
        raise AssertionError(f"AWS called: {operation}")

    monkeypatch.setattr("botocore.client.BaseClient._make_api_call", no_call)
    return calls


def test_no_credentials_exit_2_nothing_created(no_credentials):
    cfg = PipelineConfig()
    session = aws_mod.session_for(cfg)
    with pytest.raises(pf.NoCredentials) as exc:
        pf.preflight(cfg, session)
    assert exc.value.exit_code == 2
    assert pf.NO_CREDENTIALS_MESSAGE in exc.value.message
    assert "nothing was created" in exc.value.message
    with pytest.raises(pf.NoCredentials):
        infra.bootstrap(cfg, session)
    with pytest.raises(pf.NoCredentials):
        infra.teardown(cfg, session)
    assert no_credentials == []


@pytest.mark.parametrize("command", ["preflight", "bootstrap", "teardown"])
def test_cli_without_credentials_prints_message_and_returns_2(no_credentials, command):
    fn = {"preflight": pf.cli_preflight, "bootstrap": infra.cli_bootstrap,
          "teardown": infra.cli_teardown}[command]
    console = _console()
    assert fn(PipelineConfig(), console) == 2
    out = " ".join(console.file.getvalue().split())
    assert "no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" \
        in out
    assert no_credentials == []


def test_unknown_profile_names_the_field(no_credentials):
    cfg = PipelineConfig()
    cfg.cloud.profile = "no-such-profile"
    with pytest.raises(ConfigError, match="cloud.profile"):
        aws_mod.session_for(cfg)


@pytest.fixture
def aws(monkeypatch):
    # Explicit keys with a recognisable secret: it must never be printed.
    with moto_session(monkeypatch, REGION, aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
                      aws_secret_access_key=SECRET) as session:
        yield session


def test_no_stack_says_bootstrap_first(aws):
    with pytest.raises(pf.NotBootstrapped) as exc:
        pf.preflight(PipelineConfig(), aws)
    assert "run `harness cloud bootstrap` first" in exc.value.message
    assert "mlharness" in exc.value.message
    # Preflight created nothing.
    assert aws.client("s3").list_buckets()["Buckets"] == []
    assert aws.client("cloudformation").describe_stacks()["Stacks"] == []


def test_invalid_region(aws):
    cfg = PipelineConfig()
    cfg.cloud.region = "mars-north-1"
    session = boto3.session.Session(aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
                                    aws_secret_access_key=SECRET, region_name="mars-north-1")
    with pytest.raises(ConfigError, match="cloud.region") as exc:
        pf.check_region(cfg, session)
    assert "eu-west-1" in exc.value.message


def test_report_after_bootstrap(aws):
    cfg = PipelineConfig()
    outputs = infra.bootstrap(cfg, aws)
    report = pf.preflight(cfg, aws, run_id="20250101-120000-beef")
    assert report.account == "123456789012"
    assert report.bucket == outputs["BucketName"]
    assert report.roles == {k: outputs[k] for k in infra.ROLE_OUTPUTS}
    creates = dict(report.creates)
    assert creates["training job"].startswith("mnist-train-20250101-120000-beef")
    assert creates["model"] == "mnist-20250101-120000-beef"
    assert creates["endpoint config"] == "mnist-config-20250101-120000-beef"
    assert creates["endpoint"].startswith("mnist-endpoint-20250101-120000-beef")
    assert creates["S3 prefix"] == (f"s3://{outputs['BucketName']}/mlharness/runs/"
                                    "20250101-120000-beef/")
    assert creates["Glue job run"] == "of mnist-etl"
    assert report.cost is not None and report.cost.run_total > 0
    text = report.text()
    assert "estimated cost" in text and "per hour until `harness cloud teardown`" in text
    for blob in (text, json.dumps(report.to_dict())):
        assert SECRET not in blob
        assert SECRET[:12] not in blob


def test_cli_preflight_after_bootstrap_never_prints_secret(aws, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    cfg = PipelineConfig()
    infra.bootstrap(cfg, aws)
    console = _console()
    assert pf.cli_preflight(cfg, console) == 0
    out = console.file.getvalue()
    assert "preflight ok" in out and "will create" in out and "one run" in out
    assert SECRET not in out and SECRET[:12] not in out
