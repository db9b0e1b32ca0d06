"""Cloud ``upload``: each ``file://`` source uploaded under ``<OutputUri>/<name>/`` (a file
keeps its name), ``s3://`` sources used where they are (``harness.steps.upload``). An
existing S3 output is never overwritten."""
from __future__ import annotations

from typing import Any

from cloud_runners import aws, s3_staging
from harness import uris
from harness.errors import DataError
from harness.stages import StageContext


class CloudUploadRunner(aws.CloudStageRunner):
    kind = "upload"

    def run(self, request: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        s3 = self.client(ctx, "s3")
        out: dict[str, str] = {}
        for name, uri in request["Sources"].items():
            if uri.startswith("s3://"):
                out[name] = uri
                continue
            path = uris.local_path(uri)
            if not path.exists():
                raise DataError(f"source {name!r} not found", file=uri,
                                expected="an existing file or folder")
            target = uris.join(request["OutputUri"], name)
            if aws.prefix_exists(s3, target):
                raise DataError("the upload's destination already exists in S3; refusing to "
                                "overwrite it", file=target,
                                hint="earlier runs are never modified")
            dest = uris.join(target, path.name) if path.is_file() else target
            items = [(path, dest)] if path.is_file() else [
                (f, uris.join(dest, f.relative_to(path).as_posix()))
                for f in s3_staging.files(path)]
            with ctx.progress.task(f"upload {name} to S3", total=len(items)) as task:
                for item, uri in items:
                    aws.upload_file(s3, item, uri)
                    task.advance(1)
            ctx.log.info("uploaded %s (%s) to %s", name, uri, dest)
            out[name] = dest
        return {"Uris": out}
