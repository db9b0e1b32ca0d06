"""What a backend does before a run's first step, behind one interface.

``LocalSetup`` (``harness.local_setup``) and ``CloudSetup`` (``cloud_runners.setup``; the
emulator uses it too, pointed at the emulator) answer the same questions: where a run's
data lives (``base_uri``), how the code the steps run gets there (``stage_code``), which
container images and roles the requests name, what must exist before the steps run
(``create``: e.g. the Glue job a StartJobRun names), and whether the backend is ready
(``check``: credentials, the stack).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from harness.steps.base import CodeAsset, ImageSource, SetupRequest


class BackendSetup(ABC):
    backend: str = ""

    @abstractmethod
    def check(self) -> None:
        """Before anything is created (also the run record): raise HarnessError if the
        backend cannot run."""

    @property
    @abstractmethod
    def images(self) -> ImageSource:
        """Container images by framework, version and scope."""

    @property
    def role(self) -> str | None:
        """The SageMaker execution role the requests name (None locally)."""
        return None

    @property
    def roles(self) -> dict[str, str]:
        """Other service roles by service (``{"glue": arn}``)."""
        return {}

    @abstractmethod
    def base_uri(self, run_id: str, run_dir: Path | None = None) -> str:
        """The run's storage location (``BaseUri`` of the state document)."""

    @abstractmethod
    def stage_code(self, assets: list[CodeAsset], base_uri: str) -> dict[str, str]:
        """Put every code asset under ``<base_uri>/code/``; ``{asset.target: URI}``."""

    @abstractmethod
    def create(self, requests: list[SetupRequest], run_id: str) -> dict[str, dict[str, Any]]:
        """Create what must exist before the steps run; the registry the local runners
        read (``{"glue:job": {name: CreateJob body}}``)."""
