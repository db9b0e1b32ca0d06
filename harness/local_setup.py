"""What the local backend does before a run's first step (the cloud backend's bootstrap
and upload, on disk): where the run's data lives, the code put where the jobs read it,
the Glue job registered, the "images" named in the requests.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from harness import uris
from harness.archives import pack_source_dir
from harness.config import PROJECT_ROOT, PipelineConfig
from harness.requests import Layout, glue_job_definition


class LocalSetup:
    """Runs live in ``runs/<run_id>/``; the code is packed there as the cloud upload does."""

    # Locally the "image" is the in-process trainer and the embedded server.
    images = {"training": "local/tensorflow-training:2.19-cpu (in-process)",
              "serving": "local/tensorflow-serving:2.19 (embedded server)"}
    role: str | None = None

    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg

    def check(self) -> None:
        """Before anything is created: nothing to check locally (the cloud checks
        credentials and the stack here)."""

    def layout(self, run_id: str, run_dir: Path) -> Layout:
        return Layout(uris.file_uri(run_dir))

    def stage_code(self, layout: Layout) -> dict[str, dict[str, Any]]:
        """Pack ``model/`` as sourcedir.tar.gz and copy the Glue script; register the job."""
        cfg = self.cfg
        pack_source_dir(PROJECT_ROOT / cfg.train.source_dir, uris.local_path(layout.sourcedir))
        script_dst = uris.local_path(layout.glue_script(cfg))
        script_dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PROJECT_ROOT / cfg.etl.script, script_dst)
        return {cfg.etl.job_name: glue_job_definition(cfg, layout)}
