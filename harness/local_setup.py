"""The local backend's setup (see harness.setup.BackendSetup): runs live in
``runs/<run_id>/``, the code is copied there as the cloud uploads it, the Glue jobs are
registered for the local Spark runner, the "images" are the in-process runners."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from harness import uris
from harness.archives import EXCLUDED_DIRS, pack_source_dir
from harness.config import PipelineConfig
from harness.errors import ConfigError
from harness.setup import BackendSetup
from harness.steps.base import CodeAsset, SetupRequest


class LocalImages:
    """Locally the "image" is the in-process runner or the embedded server."""

    def image(self, framework: str, version: str, scope: str, instance_type: str,
              py_version: str | None = None) -> str:
        runs = {"training": "in-process", "inference": "local model server"}
        return f"local/{framework}-{scope}:{version} ({runs.get(scope, 'in-process')})"


def copy_tree(src: Path, dst: Path) -> None:
    """A folder's files (no caches, no hidden folders) copied to ``dst``."""
    ignore = shutil.ignore_patterns(*EXCLUDED_DIRS, "*.pyc", ".*")
    shutil.copytree(src, dst, ignore=ignore, dirs_exist_ok=False)


class LocalSetup(BackendSetup):
    backend = "local"

    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg
        self._images = LocalImages()

    def check(self) -> None:
        """Nothing to check locally (the cloud checks credentials and the stack here)."""

    @property
    def images(self) -> LocalImages:
        return self._images

    def base_uri(self, run_id: str, run_dir: Path | None = None) -> str:
        if run_dir is None:
            raise ConfigError("the local backend keeps a run in its run folder",
                              field="runs_dir")
        return uris.file_uri(run_dir)

    def stage_code(self, assets: list[CodeAsset], base_uri: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for asset in assets:
            uri = uris.join(base_uri, "code", asset.target)
            dst = uris.local_path(uri)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if asset.pack == "tar":
                pack_source_dir(asset.source, dst)
            elif asset.pack == "dir":
                copy_tree(asset.source, dst)
            else:
                shutil.copyfile(asset.source, dst)
            out[asset.target] = uri
        return out

    def create(self, requests: list[SetupRequest], run_id: str) -> dict[str, dict[str, Any]]:
        registry: dict[str, dict[str, Any]] = {}
        for r in requests:
            registry.setdefault(f"{r.service}:{r.action}", {})[r.name] = r.body
        return registry
