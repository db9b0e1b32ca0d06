"""What a cloud run's report shows lives in S3: before the report is written, the few
small files it draws are copied into the run folder, at ``uris.mirror_path`` (``runs/<id>/
artifacts/s3/<bucket>/<key>``), where the report looks for an ``s3://`` URI:

- each training step's ``output.tar.gz`` (beside its ``model.tar.gz``; it holds the
  script's ``metrics.json``: the loss and accuracy per epoch);
- each processing step's output folders that hold an ``evaluation.json`` (the metrics,
  the confusion matrix and the misclassified digits).

Only files the report reads, each at most ``MAX_BYTES``; the model itself is never
downloaded. A missing object is skipped; any other failure is reported by the caller
(``fetch_report_artifacts_safely``) and never changes the run."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from botocore.exceptions import ClientError

from cloud_runners import aws
from harness import uris

MAX_BYTES = 20 * 1024 * 1024
EVALUATION_FILES = ("evaluation.json", "confusion_matrix.png", "misclassified.png")


def _step_outputs(run_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """(kind, output) of each step the record names, read from its output.json."""
    try:
        record = json.loads((run_dir / "record.json").read_text())
    except (OSError, ValueError):
        return []
    found = []
    for step in record.get("steps") or []:
        rel = step.get("output") if isinstance(step, dict) else None
        if not isinstance(rel, str) or not rel:
            continue
        path = (run_dir / rel).resolve()
        if not path.is_relative_to(run_dir.resolve()):
            continue
        try:
            output = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(output, dict):
            found.append((step.get("kind"), output))
    return found


def wanted(run_dir: Path) -> list[str]:
    """The S3 URIs of the files the report of this run reads (objects or, ending in
    '/', folders whose evaluation files are wanted)."""
    out = []
    for kind, output in _step_outputs(run_dir):
        if kind == "training":
            model = (output.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
            if isinstance(model, str) and model.startswith("s3://") \
                    and model.endswith("/model.tar.gz"):
                out.append(model[: -len("model.tar.gz")] + "output.tar.gz")
        outputs = (output.get("ProcessingOutputConfig") or {}).get("Outputs")
        for o in outputs if isinstance(outputs, list) else []:
            uri = (o.get("S3Output") or {}).get("S3Uri") if isinstance(o, dict) else None
            if isinstance(uri, str) and uri.startswith("s3://"):
                out.append(uri.rstrip("/") + "/")
    return list(dict.fromkeys(out))


def _fetch(s3: Any, uri: str, dest: Path) -> bool:
    bucket, key = aws.split_s3(uri)
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as e:  # a missing object is skipped, not an error
        if aws.error_code(e) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    if head.get("ContentLength", 0) > MAX_BYTES:
        return False
    tmp = dest.with_name(f".tmp-{dest.name}")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        s3.download_file(bucket, key, str(tmp))
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return True


def fetch_report_artifacts(s3: Any, run_dir: Path) -> list[str]:
    """Copy the files the report reads into the run folder; the URIs copied."""
    fetched = []
    for uri in wanted(run_dir):
        targets = [uris.join(uri, name) for name in EVALUATION_FILES] \
            if uri.endswith("/") else [uri]
        for target in targets:
            dest = uris.mirror_path(run_dir, target)
            if dest is not None and _fetch(s3, target, dest):
                fetched.append(target)
    return fetched


def fetch_report_artifacts_safely(s3: Any, run_dir: Path,
                                  say: Callable[[str], None] = print) -> list[str]:
    """``fetch_report_artifacts``; a failure is said in one line and never raised."""
    try:
        fetched = fetch_report_artifacts(s3, run_dir)
    except Exception as e:  # noqa: BLE001 -- the report then lists what is missing
        say(f"the report's files could not be copied from S3 ({type(e).__name__}: {e}); "
            "the report lists what is missing")
        return []
    if fetched:
        say(f"report: {len(fetched)} files copied from S3 into "
            f"{run_dir / uris.MIRROR}")
    return fetched
