"""The cloud backend's setup (see harness.setup.BackendSetup); the emulator uses it too,
pointed at the emulator.

The run's data and code live under ``s3://<bucket>/<cloud.prefix>/<run_id>/``; the code
the steps run is uploaded there; the Glue jobs the steps name are created or updated
with the stack's Glue role; the requests name the SageMaker framework images (looked up
lazily, on first use) and the stack's SageMaker role. The run record itself stays on
disk (``runs/<run_id>/``). ``outputs`` (the stack's outputs) and ``session`` are
injectable for tests.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import boto3

from cloud_runners import aws
from harness import uris
from harness.archives import pack_source_dir
from harness.config import PipelineConfig
from harness.errors import ConfigError
from harness.setup import BackendSetup
from harness.steps.base import CodeAsset, SetupRequest


class CloudImages:
    """The SageMaker framework images (sagemaker-core's ``image_uris``, cached)."""

    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg

    def image(self, framework: str, version: str, scope: str, instance_type: str,
              py_version: str | None = None) -> str:
        from cloud_runners.images import image_uri
        return image_uri(self.cfg.cloud.region, framework, version, scope, instance_type,
                         py_version)


class CloudSetup(BackendSetup):
    backend = "cloud"

    def __init__(self, cfg: PipelineConfig, *, session: boto3.session.Session | None = None,
                 outputs: dict[str, str] | None = None):
        self.cfg = cfg
        self._session = session
        self._outputs = outputs
        self._images = CloudImages(cfg)
        self.code_uri: str | None = None  # where stage_code put (or found) the code
        self.code_skipped: str | None = None  # what stage_code did not upload, and why

    def check(self) -> None:
        """Credentials and the stack, before the run creates anything (also its record)."""
        from cloud_runners.credentials import require_credentials
        require_credentials(self.cfg, self.session)
        self.outputs  # noqa: B018  (raises StackMissing: run `harness cloud bootstrap`)

    @property
    def session(self) -> boto3.session.Session:
        if self._session is None:
            self._session = aws.session_for(self.cfg)
        return self._session

    @property
    def outputs(self) -> dict[str, str]:
        """BucketName, StepFunctionsRoleArn, GlueRoleArn, SageMakerRoleArn of the stack."""
        if self._outputs is None:
            from cloud_runners.stack import stack_outputs
            self._outputs = stack_outputs(self.cfg, self.session)
        return self._outputs

    @property
    def images(self) -> CloudImages:
        return self._images

    @property
    def role(self) -> str:
        return self.outputs["SageMakerRoleArn"]

    @property
    def roles(self) -> dict[str, str]:
        return {"glue": self.outputs["GlueRoleArn"], "sagemaker": self.role,
                "stepfunctions": self.outputs["StepFunctionsRoleArn"]}

    @property
    def bucket(self) -> str:
        return self.cfg.cloud.bucket or self.outputs["BucketName"]

    def run_prefix(self, run_id: str) -> str:
        """The run's key prefix (the execution input's ``Prefix``)."""
        return f"{self.cfg.cloud.prefix.strip('/')}/{run_id}"

    def base_uri(self, run_id: str, run_dir: Path | None = None) -> str:
        return f"s3://{self.bucket}/{self.run_prefix(run_id)}"

    def stage_code(self, assets: list[CodeAsset], base_uri: str, *,
                   reuse: bool = False) -> dict[str, str]:
        """Upload every code asset under ``<base_uri>/code/`` (a folder asset file by file,
        a ``tar`` asset packed as sourcedir.tar.gz first). With ``reuse`` (and the cache
        on), code with the same content as an earlier run's upload is not uploaded: the
        URIs are that upload's (``cloud_runners.upload_reuse``). ``code_uri`` is then where
        the code is, ``code_skipped`` says what was not uploaded."""
        from cloud_runners.upload_reuse import index_for, relative_files, skipped_message

        s3 = aws.client(self.session, "s3", self.cfg)
        code_uri = uris.join(base_uri, "code")
        with tempfile.TemporaryDirectory(prefix="mlharness-code-") as tmp:
            root = Path(tmp) / "code"
            for asset in assets:
                staged = root / asset.target
                staged.parent.mkdir(parents=True, exist_ok=True)
                if asset.pack == "tar":
                    pack_source_dir(asset.source, staged)  # deterministic bytes
                elif asset.pack == "dir":
                    from harness.local_setup import copy_tree
                    copy_tree(asset.source, staged)
                else:
                    shutil.copyfile(asset.source, staged)
            files = relative_files(root) if root.exists() else []
            index = index_for(s3, code_uri, self.cfg)
            index.enabled = index.enabled and reuse and bool(files)
            digest, earlier = index.find("code", files)
            self.code_skipped = None
            if earlier:
                code_uri = earlier["uri"]
                self.code_skipped = skipped_message("code", earlier, files)
            else:
                for rel, path in files:
                    aws.upload_file(s3, path, uris.join(code_uri, rel))
                if reuse and files:
                    index.remember("code", digest, code_uri, files, code_uri.split("/")[-2])
        self.code_uri = code_uri
        return {asset.target: uris.join(code_uri, asset.target) for asset in assets}

    def create(self, requests: list[SetupRequest], run_id: str) -> dict[str, dict[str, Any]]:
        """Create or update what the steps name (the Glue jobs); the registry of bodies."""
        from cloud_runners.etl import upsert_glue_job

        registry: dict[str, dict[str, Any]] = {}
        for r in requests:
            if (r.service, r.action) != ("glue", "CreateJob"):
                raise ConfigError(f"the cloud backend cannot create {r.service}:{r.action}",
                                  field=r.name, expected="glue:CreateJob")
            action = upsert_glue_job(aws.client(self.session, "glue", self.cfg), r.body,
                                     aws.glue_tags(self.cfg, run_id), step="setup")
            registry.setdefault(f"{r.service}:{r.action}", {})[r.name] = {**r.body,
                                                                        "_action": action}
        return registry
