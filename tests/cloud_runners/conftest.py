"""Fixtures of the cloud runner tests: the default workflow, moto's in-process AWS, and an
environment with no AWS at all. Nothing here talks to real AWS or to the network."""
from __future__ import annotations

import os

import pytest
from cloud_support import REGION, workflow
from support import moto_session


@pytest.fixture(scope="session", autouse=True)
def image_cache(tmp_path_factory):
    """The image-URI cache of this test session, out of the home directory."""
    from cloud_runners import images

    path = tmp_path_factory.mktemp("cache") / "image_uris.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(images, "IMAGE_CACHE", path)
        yield path


@pytest.fixture
def cfg(tmp_path):
    """pipeline.yaml's configuration, run records in the test's folder."""
    from harness.config import load_config

    return load_config(overrides={"runs_dir": str(tmp_path / "runs")})


@pytest.fixture
def wf(cfg):
    """The MNIST pipeline, built from ``cfg``."""
    return workflow(cfg)


@pytest.fixture
def aws(monkeypatch):
    """A boto3 session on moto's in-process mock (fake keys)."""
    with moto_session(monkeypatch, REGION) as session:
        yield session


@pytest.fixture
def no_aws(monkeypatch, tmp_path):
    """No AWS credentials anywhere, a dead endpoint, and any AWS API call fails the test;
    returns the operations that were attempted (must stay empty)."""
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    empty = tmp_path / "empty-aws-file"
    empty.write_text("")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata probe
    calls: list[str] = []

    def no_call(self, operation, params):
        calls.append(operation)
        raise AssertionError(f"AWS called: {operation}")

    monkeypatch.setattr("botocore.client.BaseClient._make_api_call", no_call)
    return calls
