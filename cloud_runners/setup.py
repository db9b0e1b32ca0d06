"""What the cloud backend does before a run's first step (the counterpart of
harness.local_setup.LocalSetup): S3 layout, code upload, Glue job body, images, role."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import boto3

from cloud_runners.aws import session_for, upload_code
from harness.config import PipelineConfig
from harness.requests import Layout


class CloudSetup:
    """What the cloud backend does before a run's first step (see harness.local_setup).

    The run's data and code live under ``s3://<bucket>/<cloud.prefix>/<run_id>/``; the
    code is uploaded there; the Glue job is registered with the stack's Glue role; the
    requests name the SageMaker TensorFlow images (looked up lazily, on first use) and
    the stack's SageMaker role. The run record itself stays on disk (``runs/<run_id>/``).
    ``outputs`` (the stack's outputs) and ``session`` are injectable for tests.
    """

    def __init__(self, cfg: PipelineConfig, *, session: boto3.session.Session | None = None,
                 outputs: dict[str, str] | None = None):
        self.cfg = cfg
        self._session = session
        self._outputs = outputs
        self._images: dict[str, str] | None = None

    def check(self) -> None:
        """Credentials and the stack, before the run creates anything (also its record)."""
        from cloud_runners.preflight import require_credentials
        require_credentials(self.cfg, self.session)
        self.outputs  # noqa: B018  (raises StackMissing: run `harness cloud bootstrap`)

    @property
    def session(self) -> boto3.session.Session:
        if self._session is None:
            self._session = session_for(self.cfg)
        return self._session

    @property
    def outputs(self) -> dict[str, str]:
        """BucketName, StepFunctionsRoleArn, GlueRoleArn, SageMakerRoleArn of the stack."""
        if self._outputs is None:
            from cloud_runners.infrastructure import stack_outputs
            self._outputs = stack_outputs(self.cfg, self.session)
        return self._outputs

    @property
    def images(self) -> dict[str, str]:
        if self._images is None:
            from cloud_runners.images import images_for
            self._images = images_for(self.cfg)
        return self._images

    @property
    def role(self) -> str:
        return self.outputs["SageMakerRoleArn"]

    @property
    def bucket(self) -> str:
        return self.cfg.cloud.bucket or self.outputs["BucketName"]

    def run_prefix(self, run_id: str) -> str:
        """The run's key prefix (the execution input's ``Prefix``)."""
        return f"{self.cfg.cloud.prefix.strip('/')}/{run_id}"

    def layout(self, run_id: str, run_dir: Path | None = None) -> Layout:
        return Layout(f"s3://{self.bucket}/{self.run_prefix(run_id)}")

    def stage_code(self, layout: Layout) -> dict[str, dict[str, Any]]:
        with tempfile.TemporaryDirectory(prefix="mlharness-code-") as tmp:
            return upload_code(self.cfg, self.session, layout, self.outputs["GlueRoleArn"], tmp)
