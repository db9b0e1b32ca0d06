"""Helpers of the hosting bridge tests: a tiny model archive, an endpoint created on the
emulator from it (with an optional DataCaptureConfig), and waiting for its status."""
from __future__ import annotations

import tarfile
import time
from pathlib import Path
from typing import Any

from support import save_tiny_model

ROLE = "arn:aws:iam::123456789012:role/mlharness-sagemaker"


def tiny_model_archive(root: Path, seed: int = 3) -> tuple[Path, Path]:
    """(model.tar.gz holding ``1/`` of a tiny SavedModel, that version folder)."""
    version_dir = save_tiny_model(root / "model", seed=seed)
    archive = root / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(version_dir, arcname="1")
    return archive, version_dir


def host(emu, name: str, model_data_url: str,
         data_capture: dict[str, Any] | None = None) -> None:
    """CreateModel, CreateEndpointConfig (one variant, AllTraffic) and CreateEndpoint."""
    sm = emu.client("sagemaker")
    sm.create_model(ModelName=f"{name}-model", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": "img-serve", "ModelDataUrl": model_data_url,
        "Environment": {"SAGEMAKER_TFS_DEFAULT_MODEL_NAME": "tiny"}})
    extra = {"DataCaptureConfig": data_capture} if data_capture is not None else {}
    sm.create_endpoint_config(EndpointConfigName=f"{name}-config", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": f"{name}-model",
        "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}], **extra)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")


def wait_for_endpoint(emu, name: str, timeout_s: float = 60) -> list[str]:
    """The statuses DescribeEndpoint reported until InService or Failed."""
    sm = emu.client("sagemaker")
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = sm.describe_endpoint(EndpointName=name)["EndpointStatus"]
        if not seen or seen[-1] != status:
            seen.append(status)
        if status in ("InService", "Failed"):
            return seen
        time.sleep(0.05)
    raise AssertionError(f"endpoint {name} still {seen[-1]} after {timeout_s} s")
