"""``PrepareDataStep``: obtain an image dataset in IDX format (MNIST's) and split it.

Runs on the client (``BEFORE`` the state machine): locally it writes the raw
train/validation/test Parquet under ``output_uri``; on the cloud backends the same
runner's output is uploaded to S3 (``cloud_runners.prepare``). Its output (the shape
of the data, the counts) reaches later steps as ``step.output()["ImageHeight"]`` etc.:
in the cloud through the execution input.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.steps.base import BEFORE, BuildContext, Step


class PrepareDataStep(Step):
    kind = "prepare"
    title = "obtain the dataset and split it"
    placement = BEFORE
    local_runner = "local_runners.prepare:LocalPrepareRunner"
    cacheable = True
    cloud_runner = "cloud_runners.prepare:CloudPrepareRunner"

    def __init__(self, state_id: str, *, output_uri: str, source: str = "auto",
                 seed: int = 42, validation_fraction: float = 0.1,
                 test_fraction: float = 0.1, cache_dir: str = "~/.cache/mlharness/mnist",
                 mirrors: list[str] | None = None, download_timeout_s: float = 10.0,
                 min_test_per_class: int = 10, label_column: str | None = None,
                 comment: str | None = None):
        super().__init__(state_id, comment=comment)
        self.output_uri = output_uri
        self.source = source
        self.seed = seed
        self.validation_fraction = validation_fraction
        self.test_fraction = test_fraction
        self.cache_dir = cache_dir
        self.mirrors = list(mirrors or [])
        self.download_timeout_s = download_timeout_s
        # a gate on a handful of test images says nothing: each class needs this many
        self.min_test_per_class = min_test_per_class
        # a table source's label column (None: ``label`` in Parquet, the first CSV column)
        self.label_column = label_column

    def request(self, ctx: BuildContext) -> dict[str, Any]:
        return {
            "Source": self.source,
            "CacheDir": self.cache_dir,
            "Mirrors": self.mirrors,
            "DownloadTimeoutSeconds": self.download_timeout_s,
            "Seed": self.seed,
            "ValidationFraction": self.validation_fraction,
            "TestFraction": self.test_fraction,
            "MinTestPerClass": self.min_test_per_class,
            "OutputUri": self.output_uri,
            **({"LabelColumn": self.label_column} if self.label_column else {}),
        }

    def cache_inputs(self, request: dict[str, Any]) -> list[Any] | None:
        """The files read: the bundled sample, the directory, or the download cache (when
        it holds files; else the run may download, and is not cached). An ``s3://``
        source is not cached here: its objects may change; the prepare runner keeps its
        own copy, checked by ETag (``local_runners.prepare_s3``)."""
        from harness import uris
        from harness.config import PROJECT_ROOT

        source = str(request.get("Source", "auto"))
        if source == "fixture":
            return [PROJECT_ROOT / "fixtures" / "mnist-sample"]
        if source.startswith("s3://"):
            return None
        if source not in ("auto", "download"):
            return [uris.local_path(source) if "://" in source else Path(source).expanduser()]
        cache = Path(str(request.get("CacheDir", ""))).expanduser()
        return [cache] if cache.is_dir() and any(cache.iterdir()) else None

    def facts(self, output: dict[str, Any]) -> dict[str, Any]:
        facts = {"data source": f"{output.get('Source')} ({output.get('SourceLocation')})",
                 "examples": ", ".join(f"{k} {v}" for k, v in
                                       (output.get("Counts") or {}).items()),
                 "raw data": output.get("RawUri")}
        if output.get("UploadSkipped"):  # the cloud runner reused an earlier upload
            facts["upload skipped"] = output["UploadSkipped"]
        return facts

    def creates(self, request: dict[str, Any]) -> list[tuple[str, str]]:
        return [("S3 objects", f"raw splits under {request['OutputUri']}")]
